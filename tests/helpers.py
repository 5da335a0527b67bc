"""Small shared test parts: MCP call helpers, and the service's use cases called with keyword arguments."""

from __future__ import annotations

from typing import Any

from mcp import Client

from emx_mcp.app import build_service, build_store
from emx_mcp.config import Settings
from emx_mcp.embedding import DEFAULT_MODEL_ID, Encoder, HashingEncoder
from emx_mcp.prediction import Prediction
from emx_mcp.retrieval import Hit
from emx_mcp.schemas import (
    ForgetRequest,
    HealthReport,
    HealthRequest,
    PredictNextRequest,
    RecallBatchRequest,
    RecallRequest,
    RememberRequest,
    parse,
)
from emx_mcp.service import Episode, MemoryService
from emx_mcp.storage.embedded import EmbeddedStore


async def call(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    """Call a tool that must succeed; return its structured result."""
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


async def error_text(client: Client, tool: str, **arguments: Any) -> str:
    """Call a tool that must fail; return its error message."""
    result = await client.call_tool(tool, arguments)
    assert result.is_error, f"{tool}({arguments}) should have failed"
    return " ".join(getattr(c, "text", "") for c in result.content)


class DefaultIdEncoder(HashingEncoder):
    """Hashing vectors stored under the packaged model's id (384-d).

    A store filled with it opens in the CLI without loading the real model, because the CLI's
    encoder has that id and the store already knows its dimension; nothing is embedded there.
    """

    def __init__(self) -> None:
        super().__init__(dim=384)

    @property
    def model_id(self) -> str:
        return DEFAULT_MODEL_ID


def open_service(settings: Settings, encoder: Encoder | None = None) -> MemoryService:
    """An opened service over a new embedded store of `settings` (hashing encoder unless given)."""
    service = build_service(settings, encoder or HashingEncoder(dim=64))
    service.open()
    return service


def open_with_store(
    settings: Settings, encoder: Encoder | None = None
) -> tuple[MemoryService, EmbeddedStore]:
    """An opened service and the store under it, for tests that look at the index itself."""
    store: EmbeddedStore = build_store(settings)  # type: ignore[assignment]
    service = MemoryService(settings, encoder or HashingEncoder(dim=64), store)
    service.open()
    return service, store


# The use cases with keyword arguments, checked exactly as a tool call checks them.


def remember(service: MemoryService, text: Any, **arguments: Any) -> list[Episode]:
    request = parse(RememberRequest, {"text": text, **arguments}, service.settings.max_text_chars)
    return service.remember(request).episodes


def recall(service: MemoryService, query: Any, **arguments: Any) -> list[Hit]:
    """The hits of a recall (what fits its reading budget)."""
    request = parse(RecallRequest, {"query": query, **arguments}, service.settings.max_text_chars)
    return service.recall(request).hits


def recall_batch(service: MemoryService, queries: Any, **arguments: Any) -> list[list[Hit]]:
    request = parse(RecallBatchRequest, {"queries": queries, **arguments}, service.settings.max_text_chars)
    return [found.hits for found in service.recall_batch(request)]


def forget(service: MemoryService, **arguments: Any) -> list[str]:
    return service.forget(parse(ForgetRequest, arguments))


def predict_next(service: MemoryService, **arguments: Any) -> Prediction:
    return service.predict_next(parse(PredictNextRequest, arguments))


def health(service: MemoryService, namespace: str = "default") -> HealthReport:
    return service.health(HealthRequest(namespace=namespace))
