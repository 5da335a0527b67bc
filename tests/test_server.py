"""The tools as a client sees them, through the SDK's in-memory client."""

from __future__ import annotations

import json
from typing import Any

import pytest
from mcp import Client

from emx_mcp.schemas import MAX_RESPONSE_BYTES
from emx_mcp.service import MemoryService
from tests.helpers import call, error_text

pytestmark = [pytest.mark.anyio, pytest.mark.contract]


async def test_tools_are_listed_with_schemas_and_annotations(client: Client) -> None:
    tools = {t.name: t for t in (await client.list_tools()).tools}
    assert {"remember", "recall"} <= tools.keys()
    remember, recall = tools["remember"], tools["recall"]
    assert remember.output_schema is not None and "ids" in remember.output_schema["properties"]
    assert recall.output_schema is not None and "results" in recall.output_schema["properties"]
    assert recall.annotations is not None and recall.annotations.read_only_hint is True
    assert remember.annotations is not None and remember.annotations.read_only_hint is False
    assert remember.annotations.destructive_hint is False
    assert set(remember.input_schema["required"]) == {"text"}
    assert "session" in (remember.description or "")


async def test_remember_then_recall(client: Client) -> None:
    stored = await call(
        client, "remember", text="The staging database lives on db-7.", metadata={"source": "ops"}
    )
    assert (stored["stored"], stored["positions"], len(stored["ids"])) == (1, [0, 0], 1)
    (episode,) = stored["episodes"]
    assert set(episode) == {"id", "position", "sentences", "chars", "preview", "surprise", "duplicate_of"}
    assert episode["surprise"] is None and episode["sentences"] == 1 and episode["id"] == stored["ids"][0]
    assert "text" not in stored and "text" not in episode, "remember never echoes the text back"
    await call(client, "remember", text="Lunch was pizza.", session=stored["session"])
    found = await call(client, "recall", query="The staging database lives on db-7.", k=2, contiguity=0)
    top = found["results"][0]
    assert top["id"] == episode["id"] and top["metadata"] == {"source": "ops"} and top["via"] == "similarity"
    assert top["score"] == pytest.approx(1.0, abs=1e-4)
    assert found["omitted"] == 0


async def test_session_is_returned_and_reused(client: Client) -> None:
    first = await call(client, "remember", text="step one")
    second = await call(client, "remember", text="step two", session=first["session"])
    assert second["session"] == first["session"] and second["positions"] == [1, 1]
    only = await call(client, "recall", query="step", k=10, session=first["session"])
    assert {r["id"] for r in only["results"]} == {*first["ids"], *second["ids"]}


BAD_REMEMBER = [
    ({"text": ""}, "empty"),
    ({"text": "  \n "}, "empty"),
    ({"text": "ok", "timestamp": "21/11/2026"}, "ISO 8601"),
    ({"text": "ok", "timestamp": 5}, "timestamp"),
    ({"text": "ok", "metadata": "a string"}, "metadata"),
    ({"text": "ok", "metadata": [1, 2]}, "metadata"),
    ({"text": "ok", "session": 7}, "session"),
    ({"text": "ok", "session": ["x"]}, "session"),
    ({"text": "ok", "namespace": "a/b"}, "namespace"),
    ({"text": 12}, "text"),
    ({}, "text"),
    ({"text": "lone \ud800 surrogate"}, "UTF-8"),
]


@pytest.mark.parametrize(("arguments", "mentions"), BAD_REMEMBER)
async def test_bad_remember_is_rejected_and_writes_nothing(
    client: Client, service: MemoryService, arguments: dict[str, Any], mentions: str
) -> None:
    message = await error_text(client, "remember", **arguments)
    assert mentions.lower() in message.lower()
    assert service.count() == 0


async def test_oversized_text_is_rejected_with_the_limit(client: Client, service: MemoryService) -> None:
    limit = service.settings.max_text_chars
    message = await error_text(client, "remember", text="a" * (limit + 1))
    assert f"{limit:,}" in message and "EMX_MAX_TEXT_CHARS" in message
    assert service.count() == 0


@pytest.mark.parametrize("k", [0, 101, -5])
async def test_k_out_of_range(client: Client, k: int) -> None:
    message = await error_text(client, "recall", query="anything", k=k)
    assert "k must be between 1 and 100" in message and str(k) in message


async def test_recall_on_empty_store_returns_nothing(client: Client) -> None:
    assert (await call(client, "recall", query="anything"))["results"] == []


async def test_new_tools_are_annotated(client: Client) -> None:
    tools = {t.name: t for t in (await client.list_tools()).tools}
    for name in ("recall", "recall_batch", "index_health", "predict_next"):
        annotations = tools[name].annotations
        assert annotations is not None and annotations.read_only_hint is True, name
        assert annotations.destructive_hint is False, name
        assert len(tools[name].description or "") > 150, f"{name} needs a description for the calling model"
    forget = tools["forget"].annotations
    assert forget is not None and forget.destructive_hint is True and forget.read_only_hint is False
    health_schema = tools["index_health"].output_schema
    assert health_schema is not None and "measured_recall_at_10" in health_schema["properties"]


async def test_recall_batch_tool(client: Client) -> None:
    texts = ["Rotate the TLS certificates in March.", "The cat is called Miso.", "Backups run at 02:00."]
    ids = [(await call(client, "remember", text=t))["ids"][0] for t in texts]
    out = await call(client, "recall_batch", queries=[texts[2], texts[0]], k=1)
    assert [[r["id"] for r in rows["results"]] for rows in out["results"]] == [[ids[2]], [ids[0]]]


@pytest.mark.parametrize(
    ("arguments", "mentions"),
    [
        ({"queries": []}, "1 to 256"),
        ({"queries": ["q"] * 257}, "1 to 256"),
        ({"queries": "one string"}, "queries"),
        ({"queries": ["ok", ""]}, "queries[1]"),
        ({"queries": ["ok"], "k": 0}, "k must be between 1 and 100"),
    ],
)
async def test_recall_batch_bad_input(client: Client, arguments: dict[str, Any], mentions: str) -> None:
    assert mentions in await error_text(client, "recall_batch", **arguments)


async def test_forget_tool(client: Client, service: MemoryService) -> None:
    stored = await call(client, "remember", text="The wifi password is hunter2.")
    first = {"id": stored["ids"][0], "session": stored["session"]}
    await call(client, "remember", text="Standup is at 9:30.", session=first["session"])
    refused = await error_text(client, "forget", ids=[first["id"]])
    assert "confirm=true" in refused and service.count() == 2
    unknown = await error_text(client, "forget", ids=[first["id"], "nope"], confirm=True)
    assert "nope" in unknown and service.count() == 2
    out = await call(client, "forget", ids=[first["id"]], confirm=True)
    assert out == {"removed": 1, "ids": [first["id"]]}
    found = await call(client, "recall", query="wifi password", k=5)
    assert all(r["id"] != first["id"] for r in found["results"])
    out = await call(client, "forget", session=first["session"], confirm=True)
    assert out["removed"] == 1 and service.count() == 0


async def test_index_health_tool(client: Client) -> None:
    await call(client, "remember", text="one memory")
    health = await call(client, "index_health")
    assert health["status"] == "ok" and health["kind"] == "flat"
    assert health["vectors"] == health["events_in_log"] == 1
    assert health["capacity"]["events_in_store"] == 1
    assert "namespace" in await error_text(client, "index_health", namespace="bad/ns")


async def test_capacity_counts_the_store_and_events_in_log_the_namespace(client: Client) -> None:
    await call(client, "remember", text="one memory")
    await call(client, "remember", text="another memory", namespace="other")
    health = await call(client, "index_health", namespace="other")
    assert health["events_in_log"] == 1 and health["capacity"]["events_in_store"] == 2
    tools = {t.name: t for t in (await client.list_tools()).tools}
    capacity = tools["index_health"].output_schema["$defs"]["Capacity"]["properties"]  # type: ignore[index]
    assert "every namespace" in capacity["events_in_store"]["description"]


async def test_unknown_arguments_are_refused_with_the_closest_name(client: Client) -> None:
    await call(client, "remember", text="the deploy key rotates monthly")
    text = await error_text(client, "recall", query="deploy key", top_k=3)
    assert "unknown argument 'top_k'" in text and "Did you mean 'k'?" in text
    assert "Did you mean 'namespace'?" in await error_text(client, "remember", text="x", namspace="a")
    assert "Did you mean 'confirm'?" in await error_text(client, "forget", session="s", confirmed=True)
    # No guess when nothing is alike, but the tool's arguments are named, required ones first.
    assert "This tool takes: query, k," in await error_text(client, "recall", query="x", zzz=1)


async def test_no_argument_is_coerced_from_another_type(client: Client) -> None:
    stored = await call(client, "remember", text="the staging database is on port 5433")
    session = stored["session"]
    assert "confirm must be true or false; got a string" in await error_text(
        client, "forget", session=session, confirm="true"
    )
    assert "k must be an integer; got a boolean" in await error_text(client, "recall", query="port", k=True)
    assert "k must be an integer; got a string" in await error_text(client, "recall", query="port", k="3")
    text = await error_text(client, "remember", text="x", metadata='{"a": 1}')
    assert "metadata must be a JSON object; got a string" in text
    assert "must be a list of strings; got a string" in await error_text(
        client, "recall_batch", queries='["a"]'
    )
    # One line, and none of pydantic's boilerplate (its links, "validation error", "input_value").
    for message in (text, await error_text(client, "recall", query=5)):
        assert "\n" not in message and "pydantic" not in message and "input_value" not in message
    assert (await call(client, "recall", query="staging database port"))["results"][0]["session"] == session


async def test_every_argument_is_described_and_limited(client: Client) -> None:
    for tool in (await client.list_tools()).tools:
        schema = tool.input_schema
        assert schema.get("additionalProperties") is False, tool.name
        for name, prop in schema["properties"].items():
            assert prop.get("description"), f"{tool.name}.{name} has no description"
        said = (tool.description or "").lower()
        assert tool.title and "use it" in said and "return" in said, tool.name  # when to use, what comes back
    recall = next(t for t in (await client.list_tools()).tools if t.name == "recall").input_schema
    k = recall["properties"]["k"]
    limits = next(option for option in k["anyOf"] if option.get("type") == "integer")
    assert (limits["minimum"], limits["maximum"]) == (1, 100) and "1-100" in k["description"]
    assert recall["properties"]["query"]["maxLength"] > 0


async def test_remember_returns_one_item_per_episode_with_surprise(client: Client) -> None:
    text = (
        "The database migration failed on Monday. The database schema had a missing index. "
        "We rebuilt the database index. Lunch options near the office include pizza. "
        "The pizza place closes early. Sushi is another lunch option."
    )
    stored = await call(client, "remember", text=text)
    events = stored["episodes"]
    assert len(events) >= 2 and stored["ids"] == [e["id"] for e in events]
    assert events[0]["surprise"] is None and all(isinstance(e["surprise"], float) for e in events[1:])
    assert (
        sum(e["sentences"] for e in events) == 6
        and sum(e["chars"] for e in events) == len(text) - len(events) + 1
    )


async def test_recall_filters_and_contiguity_through_the_tool(client: Client) -> None:
    first = await call(client, "remember", text="sprint one planning", metadata={"team": "red"})
    await call(client, "remember", text="sprint one demo", session=first["session"], metadata={"team": "red"})
    await call(client, "remember", text="sprint two planning", metadata={"team": "blue"}, namespace="other")
    out = await call(client, "recall", query="sprint one planning", k=1)
    assert [r["via"] for r in out["results"]] == ["similarity", "contiguity"]
    out = await call(client, "recall", query="sprint", k=5, metadata={"team": "blue"})
    assert out["results"] == []  # the blue event lives in another namespace
    out = await call(client, "recall", query="sprint", k=5, namespace="other", contiguity=0)
    assert [r["text"] for r in out["results"]] == ["sprint two planning"]
    out = await call(client, "recall", query="sprint", since="2999-01-01T00:00:00Z")
    assert out["results"] == []
    batch = await call(client, "recall_batch", queries=["sprint one demo"], k=1, contiguity=0)
    assert [r["text"] for r in batch["results"][0]["results"]] == ["sprint one demo"]


@pytest.mark.parametrize(
    ("arguments", "mentions"),
    [
        ({"since": "the day after the launch"}, "since 'the day after the launch' is not a time I can read"),
        ({"until": "2026-02-30"}, "until"),
        ({"contiguity": 9}, "contiguity must be between 0 and 5"),
        ({"metadata": {'a"b': 1}}, "quotes"),
    ],
)
async def test_recall_filter_bad_input(client: Client, arguments: dict[str, Any], mentions: str) -> None:
    assert mentions in await error_text(client, "recall", query="q", **arguments)


@pytest.mark.parametrize("moment", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
async def test_timestamps_that_leave_the_calendar_in_utc_get_a_clear_error(
    client: Client, service: MemoryService, moment: str
) -> None:
    message = await error_text(client, "remember", text="ok", timestamp=moment)
    assert "out of range" in message and "0001-01-01 and 9999-12-31" in message
    for name in ("since", "until"):
        assert "out of range" in await error_text(client, "recall", query="q", **{name: moment})
    assert service.count() == 0


async def test_until_given_as_a_date_includes_that_whole_day(client: Client) -> None:
    for moment in (
        "2026-11-20T23:00:00Z",
        "2026-11-21T00:00:00Z",
        "2026-11-21T18:30:00Z",
        "2026-11-22T00:00:00Z",
    ):
        await call(client, "remember", text=f"deploy at {moment}", timestamp=moment)
    found = await call(
        client, "recall", query="deploy", k=10, contiguity=0, since="2026-11-21", until="2026-11-21"
    )
    assert sorted(r["timestamp"][:19] for r in found["results"]) == [
        "2026-11-21T00:00:00",
        "2026-11-21T18:30:00",
    ]


async def test_a_retried_remember_with_its_idempotency_key_stores_nothing_twice(
    client: Client, service: MemoryService
) -> None:
    text = "The build cache moved to bucket b-17. Cold builds take 9 minutes now."
    first = await call(client, "remember", text=text, idempotency_key="call-0001", metadata={"k": 1})
    again = await call(client, "remember", text=text, idempotency_key="call-0001", metadata={"k": 1})
    assert again == first and service.count() == first["stored"]
    other = await error_text(client, "remember", text="something else", idempotency_key="call-0001")
    assert "used before for a different call" in other and service.count() == first["stored"]
    elsewhere = await call(client, "remember", text=text, idempotency_key="call-0001", namespace="other")
    assert elsewhere["ids"][0] != first["ids"][0]  # keys are per namespace


async def test_recall_batch_that_could_answer_too_much_is_refused_up_front(client: Client) -> None:
    message = await error_text(client, "recall_batch", queries=["q"] * 256, k=100)
    assert "could return 76,800 items" in message and "the limit is 10,000" in message


async def test_forgetting_an_unknown_session_says_so(client: Client) -> None:
    await call(client, "remember", text="kept", session="real")
    message = await error_text(client, "forget", session="no-such-session", confirm=True)
    assert "no session 'no-such-session'" in message and "nothing was forgotten" in message


async def test_text_that_repeats_itself_is_stored_in_sane_episodes(
    client: Client, service: MemoryService
) -> None:
    text = " ".join(["Build step passed."] * 2500)  # 47,500 characters
    stored = await call(client, "remember", text=text)
    assert 100 <= stored["stored"] <= 110 and all(e["sentences"] >= 20 for e in stored["episodes"])
    assert service.count() == stored["stored"] and len(stored["ids"]) == 100


SHORT_NOTES = [
    "The staging database moved to db-7 after the disk filled up on Monday.",
    "Keys for the payment API rotate every ninety days; next rotation in March.",
    "The design review for the search page moved to Tuesday at three.",
    "Backups are verified by restoring one table from them every week.",
    "The mobile build needs Xcode 17 on the CI runners from next sprint.",
    "Standup moves to 9:45 while the Berlin team is on summer hours.",
    "The staging database password now lives in the team vault, not the wiki.",
    "Database migrations run in the deploy pipeline before the app restarts.",
]


def text_of(result: Any) -> str:
    return "".join(getattr(c, "text", "") for c in result.content)


async def test_recall_text_is_mostly_memory_and_small(client: Client) -> None:
    for note in SHORT_NOTES:
        await call(client, "remember", text=note)
    result = await client.call_tool("recall", {"query": "where is the staging database?", "k": 5})
    text = text_of(result)
    memory = sum(len(r["text"]) for r in result.structured_content["results"])  # type: ignore[index]
    # Each header carries what an agent needs to act on the item (its id, its full session), so
    # for notes this short the headers are about as long as the notes themselves.
    assert len(text) <= 2_000 and memory / len(text) >= 0.4, (len(text), memory, text)
    first = result.structured_content["results"][0]  # type: ignore[index]
    assert text.splitlines()[2] == first["text"], "best first, after one header line"
    header = text.splitlines()[1]
    assert first["id"] in header and f"{first['session']}#{first['position']}" in header


async def test_remember_of_a_long_text_answers_briefly(client: Client, service: MemoryService) -> None:
    sentences = [
        f"Paragraph {i} of the design notes covers topic {i % 37} in detail, with numbers {i * 7}."
        for i in range(1_700)
    ]
    text = " ".join(sentences)[:150_000]
    result = await client.call_tool("remember", {"text": text})
    assert not result.is_error and result.structured_content is not None
    size = len(text_of(result)) + len(json.dumps(result.structured_content))
    assert size < 5_000, size
    stored = result.structured_content
    assert stored["stored"] == service.count() and len(stored["ids"]) == min(100, stored["stored"])
    assert len(stored["episodes"]) <= 5


async def test_no_answer_passes_the_documented_cap(client: Client, service: MemoryService) -> None:
    """The largest answers the limits allow stay under MAX_RESPONSE_BYTES."""
    big = " ".join(
        f"Sentence {i} about the incident, its causes and what we changed afterwards." for i in range(2_400)
    )
    for i in range(6):
        await call(client, "remember", text=big[:190_000], session=f"s{i}")
    calls = [
        (
            "recall",
            {"query": "incident causes", "k": 100, "contiguity": 5, "max_chars": 50_000, "min_score": 0},
        ),
        (
            "recall_batch",
            {"queries": ["incident"] * 4, "k": 100, "contiguity": 5, "max_chars": 50_000, "min_score": 0},
        ),
        ("predict_next", {"k": 100, "max_chars": 50_000}),
        ("index_health", {}),
    ]
    for tool, arguments in calls:
        result = await client.call_tool(tool, arguments)
        assert not result.is_error, result.content
        size = len(text_of(result).encode()) + len(json.dumps(result.structured_content).encode())
        assert size <= MAX_RESPONSE_BYTES, (tool, size)
    ids = [f"missing-{i}" for i in range(10_000)]
    refused = await client.call_tool("forget", {"ids": ids, "confirm": True})
    assert refused.is_error and len(text_of(refused).encode()) <= MAX_RESPONSE_BYTES
