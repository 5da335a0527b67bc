"""Speaker-labelled text (`Name: ...` lines): where an episode may end, and where one must begin.

A meeting transcript or a chat is a run of turns. Cut like prose, its episodes end inside a turn,
split a question from its answer, keep fragments of a few words ("Rui: Yes.") and glue a topic
opener ("Next topic, API versioning.") to the end of the previous topic. In such text:

- an episode ends only between turns (inside a turn only when the turn alone is longer than an
  episode may be);
- never between a turn that asks a question and the other speaker's reply;
- a turn that opens a topic ("Next topic, ...", "Third, ...", "Moving on", "Before the demo, ...")
  starts a new episode;
- an episode of fewer than MIN_EPISODE_CHARS characters joins its neighbour.

Text counts as dialogue when most of its non-blank lines open with a speaker label: a capitalised
name of up to four words, or a role (user, assistant, human, AI, system), then a colon.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

_LABEL = re.compile(
    r"^[ \t]*(?:(?:[A-Z\u00c0-\u00de][\w'.\-]*(?: [A-Z\u00c0-\u00de][\w'.\-]*){0,3})|"
    r"(?i:user|assistant|human|ai|system|bot|agent|me|you))[ \t]*:[ \t]+\S",
    re.MULTILINE,
)
_OPENER = re.compile(
    r"^\s*(?:next topic|next item|next up|next,|next:|new topic|moving on|let'?s move on|on to |"
    r"now,? (?:let'?s|on to|for)|turning to|(?:and )?(?:the )?(?:first|second|third|fourth|fifth|next|last|"
    r"final) (?:topic|item|point|thing|question)|(?:first|second|third|fourth|fifth|sixth|finally|lastly|"
    r"last|secondly|thirdly),|one (?:more|last) thing|another thing|before (?:we|the|that|I) [^,.?!]{1,40},|"
    r"(?:ok|okay|right|alright|so),? (?:next|moving on|let'?s (?:move|turn|talk|discuss)))",
    re.IGNORECASE,
)
# Fewer characters than this make a fragment, not an episode.
MIN_EPISODE_CHARS = 150
# Share of non-blank lines that must open with a label for the text to count as dialogue.
DIALOGUE_SHARE = 0.6


@dataclass(frozen=True, slots=True)
class Constraints:
    """Per sentence boundary (before sentence i, 0 < i < n): whether an episode may end there, or must."""

    allowed: npt.NDArray[np.bool_]  # (n + 1,)
    forced: frozenset[int]
    chars: npt.NDArray[np.int64]  # (n,) characters of each sentence


def is_dialogue(text: str) -> bool:
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) < 3:
        return False
    labelled = sum(1 for line in lines if _LABEL.match(line))
    return labelled >= DIALOGUE_SHARE * len(lines)


def constraints(text: str, spans: list[tuple[int, int]], max_sentences: int) -> Constraints | None:
    """The boundary rules for a dialogue whose sentences are `spans`; None when the text is not one."""
    if not spans or not is_dialogue(text):
        return None
    starts = [m.start() for m in _LABEL.finditer(text)]
    turn_of = np.searchsorted(np.array(starts), np.array([a for a, _ in spans]), side="right") - 1
    n = len(spans)
    allowed = np.zeros(n + 1, dtype=bool)
    forced: set[int] = set()
    turn_sizes = np.bincount(turn_of[turn_of >= 0], minlength=len(starts)) if len(starts) else np.zeros(0)
    for i in range(1, n):
        if turn_of[i] != turn_of[i - 1]:  # sentence i opens a turn
            allowed[i] = not _asks(text, spans, turn_of, i)
            if _OPENER.match(_after_label(text[spans[i][0] : spans[i][1]])):
                forced.add(i)
                allowed[i] = True
        elif turn_of[i] >= 0 and turn_sizes[turn_of[i]] > max_sentences:
            allowed[i] = True  # a turn longer than an episode may be cut inside
    chars = np.array([b - a for a, b in spans], dtype=np.int64)
    return Constraints(allowed, frozenset(forced), chars)


def _after_label(sentence: str) -> str:
    match = _LABEL.match(sentence)
    return sentence if match is None else sentence[match.end() - 1 :]


def _asks(text: str, spans: list[tuple[int, int]], turn_of: npt.NDArray[np.int64], i: int) -> bool:
    """The turn that ends before sentence i asks a question, and sentence i opens another speaker's reply."""
    previous = text[spans[i - 1][0] : spans[i - 1][1]].rstrip()
    if not previous.endswith("?"):
        return False
    return _speaker(text, spans, turn_of, i - 1) != _speaker(text, spans, turn_of, i)


def _speaker(text: str, spans: list[tuple[int, int]], turn_of: npt.NDArray[np.int64], i: int) -> str:
    first = i
    while first > 0 and turn_of[first - 1] == turn_of[i]:
        first -= 1
    head = text[spans[first][0] : spans[first][1]]
    return head.split(":", 1)[0].strip().lower()


def merge_small(bounds: list[int], n: int, rules: Constraints) -> list[int]:
    """Drop boundaries that leave an episode under MIN_EPISODE_CHARS, joining it to a neighbour.

    A fragment joins the neighbour whose shared boundary is not forced (a topic opener keeps its
    place); with both free, the smaller neighbour; with both forced (a greeting before the first
    topic, a topic of one line), the next episode, which it introduces (the last: the previous).
    """
    edges = [0, *bounds, n]
    prefix = np.concatenate([[0], np.cumsum(rules.chars)])

    def size(j: int) -> int:  # characters of episode j, between edges[j] and edges[j + 1]
        return int(prefix[edges[j + 1]] - prefix[edges[j]])

    changed = True
    while changed and len(edges) > 2:
        changed = False
        for j in range(len(edges) - 1):
            if size(j) >= MIN_EPISODE_CHARS:
                continue
            left = j > 0 and edges[j] not in rules.forced
            right = j + 1 < len(edges) - 1 and edges[j + 1] not in rules.forced
            if not left and not right:
                left = j + 1 == len(edges) - 1
            elif left and right:
                left = size(j - 1) <= size(j + 1)
            del edges[j if left else j + 1]
            changed = True
            break
    return edges[1:-1]
