"""The embedded store: the SQLite event log (the truth) and the FAISS replica derived from it.

This is the storage the service talks to: append and insert events, search them by vector with
filters, read neighbours and contexts, forget, export, and report counts and index statistics.
Every read catches the replica up with the log first, so events written by another process
sharing the data directory are seen.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import structlog

from emx_mcp.config import Settings
from emx_mcp.embedding import Vectors
from emx_mcp.errors import model_mismatch
from emx_mcp.storage import training
from emx_mcp.storage.events import EventLog
from emx_mcp.storage.index import Ids, Scores, VectorIndex
from emx_mcp.storage.records import Event, Filters, NewEvent, Receipt
from emx_mcp.storage.replica import Replica
from emx_mcp.storage.store import ForgetNote, Match, SessionInfo, StoreStats, exact_top

log = structlog.get_logger(__name__)

# Filters matching at most this many events are scored exactly from the log's embeddings.
EXACT_FILTER_LIMIT = 20_000


class EmbeddedStore:
    """SQLite + FAISS under one data directory. Open before use; safe to share between threads."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.policy = settings.training_policy()
        self._log: EventLog | None = None
        self._replica: Replica | None = None
        self.dim = 0
        # SQLite quick_check of the event log, run in the background after each open.
        self.integrity = "not checked"
        self._integrity_thread = threading.Thread()

    # -- lifecycle ----------------------------------------------------------------------------

    def open(self, model_id: str, dim_of: Callable[[], int]) -> None:
        """Open the log, bind it to the embedding model, load or rebuild the indexes.

        `dim_of` gives the model's dimension; it is called only for a new store, so opening an
        existing one does not load the model.
        """
        event_log = EventLog(self.settings.db_path)
        try:
            self.dim = self._bind_model(event_log, model_id, dim_of)
            replica = Replica(self.settings.index_dir, self.policy, self.dim, self.settings.snapshot_every)
            replica.load(event_log)
        except BaseException:
            event_log.close()
            raise
        self._log, self._replica = event_log, replica
        log.info("store opened", data_dir=str(self.settings.data_dir), events=len(replica), dim=self.dim)
        self.integrity = "checking"
        self._integrity_thread = threading.Thread(
            target=self._check_integrity, args=(event_log,), name="emx-integrity", daemon=True
        )
        self._integrity_thread.start()

    def _bind_model(self, event_log: EventLog, model_id: str, dim_of: Callable[[], int]) -> int:
        bound = event_log.bound_model()
        if bound is None:
            dim = dim_of()
            event_log.bind_model(model_id, dim)
            return dim
        bound_id, dim = bound
        if bound_id != model_id:
            raise model_mismatch(
                str(self.settings.db_path),
                repr(bound_id),
                repr(model_id),
                "set EMX_MODEL and EMX_ENCODER_BACKEND back, or use another EMX_DATA_DIR",
            )
        return dim

    def _check_integrity(self, event_log: EventLog) -> None:
        """quick_check the log without holding up the handshake or any tool call."""
        try:
            problems = event_log.check_integrity()
        except Exception as exc:  # the check itself failing is reported, not raised
            problems = [f"{type(exc).__name__}: {exc}"]
        self.integrity = "ok" if not problems else "failed: " + "; ".join(problems[:5])
        if problems:
            log.error("event log integrity check failed", path=str(event_log.path), problems=problems[:5])

    def wait_for_integrity_check(self, timeout: float | None = None) -> str:
        self._integrity_thread.join(timeout)
        return self.integrity

    def close(self) -> None:
        """Write final snapshots and close the log.

        A training still running is not waited for: the live index is consistent on its own,
        and the next start trains again when due.
        """
        if self._log is None or self._replica is None:
            return
        self._replica.close(self._log)
        self._log.close()
        self._log = self._replica = None

    @property
    def log(self) -> EventLog:
        """The event log (open stores only)."""
        assert self._log is not None, "the store is not open"
        return self._log

    @property
    def replica(self) -> Replica:
        assert self._replica is not None, "the store is not open"
        return self._replica

    def index(self, namespace: str) -> VectorIndex | None:
        """The namespace's vector index, if it has one yet."""
        return self.replica.index(namespace)

    def catch_up(self) -> None:
        self.replica.catch_up(self.log)

    def __len__(self) -> int:
        return len(self.replica)

    # -- writes -------------------------------------------------------------------------------

    def append(
        self,
        namespace: str,
        session: str,
        items: Sequence[NewEvent],
        vectors: Vectors,
        receipt: Receipt | None = None,
        supersedes: Sequence[str] = (),
    ) -> tuple[list[Event], Receipt | None]:
        """Store `items` at the end of `session` in one transaction; searchable when this returns.

        With a receipt whose key was used before, nothing is stored: the first call's events
        and receipt come back instead. Every new event supersedes the events `supersedes` names.
        """
        events, earlier = self.log.append(
            namespace,
            session,
            items,
            vectors,
            max_events=self.settings.max_events,
            receipt=receipt,
            supersedes=supersedes,
        )
        self.catch_up()
        return events, earlier

    def receipt(self, namespace: str, key: str) -> Receipt | None:
        return self.log.receipt(namespace, key)

    def events(self, namespace: str, ids: Sequence[str]) -> list[Event]:
        """The events of `namespace` with these ids, in that order; unknown ids are left out."""
        return self.log.by_ids(namespace, ids)

    def forgotten_ids(self, ids: Sequence[str]) -> set[str]:
        """Which of `ids` were forgotten (the log keeps their tombstones)."""
        return self.log.forgotten_ids(ids)

    def insert(
        self, events: Sequence[Event], vectors: Vectors, links: Sequence[tuple[str, str]] = ()
    ) -> list[Event]:
        """Store events that keep their ids and places (an import), and their (new, old) links, at once."""
        stored = self.log.insert(events, vectors, max_events=self.settings.max_events, links=links)
        self.catch_up()
        return stored

    def supersede(self, namespace: str, new: str, old: Sequence[str]) -> list[str]:
        """Mark `new` as superseding each of `old`; return the ids linked anew."""
        return self.log.supersede(namespace, new, old)

    def links(self, namespace: str, ids: Sequence[str]) -> list[tuple[str, str]]:
        """(old, new) supersession links of `namespace` touching `ids`, oldest first."""
        return self.log.links(namespace, ids)

    def listing(self, namespace: str, filters: Filters, limit: int) -> tuple[list[Event], int]:
        """The first `limit` events passing `filters` in time order, and how many pass."""
        return self.log.listing(namespace, filters, limit)

    def nearest_times(
        self, namespace: str, since: str | None, until: str | None
    ) -> tuple[str | None, str | None]:
        """The latest timestamp before `since` and the earliest after `until`, if any."""
        return self.log.nearest_times(namespace, since, until)

    def forget(self, namespace: str, ids: Sequence[str] | None, session: str | None) -> list[str]:
        removed = self.log.forget(namespace, ids, session)
        self.catch_up()
        return removed

    def note_forget(self, note: ForgetNote) -> None:
        self.log.note_forget(note.at, note.namespace, note.who, note.count, json.dumps(note.ids))

    def forget_notes(self, namespace: str | None, limit: int) -> list[ForgetNote]:
        return [
            ForgetNote(at, ns, who, count, json.loads(ids))
            for at, ns, who, count, ids in self.log.forget_notes(namespace, limit)
        ]

    def publish(self, name: str, data: bytes) -> None:
        """Files beside the store are shared already: every process reads the same data directory."""

    def fetch(self, name: str, have: str | None) -> bytes | None:
        return None

    def snapshot(self, every_namespace: bool = False) -> None:
        """Write index snapshots now: of the namespaces that changed (or of all)."""
        self.replica.snapshot(self.log, every_namespace)

    def wait_for_snapshots(self, timeout: float | None = None) -> None:
        self.replica.wait_for_snapshots(timeout)

    # -- reads --------------------------------------------------------------------------------

    def search(self, namespace: str, queries: Vectors, k: int, filters: Filters) -> list[list[Match]]:
        """The k events of `namespace` passing `filters` most similar to each query (m, dim), best first."""
        self.catch_up()
        index = self.index(namespace)
        if index is None or len(index) == 0:
            return [[] for _ in queries]
        if filters.any:
            scores, ids = self._filtered_search(index, queries, k, self.log.matching_seqs(namespace, filters))
        else:
            scores, ids = index.search(queries, k)
        found = self.log.by_seqs([int(i) for i in ids.ravel() if i >= 0])
        foreign = [e for e in found.values() if e.namespace != namespace]
        if foreign:
            # Defence in depth: an index never holds another namespace's events unless its
            # derived data was wrong; such hits are dropped, never returned.
            log.error(
                "dropped hits of another namespace", namespace=namespace, seqs=[e.seq for e in foreign][:10]
            )
            found = {seq: e for seq, e in found.items() if e.namespace == namespace}
        return [
            [Match(found[int(i)], float(s)) for s, i in zip(row_s, row_i, strict=True) if int(i) in found]
            for row_s, row_i in zip(scores, ids, strict=True)
        ]

    def _filtered_search(
        self, index: VectorIndex, queries: Vectors, k: int, allowed: Ids
    ) -> tuple[Scores, Ids]:
        """Search among `allowed` seqs only.

        A small candidate set is scored exactly from the stored embeddings: an IVF index probes
        only the lists its nprobe was tuned for, which may hold none of a small set's vectors.
        """
        if len(allowed) > EXACT_FILTER_LIMIT:
            return index.search(queries, k, allowed)
        seqs, vectors = self.log.vectors_of(allowed, self.dim)
        return exact_top(queries, seqs, vectors, k)

    def search_text(
        self, namespace: str, query: str, limit: int, filters: Filters
    ) -> list[tuple[int, float]]:
        """(seq, BM25 score) of the `limit` events of `namespace` passing `filters` whose words best match."""
        return self.log.lexical_search(namespace, query, filters, limit)

    def events_at(self, namespace: str, seqs: Sequence[int]) -> dict[int, tuple[Event, Vectors]]:
        """The events of `namespace` with these seqs, each with its stored vector (dim,)."""
        found = self.log.by_seqs(seqs)
        kept = np.array([seq for seq, e in found.items() if e.namespace == namespace], dtype=np.int64)
        have, vectors = self.log.vectors_of(kept, self.dim)
        return {int(seq): (found[int(seq)], vectors[i]) for i, seq in enumerate(have)}

    def neighbours(
        self, namespace: str, anchors: Sequence[tuple[str, int]], reach: int, filters: Filters
    ) -> list[Event]:
        """Events passing `filters` within `reach` positions of each (session, position) anchor."""
        return self.log.neighbours(namespace, anchors, reach, filters)

    def event(self, namespace: str, event_id: str) -> Event | None:
        """The event with this id, if it is one of `namespace`'s."""
        event = self.log.by_id(event_id)
        return event if event is not None and event.namespace == namespace else None

    def latest_session(self, namespace: str) -> str | None:
        return self.log.latest_session(namespace)

    def context(
        self, namespace: str, session: str, up_to_position: int | None, limit: int
    ) -> tuple[Ids, Vectors]:
        """The last `limit` episodes of a session (up to a position), oldest first: (seqs, vectors)."""
        return self.log.context(namespace, session, up_to_position, limit, self.dim)

    def next_vector(self, namespace: str, event: Event) -> Vectors | None:
        """The vector of the episode after `event` in its session, if there is one."""
        following = self.log.neighbours(namespace, [(event.session, event.position + 1)], 0, Filters())
        if not following:
            return None
        _, vectors = self.log.vectors_of(np.array([following[0].seq]), self.dim)
        return vectors[0] if len(vectors) else None

    def sessions(self, namespace: str) -> list[tuple[str, Ids, Vectors]]:
        """Every session of `namespace` as (name, seqs, vectors (L, dim)) in position order."""
        return self.log.sessions(namespace, self.dim)

    def session_list(self, namespace: str) -> list[SessionInfo]:
        return [SessionInfo(*row) for row in self.log.session_list(namespace)]

    def session_events(self, namespace: str, session: str, start: int, limit: int) -> list[Event]:
        return self.log.session_events(namespace, session, start, limit)

    def recent(self, namespace: str, limit: int) -> list[Event]:
        return self.log.recent(namespace, limit)

    def daily_counts(self, namespace: str) -> list[tuple[str, int]]:
        return self.log.daily_counts(namespace)

    def export_batches(self, namespace: str | None) -> Iterator[tuple[list[Event], Vectors]]:
        return self.log.export_batches(namespace, self.dim)

    def holders(
        self, ids: Sequence[str], places: Sequence[tuple[str, str, int]]
    ) -> tuple[set[str], dict[tuple[str, str, int], str]]:
        return self.log.holders(ids, places)

    def count(self, namespace: str | None = None) -> int:
        return self.log.count(namespace)

    def total(self) -> int:
        return self.log.total()

    def namespaces(self) -> list[str]:
        return self.log.namespaces()

    def stats(self, namespace: str) -> StoreStats:
        self.catch_up()
        index = self.index(namespace) or VectorIndex(self.dim, self.policy)
        snapshot = self.replica.path(namespace)
        return StoreStats(
            namespace=namespace,
            index=index.stats(),
            events_in_log=self.log.count(namespace),
            events_in_store=self.log.total(),
            event_log_bytes=self.log.size_bytes(),
            snapshot_bytes=snapshot.stat().st_size if snapshot.exists() else 0,
            integrity=self.integrity,
            snapshot_error=self.replica.snapshot_error,
            trainings_queued=training.queued_trainings(),
        )
