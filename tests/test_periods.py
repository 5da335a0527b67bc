"""Time expressions become windows against a fixed `now`: calendar periods, edges of months and years,
the zone of `now` deciding where days begin."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from emx_mcp.periods import find, resolve

UTC = UTC
# Tuesday 24 November 2026, 10:00 UTC.
NOW = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


def day(text: str, now: datetime = NOW) -> tuple[str, str]:
    window = resolve(text, now)
    assert window is not None and window.start is not None and window.end is not None, text
    return window.start.isoformat(), window.end.isoformat()


@pytest.mark.parametrize(
    ("text", "start", "end"),
    [
        ("yesterday", "2026-11-23T00:00:00+00:00", "2026-11-23T23:59:59.999999+00:00"),
        ("today", "2026-11-24T00:00:00+00:00", "2026-11-24T23:59:59.999999+00:00"),
        ("last week", "2026-11-16T00:00:00+00:00", "2026-11-22T23:59:59.999999+00:00"),
        ("this week", "2026-11-23T00:00:00+00:00", "2026-11-29T23:59:59.999999+00:00"),
        ("last Tuesday", "2026-11-17T00:00:00+00:00", "2026-11-17T23:59:59.999999+00:00"),
        ("on Tuesday", "2026-11-24T00:00:00+00:00", "2026-11-24T23:59:59.999999+00:00"),
        ("Saturday", "2026-11-21T00:00:00+00:00", "2026-11-21T23:59:59.999999+00:00"),
        ("3 days ago", "2026-11-21T00:00:00+00:00", "2026-11-21T23:59:59.999999+00:00"),
        ("two weeks ago", "2026-11-09T00:00:00+00:00", "2026-11-15T23:59:59.999999+00:00"),
        ("this morning", "2026-11-24T05:00:00+00:00", "2026-11-24T11:59:59.999999+00:00"),
        ("last night", "2026-11-23T18:00:00+00:00", "2026-11-24T05:59:59.999999+00:00"),
        ("in March", "2026-03-01T00:00:00+00:00", "2026-03-31T23:59:59.999999+00:00"),
        ("in December", "2025-12-01T00:00:00+00:00", "2025-12-31T23:59:59.999999+00:00"),
        ("last month", "2026-10-01T00:00:00+00:00", "2026-10-31T23:59:59.999999+00:00"),
        ("last year", "2025-01-01T00:00:00+00:00", "2025-12-31T23:59:59.999999+00:00"),
        ("16 November", "2026-11-16T00:00:00+00:00", "2026-11-16T23:59:59.999999+00:00"),
        ("Dec 3rd", "2025-12-03T00:00:00+00:00", "2025-12-03T23:59:59.999999+00:00"),
        ("the last 7 days", "2026-11-17T00:00:00+00:00", "2026-11-24T10:00:00+00:00"),
        ("since Monday", "2026-11-23T00:00:00+00:00", "2026-11-24T10:00:00+00:00"),
        ("last weekend", "2026-11-21T00:00:00+00:00", "2026-11-22T23:59:59.999999+00:00"),
        ("a fortnight ago", "2026-11-09T00:00:00+00:00", "2026-11-15T23:59:59.999999+00:00"),
    ],
)
def test_expressions_name_calendar_windows(text: str, start: str, end: str) -> None:
    assert day(text) == (start, end)


def test_month_and_year_edges() -> None:
    new_year = datetime(2027, 1, 1, 9, 0, tzinfo=UTC)  # a Friday
    assert day("yesterday", new_year) == ("2026-12-31T00:00:00+00:00", "2026-12-31T23:59:59.999999+00:00")
    assert day("last month", new_year) == ("2026-12-01T00:00:00+00:00", "2026-12-31T23:59:59.999999+00:00")
    assert day("last week", new_year) == ("2026-12-21T00:00:00+00:00", "2026-12-27T23:59:59.999999+00:00")
    assert day("last year", new_year) == ("2026-01-01T00:00:00+00:00", "2026-12-31T23:59:59.999999+00:00")
    march_first = datetime(2028, 3, 1, 12, 0, tzinfo=UTC)  # 2028 is a leap year
    assert day("yesterday", march_first)[0] == "2028-02-29T00:00:00+00:00"
    assert day("last month", march_first)[1] == "2028-02-29T23:59:59.999999+00:00"
    assert day("a month ago", datetime(2026, 3, 31, tzinfo=UTC))[0] == "2026-02-01T00:00:00+00:00"


def test_the_zone_of_now_decides_where_days_begin() -> None:
    # 00:30 on Wednesday in Lisbon's summer (+01:00) is still Tuesday in UTC.
    lisbon = datetime(2026, 7, 15, 0, 30, tzinfo=timezone(timedelta(hours=1)))
    start, end = day("yesterday", lisbon)
    assert (start, end) == ("2026-07-14T00:00:00+01:00", "2026-07-14T23:59:59.999999+01:00")
    tokyo = datetime(2026, 11, 24, 8, 0, tzinfo=timezone(timedelta(hours=9)))
    assert day("today", tokyo)[0] == "2026-11-24T00:00:00+09:00"


def test_what_is_not_a_time_is_none() -> None:
    for text in (
        "last blursday",
        "soon",
        "the day after the launch",
        "",
        "OPS-4411",
        "between Monday and Friday",
        "before 0001-01-01",  # would leave the calendar
    ):
        assert resolve(text, NOW) is None, text
    # A day that ends past 9999-12-31 in UTC is not a window either.
    assert resolve("today", datetime(9999, 12, 31, 20, tzinfo=timezone(timedelta(hours=-2)))) is None


def test_vague_words_are_vague_even_where_a_rule_for_exact_ones_matches() -> None:
    window = resolve("a few days ago", NOW)
    assert window is not None and not window.exact


def test_spans_stay_right_after_letters_whose_lower_case_is_longer() -> None:
    question = "İİİ trip: what happened yesterday?"
    found = find(question, NOW)
    assert found is not None and question[found.start : found.end] == "yesterday"


@pytest.mark.parametrize(
    ("question", "said"),
    [
        ("What went wrong with the deploy last Tuesday?", "last Tuesday"),
        ("What did we do yesterday?", "yesterday"),
        ("what happened in May?", "in May"),
        ("What did we work on 3 days ago?", "on 3 days ago"),
        ("What did we do today?", "today"),
    ],
)
def test_a_time_inside_a_question_is_found(question: str, said: str) -> None:
    found = find(question, NOW)
    assert found is not None and question[found.start : found.end] == said


@pytest.mark.parametrize(
    "question",
    [
        "What may we need for the migration?",  # "may" is a verb here
        "What is the rate limit today?",  # "today" asks about the present state, not a period
        "Who approved CR-119?",
        "OPS-2024 status",
        "Where does the user live now?",
    ],
)
def test_ordinary_words_are_not_taken_for_times(question: str) -> None:
    assert find(question, NOW) is None
