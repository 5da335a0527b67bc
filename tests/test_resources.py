"""Resources, templates, completions and prompts through a real MCP client, on both stores."""

from __future__ import annotations

import json
from typing import Any

import pytest
from mcp import Client
from mcp.types import PromptReference, ResourceTemplateReference, TextContent, TextResourceContents

from emx_mcp.resources import session_uri
from emx_mcp.service import MemoryService
from tests.helpers import call

pytestmark = [pytest.mark.anyio, pytest.mark.contract]

ODD_SESSION = "release/2026 q4: ..plan"  # a '/', a space and '..' are part of an id, not a path


async def read(client: Client, uri: str) -> Any:
    result = await client.read_resource(uri)
    (content,) = result.contents
    assert isinstance(content, TextResourceContents) and content.mime_type == "application/json"
    return json.loads(content.text)


async def read_error(client: Client, uri: str) -> str:
    with pytest.raises(Exception) as caught:
        await client.read_resource(uri)
    return str(caught.value)


async def test_resources_and_templates_are_listed_with_titles_and_icons(client: Client) -> None:
    resources = (await client.list_resources()).resources
    assert [r.uri for r in resources] == ["emx://namespaces"]
    templates = {t.uri_template: t for t in (await client.list_resource_templates()).resource_templates}
    assert set(templates) == {
        "emx://{namespace}/sessions{?cursor}",
        "emx://{namespace}/sessions/{session}{?start}",
        "emx://{namespace}/recent",
        "emx://{namespace}/health",
    }
    for item in [*resources, *templates.values()]:
        assert item.title and item.description and item.icons, item
    for tool in (await client.list_tools()).tools:
        assert tool.title and tool.icons and tool.icons[0].src.startswith("data:image/svg+xml"), tool.name


async def test_namespaces_sessions_episodes_recent_and_health(client: Client) -> None:
    await call(client, "remember", text="We chose Postgres for the ledger.", session=ODD_SESSION)
    await call(client, "remember", text="The ledger needs nightly backups.", session=ODD_SESSION)
    await call(client, "remember", text="Standups move to 9:30.", session="team")
    await call(client, "remember", text="The deploy window is Friday.", namespace="work")

    listed = await read(client, "emx://namespaces")
    assert listed == {
        "namespaces": [{"namespace": "default", "events": 3}, {"namespace": "work", "events": 1}]
    }

    page = await read(client, "emx://default/sessions")
    assert [s["session"] for s in page["sessions"]] == ["team", ODD_SESSION]  # newest first
    assert page["total"] == 2 and page["next_cursor"] is None and page["sessions"][1]["episodes"] == 2

    episodes = await read(client, session_uri("default", ODD_SESSION))
    assert episodes["session"] == ODD_SESSION and episodes["total"] == 2
    assert [e["text"] for e in episodes["episodes"]] == [
        "We chose Postgres for the ledger.",
        "The ledger needs nightly backups.",
    ]
    assert [e["position"] for e in episodes["episodes"]] == [0, 1]

    recent = await read(client, "emx://default/recent")
    assert [e["text"] for e in recent["episodes"]][:2] == [
        "Standups move to 9:30.",
        "The ledger needs nightly backups.",
    ]
    health = await read(client, "emx://work/health")
    assert health["namespace"] == "work" and health["events_in_log"] == 1 and health["status"] == "ok"


async def test_sessions_and_episodes_are_paginated(client: Client, service: MemoryService) -> None:
    for i in range(53):
        await call(client, "remember", text=f"note {i}", session=f"s{i:02d}")
    first = await read(client, "emx://default/sessions")
    assert len(first["sessions"]) == 50 and first["total"] == 53 and first["next_cursor"]
    second = await read(client, f"emx://default/sessions?cursor={first['next_cursor']}")
    assert [s["session"] for s in second["sessions"]] == ["s02", "s01", "s00"] and second[
        "next_cursor"
    ] is None
    assert "not one this server gave" in await read_error(client, "emx://default/sessions?cursor=abc")

    long = "Step one is done. " * 3
    for i in range(105):
        await call(client, "remember", text=f"{long} Item {i}.", session="long")
    page = await read(client, session_uri("default", "long"))
    assert len(page["episodes"]) == 100 and page["next_start"] == 100 and page["total"] == 105
    rest = await read(client, session_uri("default", "long") + "?start=100")
    assert [e["position"] for e in rest["episodes"]] == [100, 101, 102, 103, 104] and rest[
        "next_start"
    ] is None


async def test_resource_mistakes_are_one_sentence(client: Client) -> None:
    await call(client, "remember", text="one", session="s")
    assert "has no session 'nope'" in await read_error(client, "emx://default/sessions/nope")
    assert "namespace 'bad ns' is not allowed" in await read_error(client, "emx://bad%20ns/recent")
    assert "whole number" in await read_error(client, session_uri("default", "s") + "?start=x")


async def test_completions_suggest_namespaces_and_sessions(client: Client) -> None:
    await call(client, "remember", text="a", namespace="work", session="deploy-plan")
    await call(client, "remember", text="b", namespace="work", session="design")
    await call(client, "remember", text="c", namespace="home", session="garden")
    template = ResourceTemplateReference(type="ref/resource", uri="emx://{namespace}/recent")
    got = await client.complete(template, {"name": "namespace", "value": "w"})
    assert got.completion.values == ["work"]
    prompt = PromptReference(type="ref/prompt", name="recap_session")
    got = await client.complete(
        prompt, {"name": "session", "value": "de"}, context_arguments={"namespace": "work"}
    )
    assert sorted(got.completion.values) == ["deploy-plan", "design"] and got.completion.total == 2
    got = await client.complete(
        prompt, {"name": "session", "value": ""}, context_arguments={"namespace": "home"}
    )
    assert got.completion.values == ["garden"]


async def test_prompts_bring_memory_to_a_task_and_recap_a_session(client: Client) -> None:
    prompts = {p.name: p for p in (await client.list_prompts()).prompts}
    assert set(prompts) == {"recall_for_task", "recap_session"}
    assert all(p.title and p.description and p.icons for p in prompts.values())
    await call(client, "remember", text="The ledger database is Postgres 16 on db-7.", session="infra")
    await call(client, "remember", text="Backups of the ledger run nightly at 02:00.", session="infra")

    got = await client.get_prompt("recall_for_task", {"task": "move the ledger database to db-9"})
    (message,) = got.messages
    assert message.role == "user" and isinstance(message.content, TextContent)
    assert "Task: move the ledger database to db-9" in message.content.text
    assert "Postgres 16 on db-7" in message.content.text

    got = await client.get_prompt("recap_session", {"session": "infra"})
    text = got.messages[0].content.text  # type: ignore[union-attr]
    assert text.index("Postgres 16") < text.index("nightly at 02:00") and "2 episodes" in text
    with pytest.raises(Exception, match="has no session"):
        await client.get_prompt("recap_session", {"session": "missing"})
    with pytest.raises(Exception, match="task is empty"):
        await client.get_prompt("recall_for_task", {"task": "   "})


@pytest.mark.embedded_only
async def test_the_timeline_scores_each_boundary(service: MemoryService) -> None:
    from tests.helpers import remember

    text = (
        "The database migration failed on Monday. The database schema had a missing index. "
        "We rebuilt the database index. Lunch options near the office include pizza. "
        "The pizza place closes at nine. Pizza is cheaper on Tuesdays."
    )
    stored = remember(service, text, session="t")
    timeline = service.session_episodes("default", "t", surprise=True)
    scores = [e.surprise for e in timeline.episodes]
    assert scores[0] is None and len(scores) == len(stored)
    assert all(s is not None and 0.0 <= s <= 2.0 for s in scores[1:])
    later = service.session_episodes("default", "t", start=1, surprise=True)
    assert [e.surprise for e in later.episodes] == scores[1:]  # the same score from any page


async def test_a_long_remember_reports_progress(client: Client) -> None:
    updates: list[tuple[float, float | None, str | None]] = []

    async def progress(done: float, total: float | None, message: str | None) -> None:
        updates.append((done, total, message))

    text = " ".join(f"Fact number {i} is about topic {i % 7}." for i in range(300))
    result = await client.call_tool("remember", {"text": text}, progress_callback=progress)
    assert not result.is_error
    # 300 sentences: three embedding steps of up to 128, then storing; rising, ending at the total.
    assert [u[0] for u in updates] == [0, 1, 2, 3, 4] and {u[1] for u in updates} == {4}
    assert updates[0][2] == "embedding sentences 1-128 of 300" and "storing" in (updates[3][2] or "")
    assert (updates[-1][2] or "").startswith("stored")
    short: list[object] = []
    await client.call_tool("remember", {"text": "short"}, progress_callback=lambda *a: short.append(a))  # type: ignore[arg-type,return-value]
    assert short == []


async def test_the_health_view_has_what_the_browser_plots(client: Client, service: MemoryService) -> None:
    await call(client, "remember", text="first day", timestamp="2026-11-01T10:00:00Z")
    await call(client, "remember", text="second day", timestamp="2026-11-02T10:00:00Z")
    await call(client, "remember", text="second day again", timestamp="2026-11-02T11:00:00Z")
    view = service.health_view("default")
    assert view.daily == [("2026-11-01", 1), ("2026-11-02", 2)]
    assert view.report.vectors == 3 and view.history[-1].vectors == 3
    await call(client, "remember", text="one more", namespace="default")
    assert [r.vectors for r in service.health_view("default").history][-2:] == [
        3,
        4,
    ]  # one reading per change
    assert [r.vectors for r in service.health_view("default").history][-2:] == [3, 4]
