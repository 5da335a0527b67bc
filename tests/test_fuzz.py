"""Property-based fuzzing of every tool through the SDK's in-memory client.

Each call gets arbitrary JSON for its arguments (wrong types, huge and empty strings, unicode with
lone surrogates and control characters, extreme numbers, random ids and dates). Every call must
end, within a deadline, in a result or in a tool error that says why; none may crash the tool
(the SDK then answers only "Error executing tool <name>" and logs the traceback). Afterwards the
event log and the index hold exactly the same events.

300 examples per tool by default; `pytest --long` runs 10,000.
"""

from __future__ import annotations

import json
import logging
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from mcp import Client, types

from emx_mcp.config import Settings
from emx_mcp.embedding import HashingEncoder
from emx_mcp.schemas import MAX_RESPONSE_BYTES
from emx_mcp.server import build_server
from emx_mcp.storage.embedded import EmbeddedStore
from tests.helpers import open_with_store, remember

TOOLS = ["remember", "recall", "recall_batch", "predict_next", "index_health", "supersede", "forget"]
CALL_DEADLINE = 60.0

# Text: any code point, lone surrogates and control characters included.
any_char = st.characters(exclude_categories=())
texts = st.one_of(
    st.text(any_char, max_size=40),
    st.text(string.whitespace, max_size=5),
    st.sampled_from(["", " ", "\x00", "\ud800", "a\udfffb", "\u202e", "🧠" * 3, "NaN", "null"]),
    # Around EMX_MAX_TEXT_CHARS (set to 5,000 here): just under, at and over the limit.
    st.builds(lambda c, n: c * n, st.sampled_from(["a", "é ", "x. "]), st.integers(4_990, 5_010)),
    # Text that repeats itself, sentence after sentence, up to the limit.
    st.builds(
        lambda c, n: c * n,
        st.sampled_from(["Build step passed. ", "ok. ", "Same again!\n"]),
        st.integers(1, 400),
    ),
)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    texts,
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(any_char, max_size=6), inner, max_size=4)
    ),
    max_leaves=8,
)
dates = st.one_of(
    st.datetimes().map(lambda d: d.isoformat()),
    st.sampled_from(
        [
            "2026-02-30",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59+14:00",
            "0001-01-01T00:00:00+01:00",  # before year 1 once in UTC
            "9999-12-31T23:59:59-01:00",  # after year 9999 once in UTC
            "2026-11-21",
            "2026-11-21T25:00",
            "yesterday",
            "",
        ]
    ),
    texts,
)
relative = st.sampled_from(
    ["yesterday", "last week", "last Tuesday", "3 days ago", "in March", "since Monday"]
)
small_ints = st.one_of(
    st.integers(-3, 110), st.integers(), st.sampled_from([0, 1, 100, 101, 2**63, -(2**63)])
)

# Values that pass validation: what a well-behaved agent sends.
words = st.text(st.characters(categories=["L", "N"]), min_size=1, max_size=12)
good_text = st.lists(words, min_size=1, max_size=30).map(lambda ws: " ".join(ws) + ".")
good_date = st.one_of(
    st.datetimes().map(lambda d: d.isoformat() + "Z"),
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),  # may leave the calendar in UTC
)
good_meta = st.dictionaries(
    st.text(string.ascii_letters, min_size=1, max_size=6),
    st.one_of(st.none(), st.booleans(), st.integers(-1000, 1000), st.text(max_size=10)),
    max_size=3,
)


Pair = tuple[st.SearchStrategy[Any], st.SearchStrategy[Any]]  # (a valid value, a hostile one)


def argument_space(ids: list[str]) -> dict[str, dict[str, Pair]]:
    """Per tool and argument: (a valid value, a hostile one)."""
    known_ids = st.sampled_from(ids)
    sessions = st.sampled_from(["s0", "s1", "never-used"])
    namespaces = st.sampled_from(["default", "other"])
    hostile_ns = st.one_of(st.sampled_from(["a/b", "", "x" * 65, "../etc"]), json_values)
    return {
        "remember": {
            "text": (good_text, st.one_of(texts, json_values)),
            "session": (sessions, st.one_of(texts, json_values)),
            "metadata": (good_meta, json_values),
            "timestamp": (good_date, st.one_of(dates, json_values)),
            "namespace": (namespaces, hostile_ns),
            "idempotency_key": (st.sampled_from(["k1", "k2", "k3"]), st.one_of(texts, json_values)),
            "supersedes": (
                st.lists(known_ids, min_size=1, max_size=2),
                st.one_of(st.lists(texts), json_values),
            ),
        },
        "recall": {
            "query": (good_text, st.one_of(texts, json_values)),
            "k": (st.integers(1, 100), st.one_of(small_ints, json_values)),
            "session": (sessions, st.one_of(texts, json_values)),
            "namespace": (namespaces, hostile_ns),
            "contiguity": (st.integers(0, 5), st.one_of(small_ints, json_values)),
            "since": (st.one_of(good_date, relative), st.one_of(dates, json_values)),
            "until": (st.one_of(good_date, relative), st.one_of(dates, json_values)),
            "now": (good_date, st.one_of(dates, json_values)),
            "include_superseded": (st.booleans(), json_values),
            "metadata": (good_meta, json_values),
            "mode": (st.sampled_from(["hybrid", "semantic", "lexical"]), json_values),
            "max_chars": (st.integers(100, 50_000), st.one_of(small_ints, json_values)),
            "min_score": (st.floats(0, 1), json_values),
        },
        "recall_batch": {
            "queries": (
                st.lists(good_text, min_size=1, max_size=20),
                st.one_of(st.lists(texts, max_size=300), json_values),
            ),
            "k": (st.integers(1, 100), st.one_of(small_ints, json_values)),
            "contiguity": (st.integers(0, 5), st.one_of(small_ints, json_values)),
            "since": (good_date, st.one_of(dates, json_values)),
            "metadata": (good_meta, json_values),
            "max_chars": (st.integers(100, 800), st.one_of(small_ints, json_values)),
        },
        "predict_next": {
            "session": (sessions, st.one_of(texts, json_values)),
            "after_event_id": (known_ids, st.one_of(texts, json_values)),
            "k": (st.integers(1, 100), st.one_of(small_ints, json_values)),
            "namespace": (namespaces, hostile_ns),
            "max_chars": (st.integers(100, 50_000), st.one_of(small_ints, json_values)),
        },
        "index_health": {"namespace": (namespaces, st.one_of(hostile_ns, texts))},
        "supersede": {
            "ids": (
                st.lists(known_ids, min_size=1, max_size=3),
                st.one_of(st.lists(texts, max_size=4), json_values),
            ),
            "by": (known_ids, st.one_of(texts, json_values)),
            "namespace": (namespaces, hostile_ns),
        },
        "forget": {
            "ids": (
                st.lists(known_ids, min_size=1, max_size=3),
                st.one_of(st.lists(texts, max_size=4), json_values),
            ),
            "session": (sessions, st.one_of(texts, json_values)),
            "namespace": (namespaces, hostile_ns),
            "confirm": (st.just(True), json_values),
        },
    }


@st.composite
def arguments(draw: st.DrawFn, space: dict[str, Pair]) -> dict[str, Any]:
    """Half the calls valid, most of the rest valid but for one argument, some hostile throughout."""
    mode = draw(st.sampled_from(["valid"] * 5 + ["one hostile"] * 4 + ["hostile"]))
    spoiled = draw(st.sampled_from(sorted(space)))
    out: dict[str, Any] = {}
    for name, (good, bad) in space.items():
        hostile = mode == "hostile" or (mode == "one hostile" and name == spoiled)
        if draw(st.booleans()) or hostile:  # a valid argument is often simply left out
            out[name] = draw(bad if hostile else good)
    if mode == "hostile" and draw(st.booleans()):
        out[draw(st.text(string.ascii_lowercase, min_size=1, max_size=8))] = draw(json_values)
    return out


@pytest.fixture
def portal_client(tmp_path: Path) -> Iterator[tuple[anyio.from_thread.BlockingPortal, Client, EmbeddedStore]]:
    settings = Settings(data_dir=tmp_path / "data", max_text_chars=5_000)
    service, store = open_with_store(settings, HashingEncoder(dim=32))
    for i in range(40):
        remember(service, f"seed note {i}. It has two sentences about topic {i % 3}.", session=f"s{i % 2}")
    with anyio.from_thread.start_blocking_portal() as portal:
        client = portal.wrap_async_context_manager(Client(build_server(service)))
        with client as connected:
            yield portal, connected, store
    service.close()


def sendable(tool: str, args: dict[str, Any]) -> bool:
    try:
        types.CallToolRequestParams(name=tool, arguments=args).model_dump(mode="json", by_alias=True)
    except UnicodeEncodeError:
        return False
    return True


def examples(request: pytest.FixtureRequest) -> int:
    return 10_000 if request.config.getoption("--long") else 300


@pytest.mark.parametrize("tool", TOOLS)
def test_every_call_ends_in_a_result_or_a_clear_error(
    tool: str,
    portal_client: tuple[anyio.from_thread.BlockingPortal, Client, EmbeddedStore],
    request: pytest.FixtureRequest,
    caplog: pytest.LogCaptureFixture,
) -> None:
    portal, client, store = portal_client
    outcomes = {"result": 0, "error": 0}

    async def call(args: dict[str, Any]) -> Any:
        with anyio.fail_after(CALL_DEADLINE):  # a hung server fails the test instead of blocking it
            return await client.call_tool(tool, args)

    ids = [e.id for e in store.log.by_seqs(list(range(1, 100))).values()]

    @settings(
        max_examples=examples(request),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
        database=None,
    )
    @given(args=arguments(argument_space(ids)[tool]))
    def one_call(args: dict[str, Any]) -> None:
        # The SDK client cannot serialise a lone surrogate in an object key: such a call never
        # leaves the client (raw JSON carrying one is sent to the real server in test_stdio.py).
        assume(sendable(tool, args))
        result = portal.call(call, args)
        text = "".join(getattr(c, "text", "") for c in result.content)
        structured = json.dumps(result.structured_content).encode()
        size = len(text.encode("utf-8", "surrogatepass")) + len(structured)
        assert size <= MAX_RESPONSE_BYTES, f"{tool} answered {size:,} bytes to {args!r}"
        if result.is_error:
            message = " ".join(getattr(c, "text", "") for c in result.content)
            # A crash reaches the client as exactly this; a deliberate error says why after it.
            assert message.strip() != f"Error executing tool {tool}", f"{tool} crashed on {args!r}"
            assert len(message) > len(f"Error executing tool {tool}: ") + 5, message
            outcomes["error"] += 1
        else:
            assert result.structured_content is not None
            outcomes["result"] += 1

    with caplog.at_level(logging.ERROR):
        one_call()
    crashes = [r for r in caplog.records if "unexpected exception" in r.getMessage()]
    assert not crashes, crashes[0].getMessage()
    assert outcomes["result"] > 0 and outcomes["error"] > 0, outcomes  # both paths were exercised
    # The log and the index agree, event for event, in every namespace.
    for namespace in {*store.namespaces(), "default", "other"}:
        index = store.index(namespace)
        indexed = set() if index is None else set(index.ids().tolist())
        assert indexed == set(store.log.seqs(namespace).tolist()), namespace
    # And the server still answers.
    health = portal.call(client.call_tool, "index_health", {})
    assert not health.is_error and health.structured_content is not None
    assert health.structured_content["vectors"] == health.structured_content["events_in_log"]
