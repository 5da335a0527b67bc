from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from mcp import Client

from emx_mcp.config import Settings
from emx_mcp.embedding import HashingEncoder
from emx_mcp.server import build_server
from emx_mcp.service import MemoryService
from emx_mcp.storage.embedded import EmbeddedStore


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
def store(settings: Settings) -> EmbeddedStore:
    """The store under the `service` fixture: tests look at its log and index through it."""
    return EmbeddedStore(settings)


@pytest.fixture
def service(settings: Settings, encoder: HashingEncoder, store: EmbeddedStore) -> Iterator[MemoryService]:
    svc = MemoryService(settings, encoder, store)
    svc.open()
    yield svc
    svc.close()


@pytest.fixture
async def client(service: MemoryService) -> AsyncIterator[Client]:
    async with Client(build_server(service)) as c:
        yield c
