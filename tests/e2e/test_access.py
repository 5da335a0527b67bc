"""Scoped tokens through the real server over HTTP, on both stores: every door checks the namespace.

Two agents hold tokens for namespaces A and B (made with `emx-mcp token create`, as the README
says); a third holds a read-only token. Each tool, resource, prompt, completion and browser page
used with A's token on B is refused, and nothing of B shows in any listing A gets.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import PromptReference, ResourceTemplateReference

from emx_mcp.config import Settings
from tests.e2e.servers import SERVER, NetworkServer, network_server, server_env
from tests.milvus_server import empty

pytestmark = pytest.mark.slow

ADMIN = "admin-token-0123456789abcdef"


@pytest.fixture(params=["embedded", "milvus"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    if request.param == "embedded":
        yield {}
        return
    uri = request.getfixturevalue("milvus_uri")
    env = {"EMX_STORE": "milvus", "EMX_MILVUS_URI": uri, "EMX_MILVUS_COLLECTION": "access"}
    settings = Settings(data_dir=tmp_path, store="milvus", milvus_uri=uri, milvus_collection="access")
    empty(settings)
    yield env
    empty(settings)


def cli(data_dir: Path, store: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    env = server_env(data_dir, **store)
    return subprocess.run([str(SERVER), *args], env=env, capture_output=True, text=True, timeout=120)


def make_token(data_dir: Path, store: dict[str, str], name: str, *options: str) -> str:
    done = cli(data_dir, store, "token", "create", "--name", name, *options)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


class Agent:
    def __init__(self, server: NetworkServer, token: str) -> None:
        self.http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=120)
        self.client = Client(
            streamable_http_client(server.url, http_client=self.http), read_timeout_seconds=120
        )

    async def __aenter__(self) -> Client:
        return await self.client.__aenter__()

    async def __aexit__(self, *exc: Any) -> None:
        await self.client.__aexit__(*exc)
        await self.http.aclose()


async def ok(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content
    return result.structured_content or {}


async def refused(client: Client, tool: str, **arguments: Any) -> str:
    result = await client.call_tool(tool, arguments)
    assert result.is_error, f"{tool}({arguments}) was allowed"
    return " ".join(getattr(c, "text", "") for c in result.content)


async def raises(call: Any) -> str:
    with pytest.raises(Exception) as caught:
        await call
    return str(caught.value)


def test_each_token_keeps_to_its_namespaces(tmp_path: Path, store: dict[str, str]) -> None:
    data = tmp_path / "data"
    token_a = make_token(data, store, "agent-a", "--namespace", "a")
    token_b = make_token(data, store, "agent-b", "--namespace", "b")
    reader = make_token(data, store, "reader", "--namespace", "a", "--read-only")
    book = (data / "tokens.json").read_text() if not store else ""
    for token in (token_a, token_b, reader):
        assert token.split("_")[-1] not in book  # only salted hashes are kept

    with network_server(data, token=ADMIN, **store) as server:

        async def scenario() -> None:
            async with Agent(server, token_b) as b:
                stored_b = await ok(b, "remember", text="Project B ships the falcon release on Monday.")
                assert stored_b["session"]
                secret_b = stored_b["ids"][0]
                session_b = stored_b["session"]
            async with Agent(server, token_a) as a:
                mine = await ok(a, "remember", text="Project A moves the ledger to Postgres.")  # default: a
                assert (await ok(a, "index_health"))["namespace"] == "a"
                found = await ok(a, "recall", query="falcon release", min_score=0.0)
                assert secret_b not in [r["id"] for r in found["results"]]
                for tool, arguments in [
                    ("remember", {"text": "x"}),
                    ("recall", {"query": "falcon"}),
                    ("recall_batch", {"queries": ["falcon"]}),
                    ("predict_next", {}),
                    ("index_health", {}),
                    ("supersede", {"ids": [secret_b], "by": secret_b}),
                    ("forget", {"ids": [secret_b], "confirm": True}),
                ]:
                    text = await refused(a, tool, **arguments, namespace="b")
                    assert "namespace 'b' is not open to token 'agent-a'; it may use: a" in text, text
                # predict_next cannot probe B by an event id either: ids are looked up in a only.
                assert "no event with id" in await refused(a, "predict_next", after_event_id=secret_b)
                listed = json.loads((await a.read_resource("emx://namespaces")).contents[0].text)  # type: ignore[union-attr]
                assert [n["namespace"] for n in listed["namespaces"]] == ["a"]
                for uri in (
                    "emx://b/sessions",
                    "emx://b/recent",
                    "emx://b/health",
                    f"emx://b/sessions/{session_b}",
                ):
                    assert "not open to token 'agent-a'" in await raises(a.read_resource(uri))
                template = ResourceTemplateReference(type="ref/resource", uri="emx://{namespace}/recent")
                assert (await a.complete(template, {"name": "namespace", "value": ""})).completion.values == [
                    "a"
                ]
                prompt = PromptReference(type="ref/prompt", name="recap_session")
                got = await a.complete(
                    prompt, {"name": "session", "value": ""}, context_arguments={"namespace": "b"}
                )
                assert got.completion.values == []
                assert "not open" in await raises(
                    a.get_prompt("recap_session", {"session": session_b, "namespace": "b"})
                )
                assert "not open" in await raises(
                    a.get_prompt("recall_for_task", {"task": "falcon", "namespace": "b"})
                )
                assert mine["stored"] == 1
            async with Agent(server, reader) as r:
                assert (await ok(r, "recall", query="ledger Postgres"))["results"]
                assert "read-only" in await refused(r, "remember", text="no")
                assert "read-only" in await refused(r, "forget", session="x", confirm=True)
                assert "read-only" in await refused(r, "supersede", ids=["x"], by="y")

        anyio.run(scenario)

        # The memory browser, signed in with A's token: B is nowhere.
        ui = server.url.removesuffix("/mcp") + "/ui"
        with httpx2.Client(timeout=60, follow_redirects=False) as http:
            cookie = http.post(ui + "/login", data={"token": token_a}).headers["set-cookie"].split(";")[0]
            http.cookies.clear()
            signed = {"Cookie": cookie}
            home = http.get(ui, headers=signed)
            assert home.status_code == 200 and "/ui/ns/a" in home.text and "/ui/ns/b" not in home.text
            for page in (
                "/ns/b",
                "/ns/b/health",
                "/ns/b/search?q=falcon",
                "/ns/b/session?s=x",
                "/ns/b/forget?session=x",
            ):
                answer = http.get(ui + page, headers=signed)
                assert answer.status_code == 403 and "falcon" not in answer.text, page
            reader_cookie = (
                http.post(ui + "/login", data={"token": reader}).headers["set-cookie"].split(";")[0]
            )
            http.cookies.clear()
            assert (
                http.get(ui + "/ns/a/forget?session=x", headers={"Cookie": reader_cookie}).status_code == 403
            )

        # Revoked: refused on the very next request, by the MCP endpoint and the browser alike.
        assert cli(data, store, "token", "revoke", "agent-a").returncode == 0
        with httpx2.Client(timeout=60) as http:
            answer = http.post(
                server.url,
                json={"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}},
                headers={
                    "Authorization": f"Bearer {token_a}",
                    "Accept": "application/json, text/event-stream",
                },
            )
            assert answer.status_code == 401
            assert http.get(ui, headers={"Cookie": cookie}, follow_redirects=False).status_code == 303

    listed = cli(data, store, "token", "list").stdout
    assert "agent-b\tb\tread-write" in listed and "agent-a" not in listed and token_b not in listed
    assert "last used 20" in listed.splitlines()[0]


def test_every_call_leaves_an_audit_line_and_forget_a_record(tmp_path: Path, store: dict[str, str]) -> None:
    data = tmp_path / "data"
    token = make_token(data, store, "agent-a", "--namespace", "a")
    with network_server(data, token=ADMIN, **store) as server:

        async def scenario() -> str:
            async with Agent(server, token) as a:
                stored = await ok(a, "remember", text="One. Two.", session="s")
                await ok(a, "recall", query="One")
                await refused(a, "recall", query="One", namespace="b")
                await ok(a, "forget", ids=stored["ids"], confirm=True)
                return str(stored["ids"][0])

        forgotten = anyio.run(scenario)
        log = server.stderr
    calls = [line for line in log.splitlines() if " call " in line or "[info     ] call" in line]
    assert any(
        "token=agent-a" in c and "tool=remember" in c and "namespace=a" in c and "stored=1" in c
        for c in calls
    )
    assert any("tool=recall" in c and "returned=1" in c and "outcome=ok" in c for c in calls)
    assert any("tool=recall" in c and "namespace=b" in c and "outcome=refused" in c for c in calls)
    assert any("tool=forget" in c and "forgotten=1" in c for c in calls)
    assert token not in log and "Two." not in "\n".join(calls)  # never the token, never the text
    records = cli(data, store, "audit").stdout
    assert f"\ta\tagent-a\tforgot 1\t{forgotten}" in records


def test_a_revoked_token_is_refused_by_every_replica(tmp_path: Path, milvus_uri: str) -> None:
    """Two replicas on one Milvus: the token book is in the store, read on every request."""
    store = {"EMX_STORE": "milvus", "EMX_MILVUS_URI": milvus_uri, "EMX_MILVUS_COLLECTION": "access"}
    settings = Settings(data_dir=tmp_path, store="milvus", milvus_uri=milvus_uri, milvus_collection="access")
    empty(settings)
    token = make_token(tmp_path / "cli", store, "agent-a", "--namespace", "a")
    request = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream"}
    try:
        with (
            network_server(tmp_path / "one", token=ADMIN, **store) as one,
            network_server(tmp_path / "two", token=ADMIN, **store) as two,
            httpx2.Client(timeout=60) as http,
        ):
            for replica in (one, two):  # past the token check (without a session the request itself is 400)
                assert http.post(replica.url, json=request, headers=headers).status_code in (200, 400)
            assert cli(tmp_path / "cli", store, "token", "revoke", "agent-a").returncode == 0
            for replica in (one, two):
                assert http.post(replica.url, json=request, headers=headers).status_code == 401
    finally:
        empty(settings)
