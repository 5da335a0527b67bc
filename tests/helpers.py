"""Small shared test parts."""

from __future__ import annotations

from typing import Any

from mcp import Client

from emx_mcp.embedding import DEFAULT_MODEL_ID, HashingEncoder


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
