"""The real server over streamable HTTP and SSE: bearer auth, DNS-rebinding checks, real model."""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import httpx2
import pytest
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

from tests.e2e.servers import INITIALIZE, SERVER, network_server, server_env

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

TOKEN = "e2e-token-0123456789abcdef"


def post_initialize(url: str, headers: dict[str, str]) -> int:
    """HTTP status of a raw initialize POST with the given extra headers."""
    request = urllib.request.Request(
        url,
        data=json.dumps(INITIALIZE).encode(),
        method="POST",
        headers={
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
            **headers,
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as exc:
        return exc.code


async def remember_and_recall(client: Client) -> None:
    text = "The quarterly report is due on the last Friday of March."
    stored = await client.call_tool("remember", {"text": text})
    assert not stored.is_error, stored.content
    assert stored.structured_content is not None
    event_id = stored.structured_content["ids"][0]
    found = await client.call_tool("recall", {"query": "when is the quarterly report due?", "k": 1})
    assert found.structured_content is not None
    top = found.structured_content["results"][0]
    assert top["id"] == event_id and top["text"] == text


async def test_http_needs_the_bearer_token(tmp_path: Path) -> None:
    with network_server(tmp_path / "data", token=TOKEN) as server:
        assert post_initialize(server.url, {}) == 401
        assert post_initialize(server.url, {"Authorization": "Bearer wrong-token-0123456789abc"}) == 401
        assert post_initialize(server.url, {"Authorization": f"Basic {TOKEN}"}) == 401
        assert post_initialize(server.url, {"Authorization": f"Bearer {TOKEN}"}) == 200
        # DNS rebinding: a page on another name that resolves to 127.0.0.1 is refused.
        assert (
            post_initialize(server.url, {"Authorization": f"Bearer {TOKEN}", "Host": "evil.example"}) == 421
        )
        assert (
            post_initialize(server.url, {"Authorization": f"Bearer {TOKEN}", "Origin": "http://evil.example"})
            == 403
        )
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with (
            httpx2.AsyncClient(headers=headers, timeout=120) as http,
            Client(streamable_http_client(server.url, http_client=http), read_timeout_seconds=120) as client,
        ):
            await remember_and_recall(client)
    stderr = server.stderr
    assert server.process.returncode == 0, stderr[-2000:]  # SIGTERM stops it cleanly
    assert TOKEN not in stderr and "wrong-token" not in stderr
    assert "stopped by SIGTERM; store closed" in stderr


async def test_sse_transport_with_token(tmp_path: Path) -> None:
    with network_server(tmp_path / "data", transport="sse", token=TOKEN) as server:
        assert post_initialize(server.url.replace("/sse", "/messages/"), {}) == 401
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with Client(sse_client(server.url, headers=headers, sse_read_timeout=120)) as client:
            await remember_and_recall(client)
    assert server.process.returncode == 0


def test_public_bind_without_token_refuses_to_start(tmp_path: Path) -> None:
    env = server_env(tmp_path, EMX_TRANSPORT="http", EMX_HOST="0.0.0.0")
    done = subprocess.run([str(SERVER), "serve"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "EMX_HOST is 0.0.0.0, which is not loopback, so EMX_AUTH_TOKEN must be set" in done.stderr
    assert not (tmp_path / "events.sqlite3").exists()  # refused before touching the store
