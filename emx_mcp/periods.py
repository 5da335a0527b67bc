"""Time expressions as windows: "yesterday", "last week", "last Tuesday", "3 days ago", "in March".

An agent asks about time the way people talk: `resolve` turns such an expression into a window
[start, end] of instants, against a given `now` whose time zone sets where days begin. `find`
spots one inside a question ("what failed last Tuesday?") and says where it is.

Calendar words mean calendar periods: "last week" is Monday to Sunday of the previous week,
"last month" the previous calendar month; "the last 7 days" and "the past 2 weeks" are rolling
periods ending now. "last Tuesday" is the latest Tuesday before today, "Tuesday" the latest
Tuesday up to today. A month or date without a year is the latest one that has begun. Parts of a
day: morning 05:00-12:00, afternoon 12:00-17:00, evening 17:00-22:00, night 18:00-06:00.

Absolute dates with month names ("16 November", "Nov 16th 2025") are read by python-dateutil;
the periods are computed here, because a date parser gives one instant where an agent means a
window ("last week" is not "7 days before now at this hour").
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from dateutil import parser as date_parser
from dateutil.relativedelta import relativedelta

EXAMPLES = "'yesterday', 'last week', '3 days ago'"


@dataclass(frozen=True, slots=True)
class Window:
    """An interval of time (aware datetimes, both ends inclusive) and the words that named it."""

    start: datetime | None
    end: datetime | None
    text: str
    exact: bool = True  # names a definite period; False for vague words such as "recently"


_NUMBERS = {
    "a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "a couple of": 2, "a few": 3,
    "couple of": 2, "few": 3,
}  # fmt: skip
_WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
_MONTHS = [
    "january", "february", "march", "april", "may", "june", "july", "august", "september",
    "october", "november", "december",
]  # fmt: skip
_MONTH_ABBREVIATIONS = {m[:3]: i for i, m in enumerate(_MONTHS)} | {"sept": 8}
_PARTS = {"morning": (5, 12), "afternoon": (12, 17), "evening": (17, 22), "night": (18, 30)}
_UNITS = {"minute": "minutes", "hour": "hours", "day": "days", "week": "weeks", "fortnight": "weeks",
          "month": "months", "year": "years"}  # fmt: skip

_NUMBER = r"(?:\d{1,4}|" + "|".join(sorted(map(re.escape, _NUMBERS), key=len, reverse=True)) + ")"
_UNIT = r"(?:minute|hour|day|week|fortnight|month|year)s?"
_WEEKDAY = "(?:" + "|".join(_WEEKDAYS) + ")"
_MONTH = "(?:" + "|".join(_MONTHS) + r"|(?:jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec)\.?)"
_PART = "(?:morning|afternoon|evening|night)"
_ORDINAL = r"\d{1,2}(?:st|nd|rd|th)?"
_YEAR = r"(?:19|20)\d\d"


def _day_start(moment: datetime) -> datetime:
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def _day_end(moment: datetime) -> datetime:
    return moment.replace(hour=23, minute=59, second=59, microsecond=999_999)


def _days(first: datetime, last: datetime) -> tuple[datetime, datetime]:
    return _day_start(first), _day_end(last)


def _week_of(moment: datetime) -> tuple[datetime, datetime]:
    monday = moment - timedelta(days=moment.weekday())
    return _days(monday, monday + timedelta(days=6))


def _month_of(moment: datetime) -> tuple[datetime, datetime]:
    first = moment.replace(day=1)
    return _days(first, first + relativedelta(months=1) - timedelta(days=1))


def _year_of(moment: datetime) -> tuple[datetime, datetime]:
    return _days(moment.replace(month=1, day=1), moment.replace(month=12, day=31))


def _part_of(day: datetime, part: str) -> tuple[datetime, datetime]:
    first, last = _PARTS[part]
    start = _day_start(day) + timedelta(hours=first)
    return start, start + timedelta(hours=last - first) - timedelta(microseconds=1)


def _count(text: str) -> int:
    return int(text) if text.isdigit() else _NUMBERS[text]


def _weeks(count: str, unit: str) -> int:
    """The count, in the unit's own terms: a fortnight is two weeks."""
    return _count(count) * (2 if unit.startswith("fortnight") else 1)


def _unit(text: str) -> str:
    return _UNITS[text.rstrip("s") if text.rstrip("s") in _UNITS else text]


def _ago(now: datetime, n: int, unit: str) -> tuple[datetime, datetime]:
    """The calendar period of `unit` that held the moment `n` units before now."""
    if unit in ("minutes", "hours"):
        size = timedelta(**{unit: 1})
        moment = now - n * size
        return moment - size, min(now, moment + size)
    moment = now - relativedelta(**{unit: n})
    return {"days": lambda m: _days(m, m), "weeks": _week_of, "months": _month_of, "years": _year_of}[unit](
        moment
    )


def _rolling(now: datetime, n: int, unit: str) -> tuple[datetime, datetime]:
    """The last `n` units up to now; whole days for days and longer."""
    start = now - relativedelta(**{unit: n})
    return (start if unit in ("minutes", "hours") else _day_start(start)), now


def _weekday(now: datetime, name: str, which: str) -> datetime:
    """The day called `name`: 'last' before today, '' up to today, 'this' in this week, 'next' after."""
    target = _WEEKDAYS.index(name)
    today = now.weekday()
    if which == "this":
        return now + timedelta(days=target - today)
    if which == "next":
        return now + timedelta(days=(target - today) % 7 or 7)
    back = (today - target) % 7
    if which == "last" and back == 0:
        back = 7
    return now - timedelta(days=back)


def _month_index(text: str) -> int:
    """0 for January."""
    text = text.rstrip(".")
    return (
        _MONTHS.index(text)
        if text in _MONTHS
        else _MONTH_ABBREVIATIONS[text[:4] if text == "sept" else text[:3]]
    )


def _named_month(now: datetime, month: int, year: int | None, which: str) -> tuple[datetime, datetime]:
    """A month by name: of `year`, or the latest one that has begun ('last' before this month)."""
    number = month + 1
    if year is None:
        year = now.year if number <= now.month - (1 if which == "last" else 0) else now.year - 1
        if which == "this":
            year = now.year
        elif which == "next":
            year = now.year if number > now.month else now.year + 1
    return _month_of(now.replace(year=year, month=number, day=1))


def _date(now: datetime, text: str) -> tuple[datetime, datetime]:
    """A calendar date with a month name or in ISO form; without a year, the latest one not after today."""
    default = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    moment = date_parser.parse(text, default=default).replace(tzinfo=now.tzinfo)
    if not re.search(_YEAR, text) and moment.date() > now.date():
        moment -= relativedelta(years=1)
    return _days(moment, moment)


# Each rule: a pattern (matched whole, lower case) and how it becomes a window. Longer phrasings
# come first so that "the day before yesterday" is not read as "yesterday".
Rule = tuple[str, Callable[[datetime, re.Match[str]], tuple[datetime, datetime]], bool]
_RULES: list[Rule] = [
    (r"(?:right )?now", lambda n, m: (n, n), True),
    (r"the day before yesterday", lambda n, m: _days(n - timedelta(days=2), n - timedelta(days=2)), True),
    (r"earlier today", lambda n, m: (_day_start(n), n), True),
    (r"today", lambda n, m: _days(n, n), True),
    (r"yesterday", lambda n, m: _days(n - timedelta(days=1), n - timedelta(days=1)), True),
    (r"tomorrow", lambda n, m: _days(n + timedelta(days=1), n + timedelta(days=1)), True),
    (r"(?:this|earlier this) (morning|afternoon|evening)", lambda n, m: _part_of(n, m[1]), True),
    (r"tonight", lambda n, m: _part_of(n, "night"), True),
    (r"last night", lambda n, m: _part_of(n - timedelta(days=1), "night"), True),
    (rf"yesterday ({_PART})", lambda n, m: _part_of(n - timedelta(days=1), m[1]), True),
    (
        rf"(?:(last|this|next) )?({_WEEKDAY}) ({_PART})",
        lambda n, m: _part_of(_weekday(n, m[2], m[1] or ""), m[3]),
        True,
    ),
    (rf"(?:(last|this|next) )?({_WEEKDAY})", lambda n, m: _days(*[_weekday(n, m[2], m[1] or "")] * 2), True),
    (r"(?:the |this )?weekend", lambda n, m: _weekend(n, ""), True),
    (r"last weekend", lambda n, m: _weekend(n, "last"), True),
    (
        r"the other day|a few days ago",
        lambda n, m: _days(n - timedelta(days=6), n - timedelta(days=2)),
        False,
    ),
    (rf"({_NUMBER}) ({_UNIT}) ago", lambda n, m: _ago(n, _weeks(m[1], m[2]), _unit(m[2])), True),
    (
        rf"(?:in |over |during |within )?(?:the )?(?:last|past|previous) ({_NUMBER}) ({_UNIT})",
        lambda n, m: _rolling(n, _weeks(m[1], m[2]), _unit(m[2])),
        True,
    ),
    (r"(?:the )?(?:last|past|previous) (day|hour)", lambda n, m: _rolling(n, 1, _unit(m[1])), True),
    (r"(?:last|previous) week", lambda n, m: _week_of(n - timedelta(days=7)), True),
    (r"this week", lambda n, m: _week_of(n), True),
    (r"next week", lambda n, m: _week_of(n + timedelta(days=7)), True),
    (r"(?:last|previous) month", lambda n, m: _month_of(n - relativedelta(months=1)), True),
    (r"this month", lambda n, m: _month_of(n), True),
    (r"(?:last|previous) year", lambda n, m: _year_of(n - relativedelta(years=1)), True),
    (r"this year", lambda n, m: _year_of(n), True),
    (
        rf"(?:(last|this|next) )?({_MONTH})(?: ({_YEAR}))?",
        lambda n, m: _named_month(n, _month_index(m[2]), int(m[3]) if m[3] else None, m[1] or ""),
        True,
    ),
    (rf"({_YEAR})", lambda n, m: _year_of(n.replace(year=int(m[1]), month=1, day=1)), True),
    (rf"{_ORDINAL} (?:of )?{_MONTH}(?:,? {_YEAR})?", lambda n, m: _date(n, m[0]), True),
    (rf"{_MONTH} {_ORDINAL}(?:,? {_YEAR})?", lambda n, m: _date(n, m[0]), True),
    (r"\d{4}-\d{2}-\d{2}", lambda n, m: _date(n, m[0]), True),
    (r"recently|lately|of late", lambda n, m: _rolling(n, 7, "days"), False),
]
_COMPILED = [(re.compile(pattern), build, exact) for pattern, build, exact in _RULES]


def _weekend(now: datetime, which: str) -> tuple[datetime, datetime]:
    saturday = now - timedelta(days=(now.weekday() - 5) % 7)
    if which == "last" and now.weekday() >= 5:
        saturday -= timedelta(days=7)
    return _days(saturday, saturday + timedelta(days=1))


def _clean(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower().replace(",", ", ")).replace(" ,", ",").strip(" ,")


def _single(text: str, now: datetime) -> Window | None:
    """One period, with an optional leading 'on', 'in', 'at', 'during', 'from' or 'of'."""
    text = re.sub(r"^(?:on|in|at|during|from|of) (?=\S)", "", text)
    for pattern, build, exact in _COMPILED:
        match = pattern.fullmatch(text)
        if match:
            try:
                start, end = build(now, match)
            except (ValueError, KeyError, OverflowError):
                return None
            return Window(start, end, text, exact)
    return None


def resolve(text: str, now: datetime) -> Window | None:
    """The window `text` names, seen from `now` (aware); None if it is not a time expression here.

    Besides single periods: "since X" (from X's start up to now), "until X" / "before X" (up to X's
    end, or its start for "before"), "after X", "between X and Y", "from X to Y". A period that
    would leave the calendar (before year 1, after 9999) is not one.
    """
    try:
        window = _resolve(text, now)
        for end in (window.start, window.end) if window is not None else ():
            if end is not None:
                end.astimezone(UTC)  # must stay in the calendar in UTC too, where it is compared
        return window
    except (OverflowError, ValueError):
        return None


def _resolve(text: str, now: datetime) -> Window | None:
    cleaned = _clean(text)
    if not cleaned:
        return None
    for pattern, pick in (
        (r"(?:between|from) (.+?) (?:and|to|until|till) (.+)", "range"),
        (r"since (.+)", "since"),
        (r"after (.+)", "after"),
        (r"(?:until|till|up to) (.+)", "until"),
        (r"before (.+)", "before"),
    ):
        match = re.fullmatch(pattern, cleaned)
        if match is None:
            continue
        first = _single(match[1], now)
        if first is None:
            continue
        if pick == "range":
            last = _single(match[2], now)
            if last is None or (first.start and last.end and last.end < first.start):
                continue
            return Window(first.start, last.end, cleaned, first.exact and last.exact)
        if pick == "since":
            return Window(first.start, now, cleaned, first.exact)
        if pick == "after":
            return Window(first.end, now, cleaned, first.exact)
        if pick == "until":
            return Window(None, first.end, cleaned, first.exact)
        assert first.start is not None
        return Window(None, first.start - timedelta(microseconds=1), cleaned, first.exact)
    return _single(cleaned, now)


# -- inside a question ---------------------------------------------------------------------------

# Words that name a time only with a cue around them: "may", "march", "sun", "second" are also
# ordinary words; so "in May", "last March", "May 3" are times, a bare "may" is not.
_AMBIGUOUS = re.compile(rf"^(?:(?:this|next) )?(?:{_MONTH}|\d{{4}})$")
_CUED = re.compile(r"^(?:in|on|during|since|last|until|before|after|from|by|of) ")
# "today" and "now" are also how people ask about the present state ("what is the limit today?"):
# they name a window only in a question about what happened.
_PRESENT = {"today"}
_PAST_TENSE = re.compile(r"\b(?:did|was|were|happened|had|went|got|came|ed)\b|\b\w{3,}ed\b", re.I)
_SPLIT = re.compile(r"[^\w\-']+")


# A word that every time expression holds at least one of: a number, a day, a month, a unit, ...
_TIME_WORD = re.compile(
    rf"(?:.*\d.*|{_WEEKDAY}|{_MONTH}|{_PART}|{_UNIT}|today|tonight|yesterday|weekend|ago|recently|"
    r"lately|late)"
)
# Only the start of a long query is searched for a time (a question is short; a pasted text is not).
FIND_CHARS = 2_000


@dataclass(frozen=True, slots=True)
class Found:
    window: Window
    start: int  # character span of the expression in the question
    end: int


def find(question: str, now: datetime) -> Found | None:
    """The longest time expression in `question` (with its span), if it names one."""
    # Lower case letter by letter, keeping every offset ("İ" lowers to two characters).
    lowered = "".join(c if len(c.lower()) != 1 else c.lower() for c in question[:FIND_CHARS])
    words = [(m.start(), m.end()) for m in re.finditer(r"[\w\-']+", lowered)]
    timely = [_TIME_WORD.fullmatch(lowered[a:b]) is not None for a, b in words]
    best: Found | None = None
    for i in range(len(words)):
        for j in range(min(len(words), i + 8), i, -1):
            a, b = words[i][0], words[j - 1][1]
            if best is not None and b - a <= best.end - best.start:
                break
            if not any(timely[i:j]):  # every expression holds a word like these
                continue
            phrase = lowered[a:b]
            window = resolve(phrase, now)
            if window is None or not _plausible(phrase, question, a):
                continue
            best = Found(window, a, b)
            break
    return best


def _plausible(phrase: str, question: str, start: int) -> bool:
    if phrase in ("now", "right now"):
        return False
    if phrase in _PRESENT:
        return bool(_PAST_TENSE.search(question))
    if _AMBIGUOUS.fullmatch(phrase):
        before = question[:start].lower().split()
        return bool(before) and _CUED.match(before[-1] + " ") is not None
    return True


def utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)
