"""Requests are checked strictly where they enter, and every failure reads as one sentence."""

from __future__ import annotations

from typing import Any

import pytest

from emx_mcp.errors import InvalidInput
from emx_mcp.schemas import (
    ForgetRequest,
    RecallBatchRequest,
    RecallRequest,
    RememberRequest,
    parse,
    tool_schema,
)


@pytest.mark.parametrize(
    ("model", "arguments", "message"),
    [
        (RecallRequest, {"query": "q", "k": 0}, "k must be between 1 and 100; got 0."),
        (RecallRequest, {"query": "q", "k": True}, "k must be an integer; got a boolean."),
        (RecallRequest, {"query": "q", "k": "5"}, "k must be an integer; got a string."),
        (RecallRequest, {"query": "q", "contiguity": 6}, "contiguity must be between 0 and 5; got 6."),
        (RecallRequest, {}, "query is empty; send a question or topic, or give since, until or session"),
        (RecallRequest, {"query": "q", "since": "soon"}, "since 'soon' is not a time I can read"),
        (RememberRequest, {"text": "ok", "metadata": "{}"}, "metadata must be a JSON object; got a string."),
        (RememberRequest, {"text": "ok", "session": 7}, "session must be a string; got an integer."),
        (RecallBatchRequest, {"queries": []}, "queries must hold 1 to 256 strings; got 0."),
        (RecallBatchRequest, {"queries": ["a", 3]}, "queries[1] must be a string; got an integer."),
        (ForgetRequest, {"ids": ["a"]}, "call it again with confirm=true"),
        (ForgetRequest, {"confirm": True}, "pass either ids"),
    ],
)
def test_each_problem_reads_as_one_sentence(model: Any, arguments: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse(model, arguments)
    assert message in str(caught.value)
    assert "pydantic" not in str(caught.value) and "\n" not in str(caught.value)


def test_text_limit_comes_from_the_setting() -> None:
    assert parse(RememberRequest, {"text": "x" * 50}, max_text_chars=50).text == "x" * 50
    with pytest.raises(InvalidInput, match="the limit is 49"):
        parse(RememberRequest, {"text": "x" * 50}, max_text_chars=49)
    schema = tool_schema(RememberRequest, max_text_chars=49)
    assert schema["properties"]["text"]["maxLength"] == 49
    assert "x-emx-limit" not in str(schema)


def test_timestamps_are_normalised_to_utc() -> None:
    request = parse(RememberRequest, {"text": "x", "timestamp": "2026-03-01T10:00:00+02:00"})
    assert request.timestamp == "2026-03-01T08:00:00.000000Z"


@pytest.mark.parametrize("text", ["\u200b\u200b\u200b", "\ufeff \u2060\n", "\u200d\t\u200c"])
def test_a_text_of_only_invisible_characters_is_empty(text: str) -> None:
    with pytest.raises(InvalidInput, match="text is empty"):
        parse(RememberRequest, {"text": text})
    with pytest.raises(InvalidInput, match=r"queries\[0\] is empty"):
        parse(RecallBatchRequest, {"queries": [text]})
    assert parse(RememberRequest, {"text": "\u200bword"}).text == "\u200bword"  # something to read
