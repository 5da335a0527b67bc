from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from mcp import Client

from emx_mcp.app import build_store
from emx_mcp.config import Settings
from emx_mcp.embedding import HashingEncoder
from emx_mcp.server import build_server
from emx_mcp.service import MemoryService
from emx_mcp.storage.embedded import EmbeddedStore
from tests.milvus_server import empty, milvus_lite


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--long", action="store_true", help="fuzz with 10,000 examples per tool instead of 300")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests marked `contract` run on both stores; `embedded_only` ones and all others on the embedded one."""
    if "store_kind" not in metafunc.fixturenames:
        return
    both = metafunc.definition.get_closest_marker("contract") is not None
    only = metafunc.definition.get_closest_marker("embedded_only") is not None
    kinds = ["embedded", "milvus"] if both and not only else ["embedded"]
    metafunc.parametrize("store_kind", kinds, scope="function")


@pytest.fixture(scope="session")
def milvus_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One Milvus Lite server for the whole run; each test gets its own collections."""
    with milvus_lite(tmp_path_factory.mktemp("milvus")) as uri:
        yield uri


@pytest.fixture
def settings(tmp_path: Path, store_kind: str, request: pytest.FixtureRequest) -> Iterator[Settings]:
    if store_kind == "embedded":
        yield Settings(data_dir=tmp_path / "data")
        return
    uri = request.getfixturevalue("milvus_uri")
    milvus = Settings(
        data_dir=tmp_path / "data", store="milvus", milvus_uri=uri, milvus_collection="contract"
    )
    empty(milvus)  # after a test that failed half-way
    yield milvus
    empty(milvus)


@pytest.fixture
def encoder() -> HashingEncoder:
    return HashingEncoder(dim=64)


@pytest.fixture
def store(settings: Settings) -> EmbeddedStore:
    """The store under the `service` fixture: tests of the embedded store look at its log and index."""
    return build_store(settings)  # type: ignore[return-value]


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
