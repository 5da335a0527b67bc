"""How recall reads a question: its time expression, whether it lists a period, whether it asks what came
right before or after an event.

- "what failed last Tuesday?": the words "last Tuesday" become a window (periods.py) and are left out
  of the text searched, so that an episode merely saying "Tuesday" does not win on that word.
- "what did we do last week?": nothing is left to search once the time and the words of any
  question about activity ("what did we do", "work on", "happen") are set aside, so recall lists
  the period in time order.
- "what did we do right after the deploy failed?": the event is "the deploy failed", and the
  answer is the episode after it (then the event itself).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from emx_mcp import periods
from emx_mcp.storage import lexical

Direction = Literal["after", "before"]
Prefers = Literal["newer", "newest", "older"]

# Words of a question about activity in general: with only these left, the question lists a period.
_ACTIVITY = frozenset(
    [
        "do",
        "done",
        "doing",
        "work",
        "worked",
        "working",
        "happen",
        "happened",
        "happening",
        "go",
        "going",
        "went",
        "get",
        "got",
        "getting",
        "make",
        "made",
        "anything",
        "something",
        "stuff",
        "things",
        "thing",
        "up",
        "on",
        "new",
        "been",
        "there",
        "us",
        "together",
        "back",
        "ask",
        "asked",
        "say",
        "said",
        "tell",
        "told",
        "talk",
        "talked",
        "discuss",
        "discussed",
        "note",
        "noted",
        "store",
        "stored",
        "remember",
        "memory",
        "memories",
    ]
)
# "what did we do right after X?", "what happened just before X?", "what came after X?": the question
# asks for a step in time, not for X itself.
_SEQUENCE = re.compile(
    r"^\s*(?:and\s+)?what\s+(?:did\s+[\w' ]{1,30}?\s+(?:do|work\s+on|try)|happened|came|was\s+done|"
    r"(?:was|were)\s+(?:the\s+)?next(?:\s+step)?|did\s+[\w' ]{1,30}?\s+do\s+next)\s+"
    r"(?:(?:right|just|immediately|directly|shortly|soon)\s+)?"
    r"(?P<direction>after|before|following|preceding)\s+(?P<anchor>.+?)[\s?.!]*$",
    re.IGNORECASE | re.DOTALL,
)
_FOLLOWED = re.compile(
    r"^\s*what\s+(?P<verb>followed|came after|happened after|preceded|came before|happened before)\s+"
    r"(?P<anchor>.+?)[\s?.!]*$",
    re.IGNORECASE | re.DOTALL,
)


# A question that asks for the current state of something: of close competitors, the newest wins.
_NEWEST = re.compile(
    r"\b(?:now|currently|current|latest|these days|nowadays|at the moment|at present|so far|still|anymore|"
    r"any more|most recent(?:ly)?|up to date|newest|today)\b",
    re.IGNORECASE,
)
# ... one that asks how things were at first: the older wins.
_OLDEST = re.compile(
    r"\b(?:initially|originally|at first|at the start|in the beginning|used to|previously|formerly|"
    r"first (?:time|version)|before (?:the|it|that) changed|earliest)\b",
    re.IGNORECASE,
)
# A question about the past: "when did ...", "what was ...", "what happened ...".
_PAST = re.compile(r"\b(?:did|was|were|had|happened|went|came)\b", re.IGNORECASE)
# A question (rather than a few key words): it opens with a question word or a verb of asking.
_QUESTION = re.compile(
    r"^\s*(?:what|which|who|whom|whose|where|when|why|how|is|are|am|was|were|do|does|did|have|has|had|"
    r"can|could|should|would|will|tell|remind|list|show|give|find)\b",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class Reading:
    """What recall searches for one question."""

    text: str  # the words to search: the question without its time expression (or the event, for a sequence)
    found: periods.Found | None = None  # a time expression in the question
    listing: bool = False  # nothing to search: list the window or session in time order
    direction: Direction | None = None  # the question asks what came right after / before an event
    # Of two close competitors on one subject, which wins: "newer" for a question in the present,
    # "newest" (by a wider margin) for one about the current state, "older" for one about how
    # things were at first; None for a question about a past event, a few key words (an
    # identifier looked up), or an event's neighbour.
    prefers: Prefers | None = None


def read(question: str, now: datetime) -> Reading:
    """Read a question (possibly empty) asked at `now`."""
    if not question.strip():
        return Reading("", listing=True)
    found = periods.find(question, now)
    text = question if found is None else (question[: found.start] + " " + question[found.end :]).strip()
    direction, anchor = _sequence(text, now)
    if direction is not None and anchor:
        return Reading(anchor, found, direction=direction)
    content = [w for w in lexical.terms(text) if w not in _ACTIVITY]
    if found is not None and not content:
        return Reading(text, found, listing=True)
    return Reading(text, found, prefers=_prefers(question))


def _prefers(question: str) -> Prefers | None:
    if _OLDEST.search(question):
        return "older"
    if _NEWEST.search(question):
        return "newest"
    if _PAST.search(question):
        return None  # a question about an event: no statement of it is more current than another
    return "newer" if _QUESTION.match(question) else None


def _sequence(text: str, now: datetime) -> tuple[Direction | None, str]:
    match = _FOLLOWED.match(text)
    if match is not None:
        verb = match["verb"].lower()
        return ("before" if "prece" in verb or "before" in verb else "after"), match["anchor"]
    match = _SEQUENCE.match(text)
    if match is None or periods.resolve(match["anchor"], now) is not None:
        return None, ""
    anchor = match["anchor"]
    if not [w for w in lexical.terms(anchor) if w not in _ACTIVITY]:
        return None, ""
    word = match["direction"].lower()
    return ("before" if word in ("before", "preceding") else "after"), anchor
