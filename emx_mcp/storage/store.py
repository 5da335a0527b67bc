"""The store seam: what every store hands the service, and the one protocol the service talks to.

Two stores implement `Store`: the embedded one (SQLite event log + FAISS replica in one data
directory, storage/embedded.py) and the Milvus one (one collection on Milvus Lite, a standalone
server or a cluster, storage/milvus.py). Retrieval, prediction, health and transfer see only this.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import numpy as np

from emx_mcp.embedding import Vectors
from emx_mcp.storage.index import Ids, IndexStats, Scores
from emx_mcp.storage.policy import TrainingPolicy
from emx_mcp.storage.records import Event, Filters, NewEvent, Receipt


class Match(NamedTuple):
    """An event found by a search, with its cosine similarity to the query."""

    event: Event
    score: float


@dataclass(frozen=True, slots=True)
class StoreStats:
    """What a health report needs to know about one namespace of the store."""

    namespace: str
    index: IndexStats
    events_in_log: int  # events of this namespace
    events_in_store: int  # events of every namespace, what EMX_MAX_EVENTS limits
    event_log_bytes: int
    snapshot_bytes: int
    integrity: str
    snapshot_error: str | None
    trainings_queued: int  # trainings of any namespace waiting for their turn in this process
    store: str = "embedded"  # which store answered: "embedded" or "milvus"


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """One session of a namespace, as the browser and the resources list it."""

    session: str
    episodes: int
    first: str  # timestamp of its earliest episode
    last: str  # ... and of its latest
    last_seq: int  # when it last grew: sessions are listed newest first


@dataclass(frozen=True, slots=True)
class ForgetNote:
    """Who forgot what: the audit record a `forget` leaves in the store (ids and counts, never text)."""

    at: str
    namespace: str
    who: str
    count: int
    ids: list[str]  # the first FORGET_NOTE_IDS of them


FORGET_NOTE_IDS = 100


class Store(Protocol):
    """Durable events with their vectors, searchable by vector and by words, per namespace."""

    dim: int
    policy: TrainingPolicy

    # lifecycle
    def open(self, model_id: str, dim_of: Callable[[], int]) -> None: ...
    def close(self) -> None: ...
    def wait_for_integrity_check(self, timeout: float | None = None) -> str: ...
    def catch_up(self) -> None: ...
    def snapshot(self, every_namespace: bool = False) -> None: ...

    # writes
    def append(
        self,
        namespace: str,
        session: str,
        items: Sequence[NewEvent],
        vectors: Vectors,
        receipt: Receipt | None = None,
        supersedes: Sequence[str] = (),
    ) -> tuple[list[Event], Receipt | None]: ...
    def insert(
        self, events: Sequence[Event], vectors: Vectors, links: Sequence[tuple[str, str]] = ()
    ) -> list[Event]: ...
    def supersede(self, namespace: str, new: str, old: Sequence[str]) -> list[str]: ...
    def links(self, namespace: str, ids: Sequence[str]) -> list[tuple[str, str]]: ...  # (old, new)
    def listing(self, namespace: str, filters: Filters, limit: int) -> tuple[list[Event], int]: ...
    def nearest_times(
        self, namespace: str, since: str | None, until: str | None
    ) -> tuple[str | None, str | None]: ...
    def forget(self, namespace: str, ids: Sequence[str] | None, session: str | None) -> list[str]: ...
    def note_forget(self, note: ForgetNote) -> None: ...
    def forget_notes(self, namespace: str | None, limit: int) -> list[ForgetNote]: ...  # newest first

    # reads
    def receipt(self, namespace: str, key: str) -> Receipt | None: ...
    def events(self, namespace: str, ids: Sequence[str]) -> list[Event]: ...
    def forgotten_ids(self, ids: Sequence[str]) -> set[str]: ...
    def search(self, namespace: str, queries: Vectors, k: int, filters: Filters) -> list[list[Match]]: ...
    def search_text(
        self, namespace: str, query: str, limit: int, filters: Filters
    ) -> list[tuple[int, float]]: ...
    def events_at(self, namespace: str, seqs: Sequence[int]) -> dict[int, tuple[Event, Vectors]]: ...
    def neighbours(
        self, namespace: str, anchors: Sequence[tuple[str, int]], reach: int, filters: Filters
    ) -> list[Event]: ...
    def event(self, namespace: str, event_id: str) -> Event | None: ...
    def latest_session(self, namespace: str) -> str | None: ...
    def context(
        self, namespace: str, session: str, up_to_position: int | None, limit: int
    ) -> tuple[Ids, Vectors]: ...
    def next_vector(self, namespace: str, event: Event) -> Vectors | None: ...
    def sessions(self, namespace: str) -> list[tuple[str, Ids, Vectors]]: ...
    # browsing: what a person (or a resource read) looks at, never the vectors
    def session_list(self, namespace: str) -> list[SessionInfo]: ...  # newest first
    def session_events(self, namespace: str, session: str, start: int, limit: int) -> list[Event]: ...
    def recent(self, namespace: str, limit: int) -> list[Event]: ...  # newest first
    def daily_counts(self, namespace: str) -> list[tuple[str, int]]: ...  # (YYYY-MM-DD, episodes), by day
    def export_batches(self, namespace: str | None) -> Iterator[tuple[list[Event], Vectors]]: ...
    def holders(
        self, ids: Sequence[str], places: Sequence[tuple[str, str, int]]
    ) -> tuple[set[str], dict[tuple[str, str, int], str]]: ...
    def count(self, namespace: str | None = None) -> int: ...
    def total(self) -> int: ...
    def namespaces(self) -> list[str]: ...
    def stats(self, namespace: str) -> StoreStats: ...

    # shared files (predictor checkpoints): published by the replica that trains, fetched by all
    def publish(self, name: str, data: bytes) -> None: ...
    def fetch(self, name: str, have: str | None) -> bytes | None: ...  # None: unchanged from sha256 `have`


def exact_top(queries: Vectors, seqs: Ids, vectors: Vectors, k: int) -> tuple[Scores, Ids]:
    """The k best of `seqs` for each query by inner product with their `vectors`, (m, k) padded with -1."""
    m = len(queries)
    out_scores = np.full((m, k), -np.inf, dtype=np.float32)
    out_ids = np.full((m, k), -1, dtype=np.int64)
    if len(seqs):
        sims = queries @ vectors.T  # (m, candidates)
        top = min(k, len(seqs))
        order = np.argsort(-sims, axis=1, kind="stable")[:, :top]
        out_scores[:, :top] = np.take_along_axis(sims, order, axis=1)
        out_ids[:, :top] = seqs[order]
    return out_scores, out_ids
