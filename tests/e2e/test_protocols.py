"""Clients of both protocol revisions the SDK serves: 2025-11-25 (initialize handshake, sessions) and
2026-07-28 (stateless), against the real server over streamable HTTP, and over stdio."""

from __future__ import annotations

from pathlib import Path

import pytest
from mcp import Client
from mcp.types import PromptReference

from tests.e2e.servers import network_server, stdio_params
from tests.helpers import call

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

REVISIONS = {"legacy": "2025-11-25", "2026-07-28": "2026-07-28"}


async def remember_and_recall(client: Client, expected: str) -> None:
    assert client.protocol_version == expected
    stored = await call(
        client, "remember", text=f"Revision {expected} stores the deploy checklist.", session="s"
    )
    found = await call(client, "recall", query=f"deploy checklist of revision {expected}", k=1, contiguity=0)
    assert found["results"][0]["id"] == stored["ids"][0]
    assert [r.uri for r in (await client.list_resources()).resources] == ["emx://namespaces"]
    sessions = await client.complete(
        PromptReference(type="ref/prompt", name="recap_session"), {"name": "session", "value": ""}
    )
    assert sessions.completion.values == ["s"]


@pytest.mark.parametrize("mode", REVISIONS)
async def test_a_client_of_each_revision_calls_recall_over_http(tmp_path: Path, mode: str) -> None:
    with network_server(tmp_path / "data") as server:
        async with Client(server.url, mode=mode) as client:
            await remember_and_recall(client, REVISIONS[mode])


@pytest.mark.parametrize("mode", REVISIONS)
async def test_a_client_of_each_revision_calls_recall_over_stdio(tmp_path: Path, mode: str) -> None:
    async with Client(stdio_params(tmp_path / "data"), mode=mode) as client:
        await remember_and_recall(client, REVISIONS[mode])
