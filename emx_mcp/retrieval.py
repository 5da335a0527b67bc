"""Two-stage recall, as in EM-LLM: the most similar episodes, then their neighbours in time.

Stage one asks the store for the k events most similar to each query (filters applied there).
Stage two adds, for each match in order, the events within `contiguity` positions of it in its
session, closest first, each event at most once: so the first k results are exactly what
similarity alone returns, and the context follows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from emx_mcp.embedding import Vectors
from emx_mcp.schemas import RecallOptions
from emx_mcp.storage.embedded import EmbeddedStore
from emx_mcp.storage.events import Event, Filters

# A neighbour's score: its match's score times this, per position of distance.
CONTIGUITY_DECAY = 0.9

Via = Literal["similarity", "contiguity", "prediction"]


@dataclass(frozen=True, slots=True)
class Hit:
    event: Event
    score: float
    via: Via
    neighbour_of: str | None = None  # for contiguity: the id of the similarity hit it neighbours


def filters_of(options: RecallOptions) -> Filters:
    return Filters(
        session=options.session, since=options.since, until=options.until, metadata=options.metadata
    )


def recall(store: EmbeddedStore, queries: Vectors, options: RecallOptions) -> list[list[Hit]]:
    """For each query vector (m, dim): its k most similar events, then their neighbours."""
    filters = filters_of(options)
    ranked = [
        [Hit(m.event, m.score, "similarity") for m in matches]
        for matches in store.search(options.namespace, queries, options.k, filters)
    ]
    if options.contiguity == 0:
        return ranked
    return with_neighbours(store, options.namespace, ranked, options.contiguity, filters)


def with_neighbours(
    store: EmbeddedStore, namespace: str, ranked: list[list[Hit]], reach: int, filters: Filters
) -> list[list[Hit]]:
    """The hits, best first, then each hit's session neighbours within `reach` positions.

    Neighbours come grouped by the hit they belong to (in the hits' order), closest first, each
    event at most once; neighbours must pass the same filters as the hits.
    """
    anchors = sorted({(h.event.session, h.event.position) for hits in ranked for h in hits})
    by_place = {(e.session, e.position): e for e in store.neighbours(namespace, anchors, reach, filters)}
    offsets = sorted((d for d in range(-reach, reach + 1) if d), key=lambda d: (abs(d), d))
    out = []
    for hits in ranked:
        shown = {h.event.seq for h in hits}
        merged = list(hits)
        for hit in hits:
            for offset in offsets:
                event = by_place.get((hit.event.session, hit.event.position + offset))
                if event is None or event.seq in shown:
                    continue
                shown.add(event.seq)
                merged.append(
                    Hit(event, hit.score * CONTIGUITY_DECAY ** abs(offset), "contiguity", hit.event.id)
                )
        out.append(merged)
    return out


def nearest(store: EmbeddedStore, namespace: str, vector: Vectors, k: int, exclude: set[int]) -> list[Hit]:
    """The k events most similar to one vector (dim,), leaving out the seqs in `exclude`."""
    (matches,) = store.search(namespace, vector.reshape(1, -1), k + len(exclude), Filters())
    kept = [m for m in matches if m.event.seq not in exclude][:k]
    return [Hit(m.event, m.score, "prediction") for m in kept]
