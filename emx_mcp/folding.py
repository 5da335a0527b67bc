"""Which episodes are one memory stored more than once, and which of them recall shows.

Recall folds two episodes only when showing one of them cannot change a fact: their texts are the
same once case, spacing and punctuation are set aside, or they are nearly the same (vectors at
cosine 0.97 or more) and every number and identifier of one is in the other, in the same
multiplicity. "Deploy ticket OPS-4411 was approved by Dana." and the same with OPS-4412 are two
memories; "Staging creds rotate every 30 days." stored twice is one, shown once with a count.

Of a group, recall shows the member that matched best; among members with that same text, the
newest.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np

from emx_mcp.embedding import Vectors
from emx_mcp.storage.records import Event

# Episodes whose vectors are this similar, and whose numbers and identifiers agree, are one memory.
NEAR_SIMILARITY = 0.97

_WORD = re.compile(r"[^\W_]+(?:[-_./:][^\W_]+)*", re.UNICODE)
# A number, or a word with a capital after its first letter (OPS, PostgreSQL, iPhone).
_CODE = re.compile(r"\d|.[A-Z]")


def normalised(text: str) -> str:
    """The text's words, case-folded, in order: what is left once case, spacing and punctuation go."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(_WORD.findall(folded))


def marked(text: str) -> Counter[str]:
    """Its numbers, identifiers and names, as a multiset.

    A word counts when it holds a digit or a capital after its first letter, or starts with a
    capital anywhere but at the start of a sentence ("Dana", "Lisbon"; not "The").
    """
    text = unicodedata.normalize("NFKC", text)
    out: Counter[str] = Counter()
    for match in _WORD.finditer(text):
        word = match.group()
        k = match.start() - 1
        while k >= 0 and text[k].isspace():  # the last character before the word, spaces aside
            k -= 1
        opens_sentence = k < 0 or text[k] in ".!?:;\"'(-"
        if _CODE.search(word) or (word[0].isupper() and not opens_sentence):
            out[word] += 1
    return out


class _Keys:
    """The normalised text and the marked words of each text, each computed once, when first asked."""

    def __init__(self, texts: Sequence[str]) -> None:
        self.texts = texts
        self._normal: dict[int, str] = {}
        self._marks: dict[int, Counter[str]] = {}

    def normal(self, i: int) -> str:
        if i not in self._normal:
            self._normal[i] = normalised(self.texts[i])
        return self._normal[i]

    def marks(self, i: int) -> Counter[str]:
        if i not in self._marks:
            self._marks[i] = marked(self.texts[i])
        return self._marks[i]

    def same(self, i: int, j: int, similarity: float) -> bool:
        """True when showing text i instead of text j (vectors `similarity` apart) changes no fact."""
        if similarity < CLOSE:
            return False
        if self.normal(i) == self.normal(j):
            return True
        return similarity >= NEAR_SIMILARITY and self.marks(i) == self.marks(j)


def same_memory(a: Event, va: Vectors, b: Event, vb: Vectors) -> bool:
    """True when showing one of the two episodes instead of the other changes no fact."""
    return _Keys([a.text, b.text]).same(0, 1, float(va @ vb))


# Texts the same but for case, spacing and punctuation embed at least this close: below it, no
# pair is compared word by word.
CLOSE = 0.9

T = TypeVar("T")


def fold(
    items: Sequence[T], event: Callable[[T], Event], vector: Callable[[T], Vectors]
) -> list[tuple[T, list[T]]]:
    """Group `items` (best first) into memories: (the one to show, the others), best group first."""
    if not items:
        return []
    vectors = np.vstack([vector(i) for i in items])
    similarity = vectors @ vectors.T  # (n, n): only pairs at CLOSE or more can be one memory
    if not np.triu(similarity >= CLOSE, 1).any():  # the usual case: no two are even close
        return [(item, []) for item in items]
    keys = _Keys([event(i).text for i in items])
    heads: list[int] = []
    groups: dict[int, list[int]] = {}
    for i in range(len(items)):
        near = [heads[h] for h in np.flatnonzero(similarity[heads, i] >= CLOSE)] if heads else []
        for head in near:
            if keys.same(head, i, float(similarity[head, i])):
                groups[head].append(i)
                break
        else:
            heads.append(i)
            groups[i] = [i]
    out = []
    for head in heads:
        group = groups[head]
        twins = [m for m in group if len(group) == 1 or keys.normal(m) == keys.normal(group[0])]
        shown = max(twins, key=lambda m: (event(items[m]).timestamp, event(items[m]).seq))
        out.append((items[shown], [items[m] for m in group if m != shown]))
    return out


def duplicate_of(text: str, vector: Vectors, candidates: Sequence[tuple[Event, Vectors]]) -> Event | None:
    """The first of `candidates` that is the same memory as a new episode (its text and vector (dim,))."""
    probe = Event(0, "", "", "", 0, "", text, {})
    for event, v in candidates:
        if same_memory(probe, np.asarray(vector), event, v):
            return event
    return None
