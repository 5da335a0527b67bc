"""A long episode shown by its best passage: the part that holds the query's words, with its span.

An episode can run to a few thousand characters (a long assistant answer, a meeting's topic);
shown whole, two or three of them spend the reading budget and push later matches out. An episode
longer than PASSAGE_FROM is shown as the run of its sentences, about PASSAGE_CHARS long, around
the sentence that holds the most of the query's words (each word weighted by how rare it is in the
episode's sentences; a word counts when it begins with the query word's index stem, case aside:
"Decided" for "decid", one regular expression over the text, no tokenizer); with none of them, its
opening. The item keeps the episode's id and says
where the passage lies in it (`span`), so the whole episode is one resource read away.
"""

from __future__ import annotations

import bisect
import math
import re
from dataclasses import replace
from typing import TYPE_CHECKING

from emx_mcp import sentences
from emx_mcp.storage import lexical

if TYPE_CHECKING:
    from emx_mcp.retrieval import Hit

# Episodes longer than this are shown by a passage...
PASSAGE_FROM = 1_500
# ... of about this many characters.
PASSAGE_CHARS = 700


def shorten(hits: list[Hit], query: str) -> list[Hit]:
    """`hits` with each long episode replaced by its best passage (its span recorded)."""
    stems = [term for _, term in lexical.stemmed(lexical.terms(query))] if query else []
    out = []
    for hit in hits:
        text = hit.event.text
        if len(text) <= PASSAGE_FROM or hit.span is not None:
            out.append(hit)
            continue
        start, end = best_passage(text, stems)
        out.append(
            replace(
                hit,
                event=replace(hit.event, text=text[start:end]),
                span=(start, end),
                episode_chars=len(text),
            )
        )
    return out


def best_passage(text: str, stems: list[str]) -> tuple[int, int]:
    """[start, end) of the run of sentences, about PASSAGE_CHARS long, around the best-matching one."""
    spans = sentences.split_spans(text)
    if not spans:
        return 0, min(len(text), PASSAGE_CHARS)
    held: list[set[str]] = [set() for _ in spans] if stems else []
    if stems:
        starts = [a for a, _ in spans]
        alternatives = "|".join(re.escape(t) for t in sorted(set(stems), key=len, reverse=True))
        for match in re.finditer(rf"\b(?:{alternatives})", text, re.IGNORECASE):
            held[max(0, bisect.bisect_right(starts, match.start()) - 1)].add(match.group().lower())
    weights = {t: math.log(1 + len(spans) / (1 + sum(t in h for h in held))) for t in stems}
    scores = [sum(weights[t] for t in stems if t in h) for h in held] or [0.0] * len(spans)
    best = max(range(len(spans)), key=lambda i: (scores[i], -i))
    if scores[best] == 0:
        best = 0
    first = last = best
    while True:
        grown = False
        for candidate in (last + 1, first - 1):
            if 0 <= candidate < len(spans):
                a = spans[min(first, candidate)][0]
                b = spans[max(last, candidate)][1]
                if b - a <= PASSAGE_CHARS:
                    first, last = min(first, candidate), max(last, candidate)
                    grown = True
        if not grown:
            break
    start, end = spans[first][0], spans[last][1]
    if end - start > PASSAGE_CHARS * 2:  # one very long sentence
        end = start + PASSAGE_CHARS * 2
    return start, end
