"""Recall: hybrid ranking of episodes, then their neighbours in time, within a reading budget.

Stage one gathers candidates two ways, the episodes whose vectors are nearest the query and
those whose words match it best (BM25 over the lexical index, which also reads the episode
before each one as context), and scores each on its own: `SEMANTIC_WEIGHT` x cosine similarity
plus the rest x its BM25 score relative to the query's best. Names, numbers and rare words are
found even where the embedding misses them; paraphrases where the words differ. Stage two adds
the episodes next to each match in its session (the contiguity buffer), each scored the same way
on its own merit and shown only when it reaches half its match's score. Near-identical episodes
collapse into the newest, which carries the count of the others. Items come best first until
`max_chars` of memory text are used; the rest are counted as left out.

The weights were chosen on the development conversations (benchmarks/conversation_recall.py).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from emx_mcp.embedding import Vectors
from emx_mcp.schemas import RecallOptions
from emx_mcp.storage.records import Event, Filters
from emx_mcp.storage.store import Store

# Share of the score that is cosine similarity; the rest is BM25 relative to the query's best match.
SEMANTIC_WEIGHT = 0.6
# Candidates each way, at least; more when k is larger.
CANDIDATES = 50
# Episodes this similar (cosine of their vectors) are one memory stored twice.
DUPLICATE_SIMILARITY = 0.97
# A neighbour is shown when its own score reaches this share of its match's.
NEIGHBOUR_SHARE = 0.5

Via = Literal["similarity", "contiguity", "prediction"]
Mode = Literal["hybrid", "semantic", "lexical"]


@dataclass(frozen=True, slots=True)
class Hit:
    event: Event
    score: float
    via: Via
    neighbour_of: str | None = None  # for contiguity: the id of the match it neighbours
    duplicates: int = 0  # near-identical episodes folded into this one
    truncated: bool = False  # the text was cut to fit the reading budget


@dataclass(frozen=True, slots=True)
class Recalled:
    hits: list[Hit]
    omitted: int  # items that matched but did not fit the reading budget


@dataclass(frozen=True, slots=True)
class _Scored:
    event: Event
    vector: Vectors
    score: float
    via: Via = "similarity"
    neighbour_of: str | None = None


def filters_of(options: RecallOptions) -> Filters:
    return Filters(
        session=options.session, since=options.since, until=options.until, metadata=options.metadata
    )


def recall(
    store: Store, texts: list[str], vectors: Vectors, options: RecallOptions, budget: int
) -> list[Recalled]:
    """For each query (its text and vector (dim,)): its best episodes and neighbours, in `budget` chars."""
    filters = filters_of(options)
    width = max(CANDIDATES, 4 * options.k)
    semantic = (
        store.search(options.namespace, vectors, width, filters)
        if options.mode != "lexical"
        else [[] for _ in texts]
    )
    out = []
    for text, vector, matches in zip(texts, vectors, semantic, strict=True):
        lexical = (
            store.search_text(options.namespace, text, width, filters) if options.mode != "semantic" else []
        )
        scored = rank(store, options, vector, [m.event.seq for m in matches], lexical)
        if options.contiguity:
            scored += neighbours(store, options, vector, scored[: options.k], lexical, filters)
        hits = collapse(sorted(scored, key=lambda s: -s.score))
        out.append(fit(hits, budget))
    return out


def rank(
    store: Store,
    options: RecallOptions,
    vector: Vectors,
    semantic: list[int],
    lexical: list[tuple[int, float]],
) -> list[_Scored]:
    """The k best candidates by their own score, at least `min_score`."""
    candidates = store.events_at(
        options.namespace, list(dict.fromkeys([*semantic, *(s for s, _ in lexical)]))
    )
    scored = [
        _Scored(event, v, score(options.mode, float(v @ vector), _relative(lexical, seq)))
        for seq, (event, v) in candidates.items()
    ]
    kept = [s for s in scored if s.score >= options.min_score]
    kept.sort(key=lambda s: (-s.score, s.event.seq))
    return kept[: options.k]


def score(mode: Mode, cosine: float, lexical: float) -> float:
    """An episode's score: cosine, relative BM25, or the weighted sum of both."""
    if mode == "semantic":
        return cosine
    if mode == "lexical":
        return lexical
    return SEMANTIC_WEIGHT * cosine + (1 - SEMANTIC_WEIGHT) * lexical


def _relative(lexical: list[tuple[int, float]], seq: int) -> float:
    """BM25 of `seq` over the best BM25 of the query (0 when it did not match)."""
    if not lexical:
        return 0.0
    best = lexical[0][1]
    found = next((s for q, s in lexical if q == seq), 0.0)
    return found / best if best > 0 else 0.0


def neighbours(
    store: Store,
    options: RecallOptions,
    vector: Vectors,
    matches: list[_Scored],
    lexical: list[tuple[int, float]],
    filters: Filters,
) -> list[_Scored]:
    """The episodes within `contiguity` positions of each match, scored on their own merit."""
    shown = {m.event.seq for m in matches}
    anchors = {(m.event.session, m.event.position): m for m in matches}
    around = store.neighbours(options.namespace, sorted(anchors), options.contiguity, filters)
    nearby = [e for e in around if e.seq not in shown]
    stored = store.events_at(options.namespace, [e.seq for e in nearby])
    out: dict[int, _Scored] = {}
    for event in nearby:
        match = _closest_match(anchors, event, options.contiguity)
        if match is None or event.seq not in stored:
            continue
        v = stored[event.seq][1]
        own = score(options.mode, float(v @ vector), _relative(lexical, event.seq))
        if own >= max(options.min_score, NEIGHBOUR_SHARE * match.score) and event.seq not in out:
            out[event.seq] = _Scored(event, v, own, "contiguity", match.event.id)
    return list(out.values())


def _closest_match(anchors: dict[tuple[str, int], _Scored], event: Event, reach: int) -> _Scored | None:
    for distance in range(1, reach + 1):
        for position in (event.position - distance, event.position + distance):
            match = anchors.get((event.session, position))
            if match is not None:
                return match
    return None


def collapse(scored: list[_Scored]) -> list[Hit]:
    """Fold near-identical episodes (best first) into one item: the newest, with the count of the others."""
    groups: list[list[_Scored]] = []
    for item in scored:
        for group in groups:
            if float(group[0].vector @ item.vector) >= DUPLICATE_SIMILARITY:
                group.append(item)
                break
        else:
            groups.append([item])
    hits = []
    for group in groups:
        best, newest = group[0], max(group, key=lambda s: (s.event.timestamp, s.event.seq))
        hits.append(Hit(newest.event, best.score, best.via, best.neighbour_of, duplicates=len(group) - 1))
    return hits


def fit(hits: list[Hit], max_chars: int) -> Recalled:
    """The hits, best first, while their texts fit in `max_chars`; the first one always, cut if need be."""
    kept: list[Hit] = []
    used = 0
    for hit in hits:
        size = len(hit.event.text)
        if used + size > max_chars:
            if kept:
                break
            text = hit.event.text[:max_chars]
            hit = replace(hit, event=replace(hit.event, text=text), truncated=True)
            size = len(text)
        kept.append(hit)
        used += size
    return Recalled(kept, len(hits) - len(kept))


def nearest(store: Store, namespace: str, vector: Vectors, k: int, exclude: set[int]) -> list[Hit]:
    """The k events most similar to one vector (dim,), leaving out the seqs in `exclude`."""
    (matches,) = store.search(namespace, vector.reshape(1, -1), k + len(exclude), Filters())
    kept = [m for m in matches if m.event.seq not in exclude][:k]
    return [Hit(m.event, m.score, "prediction") for m in kept]


def duplicates_of(store: Store, namespace: str, vectors: Vectors) -> list[tuple[str, float] | None]:
    """For each vector (n, dim): the stored episode it nearly duplicates (id, cosine), if any."""
    if len(vectors) == 0:
        return []
    found = store.search(namespace, np.ascontiguousarray(vectors), 1, Filters())
    return [
        (matches[0].event.id, round(matches[0].score, 4))
        if matches and matches[0].score >= DUPLICATE_SIMILARITY
        else None
        for matches in found
    ]
