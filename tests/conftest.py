from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from mcp import Client

from emx_mcp.config import Settings
from emx_mcp.embedding import HashingEncoder
from emx_mcp.server import build_server
from emx_mcp.service import MemoryService


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--long", action="store_true", help="fuzz with 10,000 examples per tool instead of 300")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data")


@pytest.fixture
def encoder() -> HashingEncoder:
    return HashingEncoder(dim=64)


@pytest.fixture
def service(settings: Settings, encoder: HashingEncoder) -> Iterator[MemoryService]:
    svc = MemoryService(settings, encoder)
    svc.open()
    yield svc
    svc.close()


@pytest.fixture
async def client(service: MemoryService) -> AsyncIterator[Client]:
    async with Client(build_server(service)) as c:
        yield c
