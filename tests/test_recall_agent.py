"""The questions an agent asks of its own memory, through a real MCP client on both stores: a fact that
changed (`supersedes`, `supersede`), relative times against a fixed `now`, listings of a period, what came
right after an event, and an empty answer that says why."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.types import TextContent, TextResourceContents

from emx_mcp.resources import session_uri
from emx_mcp.service import MemoryService
from emx_mcp.transfer import export_jsonl, import_jsonl
from tests.helpers import call, error_text, open_service

pytestmark = [pytest.mark.anyio, pytest.mark.contract]

NOW = "2026-11-24T10:00:00Z"  # a Tuesday


async def store(client: Client, text: str, **arguments: Any) -> str:
    stored = await call(client, "remember", text=text, **arguments)
    (event_id,) = stored["ids"]
    return str(event_id)


def ids(result: dict[str, Any]) -> list[str]:
    return [r["id"] for r in result["results"]]


async def test_a_superseded_episode_is_left_out_shown_on_request_and_back_when_its_successor_goes(
    client: Client,
) -> None:
    old = await store(client, "Maria lives in Berlin and works from a co-working space.", session="profile")
    other = await store(client, "Maria prefers tea to coffee.", session="profile")
    stored = await call(
        client,
        "remember",
        text="Maria lives in Lisbon now and works from home.",
        session="profile",
        supersedes=[old],
    )
    new = stored["ids"][0]
    assert stored["supersedes"] == [old]
    found = await call(client, "recall", query="where does Maria live", k=5, contiguity=0)
    assert old not in ids(found) and new in ids(found)
    assert next(r for r in found["results"] if r["id"] == new)["supersedes"] == [old]
    shown = await call(
        client, "recall", query="where does Maria live", k=5, contiguity=0, include_superseded=True
    )
    marked = next(r for r in shown["results"] if r["id"] == old)
    assert marked["superseded_by"] == new
    text = (
        await client.call_tool("recall", {"query": "where does Maria live", "include_superseded": True})
    ).content
    assert isinstance(text[0], TextContent) and f"superseded by {new}" in text[0].text
    # Neighbours in time obey the same rule: the superseded one is not brought back as context.
    around = await call(client, "recall", query="Maria prefers tea", k=1, contiguity=2)
    assert other in ids(around) and old not in ids(around)
    await call(client, "forget", ids=[new], confirm=True)
    back = await call(client, "recall", query="where does Maria live", k=5, contiguity=0)
    assert old in ids(back) and next(r for r in back["results"] if r["id"] == old)["superseded_by"] is None


async def test_supersede_links_after_the_fact_and_resources_show_the_link(client: Client) -> None:
    old = await store(client, "The partner API allows 100 requests per minute.", session="api")
    new = await store(client, "The partner API limit was raised to 300 requests per minute.", session="api")
    result = await client.call_tool("supersede", {"ids": [old], "by": new})
    assert not result.is_error and result.structured_content == {"by": new, "linked": [old], "already": []}
    again = await call(client, "supersede", ids=[old], by=new)
    assert again["linked"] == [] and again["already"] == [old]
    assert old not in ids(await call(client, "recall", query="partner API requests per minute", contiguity=0))
    content = (await client.read_resource(session_uri("default", "api"))).contents[0]
    assert isinstance(content, TextResourceContents)
    episodes = {e["id"]: e for e in json.loads(content.text)["episodes"]}
    assert episodes[old]["superseded_by"] == new and episodes[new]["supersedes"] == [old]


async def test_remember_names_earlier_episodes_on_the_same_subject(client: Client) -> None:
    old = await store(client, "The staging cluster runs on three nodes in Frankfurt.")
    stored = await call(client, "remember", text="The staging cluster runs on five nodes in Frankfurt.")
    assert [r["id"] for r in stored["related"]] == [old]
    assert (
        stored["related"][0]["preview"].startswith("The staging cluster")
        and stored["related"][0]["timestamp"]
    )
    # Once linked, the replaced one is no longer offered; the current one is.
    await call(client, "supersede", ids=[old], by=stored["ids"][0])
    again = await call(client, "remember", text="The staging cluster runs on six nodes in Frankfurt.")
    assert [r["id"] for r in again["related"]] == stored["ids"]


async def test_bad_supersedes_are_refused_by_name_and_store_nothing(
    client: Client, service: MemoryService
) -> None:
    mine = await store(client, "The deploy freeze starts on 18 December.")
    theirs = await store(client, "Another team's note.", namespace="elsewhere")
    before = service.count()
    text = await error_text(client, "remember", text="The freeze moved.", supersedes=["0123456789abcdef"])
    assert "0123456789abcdef" in text and "nothing was stored" in text
    text = await error_text(client, "remember", text="The freeze moved.", supersedes=[theirs])
    assert theirs in text and "'default'" in text and "elsewhere" not in text
    text = await error_text(client, "supersede", ids=[mine], by=mine)
    assert "cannot supersede itself" in text
    text = await error_text(client, "supersede", ids=[mine], by="0123456789abcdef")
    assert "nothing was linked" in text
    assert service.count() == before


async def test_export_and_import_carry_the_link(
    client: Client, service: MemoryService, tmp_path: Path
) -> None:
    old = await store(client, "Rui is on call this week.", session="on-call")
    stored = await call(
        client, "remember", text="Beatriz took over on-call from Rui.", session="on-call", supersedes=[old]
    )
    out = tmp_path / "export.jsonl"
    export_jsonl(service, out)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line.get("supersedes") for line in lines] == [None, [old]]
    copy = open_service(
        service.settings.model_copy(update={"data_dir": tmp_path / "copy", "milvus_collection": "copy"})
    )
    try:
        report = import_jsonl(copy, out)
        assert report.imported == 2
        assert copy.links("default", [old]) == [(old, stored["ids"][0])]
        bad = tmp_path / "bad.jsonl"
        line = {**lines[0], "id": "feedfacefeedface", "position": 9, "supersedes": ["feedfacefeedface"]}
        bad.write_text(json.dumps(line) + "\n")
        report = import_jsonl(copy, bad)
        assert report.aborted and "cannot supersede itself" in report.errors[0][1]
    finally:
        copy.close()


async def test_relative_windows_resolve_against_now_and_are_stated(client: Client) -> None:
    await store(client, "Deploy of 2.3.0 failed: the migration timed out.", timestamp="2026-11-17T13:55:00Z")
    await store(client, "Weekly meeting: we demo the dashboard on Tuesday.", timestamp="2026-11-16T10:00:00Z")
    await store(client, "Started the CSV export job.", timestamp="2026-11-23T10:00:00Z")
    found = await call(client, "recall", query="deploy", since="last Tuesday", until="last Tuesday", now=NOW)
    assert [r["text"][:10] for r in found["results"]] == ["Deploy of "]
    window = found["window"]
    assert (
        window["since"] == "2026-11-17T00:00:00.000000Z" and window["until"] == "2026-11-17T23:59:59.999999Z"
    )
    assert window["source"] == "arguments" and window["use"] == "filter"
    # In Tokyo (+09:00) "yesterday" is another span of UTC: days begin where `now` says.
    tokyo = await call(
        client,
        "recall",
        query="CSV export",
        since="yesterday",
        until="yesterday",
        now="2026-11-24T10:00:00+09:00",
    )
    assert tokyo["window"]["since"] == "2026-11-22T15:00:00.000000Z" and ids(tokyo)
    # A time in the question itself filters, and is left out of the words searched.
    asked = await call(
        client, "recall", query="What went wrong on the deploy last Tuesday?", now=NOW, contiguity=0
    )
    assert asked["window"]["source"] == "query" and asked["window"]["said"] == "last tuesday"
    assert [r["text"][:10] for r in asked["results"]] == ["Deploy of "]


async def test_an_empty_query_lists_a_period_in_time_order(client: Client) -> None:
    for day, text in (
        (16, "Monday: planning."),
        (18, "Wednesday: the demo."),
        (17, "Tuesday: the deploy."),
        (23, "Next Monday."),
    ):
        await store(client, text, timestamp=f"2026-11-{day}T09:00:00Z", session=f"d{day}")
    listed = await call(client, "recall", query="", since="last week", until="last week", now=NOW)
    assert listed["order"] == "time" and [r["text"] for r in listed["results"]] == [
        "Monday: planning.",
        "Tuesday: the deploy.",
        "Wednesday: the demo.",
    ]
    asked = await call(client, "recall", query="What did we do last week?", now=NOW)
    assert [r["text"] for r in asked["results"]] == [r["text"] for r in listed["results"]]
    assert "empty" in await error_text(client, "recall", query="  ")


async def test_what_came_right_after_an_event_comes_first(client: Client) -> None:
    failed = await store(client, "The deploy failed: a migration timed out on a lock.", session="deploy")
    fixed = await store(client, "Split the migration in two and deployed again, cleanly.", session="deploy")
    before = await store(client, "Prepared the release notes for the deploy.", session="prep")
    del before
    found = await call(client, "recall", query="What did we do right after the deploy failed?")
    assert ids(found)[:2] == [fixed, failed]
    assert found["results"][0]["neighbour_of"] == failed and "after" in found["note"]
    back = await call(client, "recall", query="What happened just before we split the migration in two?")
    assert ids(back)[:2] == [failed, fixed]


async def test_an_empty_answer_says_why(client: Client) -> None:
    await store(client, "Coding notes: the cache key includes the tenant.", namespace="coding")
    await store(client, "An entry on the 10th.", timestamp="2026-11-10T09:00:00Z")
    await store(client, "An entry on the 20th.", timestamp="2026-11-20T09:00:00Z")
    misspelt = await call(client, "recall", query="cache key", namespace="codng")
    assert (
        misspelt["results"] == []
        and "'codng' holds no memories" in misspelt["note"]
        and "'coding'" in misspelt["note"]
    )
    window = await call(client, "recall", query="entry", since="2026-11-14", until="2026-11-16")
    assert (
        window["results"] == []
        and "2026-11-10 09:00" in window["note"]
        and "2026-11-20 09:00" in window["note"]
    )
    low = await call(client, "recall", query="entry on the", min_score=0.99)
    assert low["results"] == [] and "below min_score 0.99" in low["note"]
    text = (await client.call_tool("recall", {"query": "entry", "min_score": 0.99})).content[0]
    assert isinstance(text, TextContent) and "best scored" in text.text


@pytest.mark.parametrize(
    ("arguments", "says"),
    [
        ({"since": "the day after the launch"}, "since 'the day after the launch' is not a time I can read"),
        ({"until": "whenever"}, "'yesterday', 'last week', '3 days ago'"),
        ({"now": "next tuesday"}, "now 'next tuesday' is not ISO 8601"),
        ({"since": "yesterday", "until": "last week", "now": NOW}, "is after until"),
        ({"since": "2026-11-20", "until": "2026-11-10"}, "is after until"),
    ],
)
async def test_bad_times_are_refused_with_a_remedy(
    client: Client, arguments: dict[str, Any], says: str
) -> None:
    assert says in await error_text(client, "recall", query="deploy", **arguments)
