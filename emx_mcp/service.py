"""The memory use cases. Owns one EventLog, one Encoder and one VectorIndex per namespace.

Every change to an index goes through one path, `_catch_up`, which applies the events and the
removals the log holds beyond the cursors the index has seen. Writes commit to the log and then
catch up; reads catch up before searching, so changes made by another process are seen too.
"""

from __future__ import annotations

import contextlib
import fcntl
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import structlog

from emx_mcp import segmentation, sentences, validation
from emx_mcp.config import Settings
from emx_mcp.embedding import Encoder, Vectors, normalize
from emx_mcp.errors import InvalidInput, NotFound, StoreMismatch
from emx_mcp.lvm.predictor import DEFAULT_CONTEXT, Checkpoint, Predictors
from emx_mcp.storage.events import Event, EventLog, Filters, NewEvent
from emx_mcp.storage.index import CorruptSnapshot, Ids, Scores, VectorIndex, snapshot_header, write_atomic

log = structlog.get_logger(__name__)

MAX_BATCH_QUERIES = 256
CAPACITY_WARNING = 0.8
# A neighbour's score: its hit's score times this, per position of distance.
CONTIGUITY_DECAY = 0.9
# Filters matching at most this many events are scored exactly from the log's embeddings.
EXACT_FILTER_LIMIT = 20_000


@dataclass(frozen=True, slots=True)
class Hit:
    event: Event
    score: float
    via: Literal["similarity", "contiguity", "prediction"]
    neighbour_of: str | None = None  # for contiguity: the id of the similarity hit it neighbours


@dataclass(frozen=True, slots=True)
class Prediction:
    method: str  # "lvm", "blend", "analog" or "copy_last"
    hits: list[Hit]
    checkpoint: Checkpoint | None


@dataclass(frozen=True, slots=True)
class Episode:
    event: Event
    surprise: float | None  # surprise of the sentence that opened it; None for the first of a call
    sentences: int


class MemoryService:
    """Durable episodic memory: remember, recall, forget, and the index bookkeeping behind them."""

    def __init__(self, settings: Settings, encoder: Encoder) -> None:
        self.settings = settings
        self.encoder = encoder
        self.policy = settings.training_policy()
        self.segmentation = settings.segmentation_config()
        self._log: EventLog | None = None
        self._dim = 0
        self._indexes: dict[str, VectorIndex] = {}
        self._applied_seq = 0
        self._applied_forget = 0
        self._dirty: set[str] = set()
        self._unsaved = 0
        self._open_lock = threading.Lock()
        self._index_lock = threading.RLock()
        self._snapshot_lock = threading.Lock()
        self._snapshot_thread: threading.Thread | None = None
        self._snapshot_error: str | None = None
        # SQLite quick_check of the event log, run in the background after each open.
        self.integrity = "not checked"
        self._integrity_thread = threading.Thread()

    # -- lifecycle ----------------------------------------------------------------------------

    def open(self) -> None:
        """Open the log, load or rebuild the indexes, and replay what they miss. Idempotent."""
        with self._open_lock:
            if self._log is not None:
                return
            event_log = EventLog(self.settings.db_path)
            try:
                self._dim = self._bind_model(event_log)
                self._log = event_log
                self.predictors = Predictors(self.settings.data_dir / "lvm", self.encoder.model_id, self._dim)
                self._remove_interrupted_snapshots()
                self._load_snapshots()
                self._catch_up()
            except BaseException:
                self._log = None
                event_log.close()
                raise
            log.info("store opened", data_dir=str(self.settings.data_dir), events=len(self), dim=self._dim)
            self.integrity = "checking"
            self._integrity_thread = threading.Thread(
                target=self._check_integrity, args=(event_log,), name="emx-integrity", daemon=True
            )
            self._integrity_thread.start()

    def wait_for_integrity_check(self, timeout: float | None = None) -> str:
        """The integrity check's verdict, once it is done (or `timeout` seconds have passed)."""
        self.open()
        self._integrity_thread.join(timeout)
        return self.integrity

    def _check_integrity(self, event_log: EventLog) -> None:
        """quick_check the log without holding up the handshake or any tool call."""
        try:
            problems = event_log.check_integrity()
        except Exception as exc:  # the check itself failing is reported, not raised
            problems = [f"{type(exc).__name__}: {exc}"]
        self.integrity = "ok" if not problems else "failed: " + "; ".join(problems[:5])
        if problems:
            log.error("event log integrity check failed", path=str(event_log.path), problems=problems[:5])

    def warm_up(self) -> None:
        """Open the store and load the encoder, so the first tool call is fast."""
        self.open()
        self._encode(["warm-up"])

    def close(self) -> None:
        """Write final snapshots and close the log.

        A training still running is not waited for: the live index is consistent on its own,
        and the next start trains again when due.
        """
        with self._open_lock:
            if self._log is None:
                return
            thread = self._snapshot_thread
            if thread is not None:
                thread.join()
            try:
                self.snapshot()
            except Exception:
                # Derived data only: the next start rebuilds what the snapshot would have saved.
                log.exception("final index snapshot failed; the next start replays the event log")
            self._log.close()
            self._log = None

    def __len__(self) -> int:
        with self._index_lock:
            return sum(len(index) for index in self._indexes.values())

    @property
    def dim(self) -> int:
        """Dimension of the stored vectors (the store's, which the encoder must match)."""
        self.open()
        return self._dim

    @property
    def event_log(self) -> EventLog:
        self.open()
        assert self._log is not None
        return self._log

    def index(self, namespace: str) -> VectorIndex | None:
        with self._index_lock:
            return self._indexes.get(namespace)

    def _bind_model(self, event_log: EventLog) -> int:
        bound = event_log.bound_model()
        if bound is None:
            dim = self.encoder.dim
            event_log.bind_model(self.encoder.model_id, dim)
            return dim
        model_id, dim = bound
        if model_id != self.encoder.model_id:
            raise StoreMismatch(
                f"{self.settings.db_path} holds embeddings from model {model_id!r}, but the server is "
                f"configured with {self.encoder.model_id!r}. Vectors from different models are not "
                "comparable: set EMX_MODEL back, or use another EMX_DATA_DIR."
            )
        return dim

    # -- use cases ----------------------------------------------------------------------------

    def remember(
        self,
        text: object,
        session: object = None,
        metadata: object = None,
        timestamp: object = None,
        namespace: object = "default",
    ) -> list[Episode]:
        """Cut `text` into episodes and store them at the end of `session` (new if None), in one transaction.

        Each episode is an exact slice of `text` (whitespace between episodes aside); its vector is
        the normalised mean of its sentences' vectors. Returns the episodes once committed.
        """
        text_ = validation.text(text, self.settings.max_text_chars)
        namespace_ = validation.namespace(namespace)
        session_ = uuid.uuid4().hex if session is None else validation.session(session)
        metadata_ = {} if metadata is None else validation.metadata(metadata)
        timestamp_ = validation.now() if timestamp is None else validation.timestamp(timestamp)
        self.open()
        spans = sentences.split_spans(text_)
        sentence_vectors = self._encode([text_[a:b] for a, b in spans])
        segments = segmentation.segment(sentence_vectors, self.segmentation)
        items = [
            NewEvent(text_[spans[s.first][0] : spans[s.stop - 1][1]], timestamp_, metadata_) for s in segments
        ]
        vectors = segmentation.episode_vectors(sentence_vectors, segments)
        events = self.event_log.append(
            namespace_, session_, items, vectors, max_events=self.settings.max_events
        )
        self._catch_up()
        return [
            Episode(e, None if s.first == 0 else s.surprise, s.stop - s.first)
            for e, s in zip(events, segments, strict=True)
        ]

    def embed_episodes(self, texts: list[str]) -> Vectors:
        """(len(texts), dim): each text's vector as one episode, the normalised mean of its sentences'."""
        self.open()
        spans = [sentences.split_spans(t) for t in texts]
        vectors = self._encode([t[a:b] for t, parts in zip(texts, spans, strict=True) for a, b in parts])
        starts = np.cumsum([0] + [len(parts) for parts in spans[:-1]])
        return normalize(np.add.reduceat(vectors, starts, axis=0))

    def store_events(self, events: list[Event], vectors: Vectors) -> list[Event]:
        """Store events that keep their ids and places (an import), in one transaction, then index them."""
        self.open()
        stored = self.event_log.insert(events, vectors, max_events=self.settings.max_events)
        self._catch_up()
        return stored

    def recall(
        self,
        query: object,
        k: object = 5,
        session: object = None,
        namespace: object = "default",
        contiguity: object = 1,
        since: object = None,
        until: object = None,
        metadata: object = None,
    ) -> list[Hit]:
        """The k stored episodes most similar to `query`, each followed by its temporal neighbours."""
        query_ = validation.text(query, self.settings.max_text_chars, what="query")
        return self._recall([query_], k, session, namespace, contiguity, since, until, metadata)[0]

    def recall_batch(
        self,
        queries: object,
        k: object = 5,
        session: object = None,
        namespace: object = "default",
        contiguity: object = 1,
        since: object = None,
        until: object = None,
        metadata: object = None,
    ) -> list[list[Hit]]:
        """`recall` for up to 256 queries with one encoder batch and one index search."""
        if not isinstance(queries, list):
            raise InvalidInput(f"queries must be a list of strings; got {type(queries).__name__}.")
        if not 1 <= len(queries) <= MAX_BATCH_QUERIES:
            raise InvalidInput(f"queries must hold 1 to {MAX_BATCH_QUERIES} strings; got {len(queries)}.")
        checked = [
            validation.text(q, self.settings.max_text_chars, what=f"queries[{i}]")
            for i, q in enumerate(queries)
        ]
        return self._recall(checked, k, session, namespace, contiguity, since, until, metadata)

    def forget(
        self,
        ids: object = None,
        session: object = None,
        namespace: object = "default",
        confirm: object = False,
    ) -> list[str]:
        """Remove events (by id, or a whole session) from the log and the index; return their ids."""
        namespace_ = validation.namespace(namespace)
        if confirm is not True:
            raise InvalidInput("forget deletes memories for good; call it again with confirm=true.")
        if (ids is None) == (session is None):
            raise InvalidInput("pass either ids (a list of event ids) or session, not both and not neither.")
        ids_: list[str] | None = None
        if ids is not None:
            if not isinstance(ids, list) or not ids:
                raise InvalidInput("ids must be a non-empty list of event id strings.")
            ids_ = list(dict.fromkeys(validation.event_id(i, f"ids[{n}]") for n, i in enumerate(ids)))
        session_ = None if session is None else validation.session(session)
        self.open()
        removed = self.event_log.forget(namespace_, ids_, session_)
        self._catch_up()
        return removed

    def predict_next(
        self,
        session: object = None,
        after_event_id: object = None,
        k: object = 5,
        namespace: object = "default",
    ) -> Prediction:
        """The stored episodes most likely needed next, after a session's latest (or a given) episode."""
        namespace_ = validation.namespace(namespace)
        k_ = validation.k(k)
        session_ = None if session is None else validation.session(session)
        self.open()
        self._catch_up()
        up_to = None
        if after_event_id is not None:
            after_event_id = validation.event_id(after_event_id, "after_event_id")
            anchor = self.event_log.by_id(after_event_id)
            if anchor is None or anchor.namespace != namespace_:
                raise NotFound(f"no event with id {after_event_id[:80]!r} in namespace {namespace_!r}.")
            if session_ is not None and session_ != anchor.session:
                raise InvalidInput(
                    f"event {after_event_id} belongs to session {anchor.session!r}, not {session_!r}."
                )
            session_, up_to = anchor.session, anchor.position
        elif session_ is None:
            session_ = self.event_log.latest_session(namespace_)
        checkpoint = self.predictors.get(namespace_)
        limit = checkpoint.context if checkpoint else DEFAULT_CONTEXT
        seqs, context = (
            self.event_log.context(namespace_, session_, up_to, limit, self._dim)
            if session_
            else (np.zeros(0, np.int64), None)
        )
        if context is None or len(seqs) == 0:
            if session is not None:
                raise NotFound(f"session {session_!r} has no episodes in namespace {namespace_!r}.")
            return Prediction("copy_last", [], checkpoint)
        method = checkpoint.method if checkpoint else "copy_last"
        if method in ("lvm", "blend") and checkpoint is not None:
            target = checkpoint.predict(context)
        elif method == "analog":
            target = self._analog(namespace_, seqs, context[-1])
        else:
            target = context[-1]
        hits = self._recall_vector(namespace_, target, k_, exclude=set(seqs.tolist()))
        return Prediction(method, hits, checkpoint)

    def _analog(self, namespace: str, context_seqs: Ids, current: Vectors) -> Vectors:
        """What followed the stored episode most like the current one (outside this context)."""
        index = self.index(namespace)
        if index is None:
            return current
        _, ids = index.search(current.reshape(1, -1), len(context_seqs) + 20)
        excluded = set(context_seqs.tolist())
        candidates = [int(i) for i in ids[0] if i >= 0 and int(i) not in excluded]
        found = self.event_log.by_seqs(candidates)
        for seq in candidates:
            event = found.get(seq)
            if event is None:
                continue
            following = self.event_log.neighbours(namespace, [(event.session, event.position + 1)], 0)
            if following:
                _, vectors = self.event_log.vectors_of(np.array([following[0].seq]), self._dim)
                if len(vectors):
                    successor: Vectors = vectors[0]
                    return successor
        return current

    def _recall_vector(self, namespace: str, vector: Vectors, k: int, exclude: set[int]) -> list[Hit]:
        index = self.index(namespace)
        if index is None or len(index) == 0:
            return []
        scores, ids = index.search(vector.reshape(1, -1).astype(np.float32), k + len(exclude))
        keep = [
            (float(s), int(i))
            for s, i in zip(scores[0], ids[0], strict=True)
            if i >= 0 and int(i) not in exclude
        ]
        found = self.event_log.by_seqs([i for _, i in keep[:k]])
        return [Hit(found[i], s, "prediction") for s, i in keep[:k] if i in found]

    def health(self, namespace: object = "default") -> dict[str, Any]:
        """The index's own report plus capacity, disk use and a one-word status with reasons."""
        namespace_ = validation.namespace(namespace)
        self.open()
        self._catch_up()
        index = self.index(namespace_)
        report: dict[str, Any] = (index or VectorIndex(self._dim, self.policy)).health()
        stored = self.event_log.count(namespace_)
        total = self.event_log.total()
        snapshot = self._snapshot_path(namespace_)
        report.update(
            namespace=namespace_,
            events_in_log=stored,
            capacity={
                "events": total,
                "max_events": self.settings.max_events,
                "used": round(total / self.settings.max_events, 4),
            },
            bytes_on_disk={
                "event_log": self.event_log.size_bytes(),
                "index_snapshot": snapshot.stat().st_size if snapshot.exists() else 0,
            },
        )
        reasons, status = [], "ok"
        if report["vectors"] != stored:
            status = "degraded"
            reasons.append(f"index holds {report['vectors']} vectors but the log {stored} events")
        if report["last_training_error"]:
            status = "degraded"
            reasons.append(f"last training failed: {report['last_training_error']}")
        if total >= CAPACITY_WARNING * self.settings.max_events:
            status = "warning" if status == "ok" else status
            reasons.append(f"{total:,} of {self.settings.max_events:,} events (EMX_MAX_EVENTS) used")
        recall = report["measured_recall_at_10"]
        if recall is not None and recall < self.policy.target_recall:
            status = "warning" if status == "ok" else status
            reasons.append(f"measured recall@10 {recall} is below the target {self.policy.target_recall}")
        if report["kind"] == "ivf" and report["batch_kernels"].startswith("unavailable"):
            status = "warning" if status == "ok" else status
            reasons.append(f"batch search kernels {report['batch_kernels']}; FAISS answers batches, slower")
        if self.integrity.startswith("failed"):
            status = "degraded"
            reasons.append(f"the event log's SQLite integrity check {self.integrity}")
        if self._snapshot_error is not None:
            status = "warning" if status == "ok" else status
            reasons.append(
                f"the last index snapshot could not be written ({self._snapshot_error}); the event log "
                "holds everything and a restart replays it"
            )
        if report["retraining"]:
            reasons.append("a retraining is in progress; reads and writes continue")
        report.update(status=status, reasons=reasons, integrity=self.integrity)
        return report

    def _recall(
        self,
        queries: list[str],
        k: object,
        session: object,
        namespace: object,
        contiguity: object,
        since: object,
        until: object,
        metadata: object,
    ) -> list[list[Hit]]:
        """Stage 1: the k most similar episodes. Stage 2: each one's neighbours in its session."""
        k_ = validation.k(k)
        namespace_ = validation.namespace(namespace)
        reach = validation.contiguity(contiguity)
        filters = Filters(
            session=None if session is None else validation.session(session),
            since=None if since is None else validation.timestamp(since, what="since"),
            until=None if until is None else validation.timestamp(until, what="until"),
            metadata=None if metadata is None else validation.metadata_filter(metadata),
        )
        self.open()
        vectors = self._encode(queries)
        self._catch_up()
        index = self.index(namespace_)
        if index is None or len(index) == 0:
            return [[] for _ in queries]
        allowed: Ids | None = None
        if filters.any:
            allowed = self.event_log.matching_seqs(namespace_, filters)
            scores, ids = self._filtered_search(index, vectors, k_, allowed)
        else:
            scores, ids = index.search(vectors, k_)
        found = self.event_log.by_seqs([int(i) for i in ids.ravel() if i >= 0])
        ranked = [
            [
                Hit(found[int(q)], float(s), "similarity")
                for s, q in zip(row_s, row_q, strict=True)
                if int(q) in found
            ]
            for row_s, row_q in zip(scores, ids, strict=True)
        ]
        if reach == 0:
            return ranked
        return self._with_neighbours(
            namespace_, ranked, reach, None if allowed is None else set(allowed.tolist())
        )

    def _with_neighbours(
        self, namespace: str, ranked: list[list[Hit]], reach: int, allowed: set[int] | None
    ) -> list[list[Hit]]:
        """The hits, best first, then each hit's session neighbours within `reach` positions.

        Neighbours come grouped by the hit they belong to (in the hits' order), closest first,
        each event at most once; so the first k results are exactly the similarity results.
        """
        anchors = sorted({(h.event.session, h.event.position) for hits in ranked for h in hits})
        by_place = {(e.session, e.position): e for e in self.event_log.neighbours(namespace, anchors, reach)}
        offsets = sorted((d for d in range(-reach, reach + 1) if d), key=lambda d: (abs(d), d))
        out = []
        for hits in ranked:
            shown = {h.event.seq for h in hits}
            merged = list(hits)
            for hit in hits:
                for offset in offsets:
                    event = by_place.get((hit.event.session, hit.event.position + offset))
                    if (
                        event is None
                        or event.seq in shown
                        or (allowed is not None and event.seq not in allowed)
                    ):
                        continue
                    shown.add(event.seq)
                    merged.append(
                        Hit(event, hit.score * CONTIGUITY_DECAY ** abs(offset), "contiguity", hit.event.id)
                    )
            out.append(merged)
        return out

    def _filtered_search(
        self, index: VectorIndex, queries: Vectors, k: int, allowed: Ids
    ) -> tuple[Scores, Ids]:
        """Search among `allowed` seqs only.

        A small candidate set is scored exactly from the stored embeddings: an IVF index probes
        only the lists its nprobe was tuned for, which may hold none of a small set's vectors.
        """
        if len(allowed) > EXACT_FILTER_LIMIT:
            return index.search(queries, k, allowed)
        seqs, vectors = self.event_log.vectors_of(allowed, self._dim)
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

    # -- index maintenance --------------------------------------------------------------------

    def _encode(self, texts: list[str]) -> Vectors:
        vectors = self.encoder.encode(texts)
        if vectors.shape[1] != self._dim:
            raise StoreMismatch(
                f"the encoder gives {vectors.shape[1]}-d vectors but the store holds {self._dim}-d ones; "
                "use the model the store was built with, or another EMX_DATA_DIR."
            )
        return vectors

    def _snapshot_path(self, namespace: str) -> Path:
        return self.settings.index_dir / f"{namespace}.emxidx"

    def _load_snapshots(self) -> None:
        """Load each namespace's snapshot if it is sound and consistent with the log."""
        assert self._log is not None
        max_seq = self._log.max_seq()
        for path in sorted(self.settings.index_dir.glob("*.emxidx")):
            namespace = path.stem
            try:
                index = VectorIndex.load(path, self.policy)
            except CorruptSnapshot as exc:
                log.warning(
                    "index snapshot unusable; rebuilding from the event log", path=str(path), reason=str(exc)
                )
                continue
            # What the log says the index should hold at its cursors: events up to last_seq, plus
            # those forgotten since last_forget (still in the snapshot until replayed).
            expected = self._log.count(namespace, up_to_seq=index.last_seq) + self._log.forgotten_count(
                namespace, after_change=index.last_forget, up_to_seq=index.last_seq
            )
            if index.dim != self._dim or index.last_seq > max_seq or expected != len(index):
                log.warning("index snapshot does not match the event log; rebuilding", path=str(path))
                continue
            self._indexes[namespace] = index
        # A namespace without a usable snapshot replays from the start of the log.
        unloaded = set(self._log.namespaces()) - set(self._indexes)
        if unloaded or not self._indexes:
            self._applied_seq = self._applied_forget = 0
        else:
            self._applied_seq = min(ix.last_seq for ix in self._indexes.values())
            self._applied_forget = min(ix.last_forget for ix in self._indexes.values())

    def _index_for(self, namespace: str) -> VectorIndex:
        index = self._indexes.get(namespace)
        if index is None:
            index = self._indexes[namespace] = VectorIndex(self._dim, self.policy)
        return index

    def _catch_up(self) -> None:
        """Apply every logged event and removal beyond what the indexes hold."""
        assert self._log is not None
        with self._index_lock:
            changed = 0
            for seqs, namespaces, vectors in self._log.vectors_after(self._applied_seq, self._dim):
                names = np.asarray(namespaces)
                for namespace in set(namespaces):
                    index = self._index_for(namespace)
                    mask = (names == namespace) & (seqs > index.last_seq)
                    if mask.any():
                        index.add(seqs[mask], vectors[mask])
                        self._dirty.add(namespace)
                self._applied_seq = int(seqs[-1])
                changed += len(seqs)
            removals = self._log.forgotten_after(self._applied_forget)
            for namespace in {ns for _, _, ns in removals}:
                index = self._index_for(namespace)
                gone = [seq for change, seq, ns in removals if ns == namespace and change > index.last_forget]
                if gone:
                    index.remove(np.array(gone, dtype=np.int64))
                    self._dirty.add(namespace)
            if removals:
                self._applied_forget = removals[-1][0]
                changed += len(removals)
            for index in self._indexes.values():
                index.last_seq = max(index.last_seq, self._applied_seq)
                index.last_forget = max(index.last_forget, self._applied_forget)
            self._unsaved += changed
            # Snapshots rewrite the whole index, so space them by a tenth of its size at least:
            # the cost per event stays constant, and a restart replays at most that tenth.
            total = sum(len(ix) for ix in self._indexes.values())
            due = self._unsaved >= max(self.settings.snapshot_every, total // 10)
        if due:
            self._snapshot_in_background()

    def _snapshot_in_background(self) -> None:
        with self._index_lock:
            if self._snapshot_thread is not None and self._snapshot_thread.is_alive():
                return
            self._snapshot_thread = threading.Thread(
                target=self._snapshot_quietly, name="emx-snapshot", daemon=True
            )
            self._snapshot_thread.start()

    def _snapshot_quietly(self) -> None:
        try:
            self.snapshot()
        except Exception:
            log.exception("index snapshot failed; the event log still holds everything")

    def snapshot(self) -> None:
        """Write a snapshot of every namespace whose index changed since the last one."""
        with self._snapshot_lock:
            with self._index_lock:
                blobs = {
                    ns: (ix.to_bytes(), ix.last_seq, ix.last_forget)
                    for ns, ix in self._indexes.items()
                    if ns in self._dirty
                }
                self._dirty.clear()
                self._unsaved = 0
            try:
                with self._snapshot_file_lock():
                    for namespace, (blob, last_seq, last_forget) in blobs.items():
                        path = self._snapshot_path(namespace)
                        on_disk = snapshot_header(path) or {}
                        if (
                            on_disk.get("last_seq", -1) >= last_seq
                            and on_disk.get("last_forget", -1) >= last_forget
                        ):
                            continue  # another process already wrote one at least as new
                        write_atomic(path, blob)
            except BaseException as exc:
                with self._index_lock:
                    self._dirty.update(blobs)
                self._snapshot_error = f"{type(exc).__name__}: {exc}"
                raise
            self._snapshot_error = None

    def _remove_interrupted_snapshots(self) -> None:
        """Delete temporary files of snapshot writes that a crash interrupted.

        Snapshots are written under the data directory's snapshot lock, so a temporary file seen
        while holding it belongs to no write in progress.
        """
        if not self.settings.index_dir.is_dir():
            return
        with self._snapshot_file_lock():
            for leftover in self.settings.index_dir.glob(".*.tmp"):
                leftover.unlink(missing_ok=True)
                log.info("removed the temporary file of an interrupted snapshot", path=str(leftover))

    @contextlib.contextmanager
    def _snapshot_file_lock(self) -> Iterator[None]:
        """Serialise snapshot writers across processes sharing the data directory."""
        self.settings.index_dir.mkdir(parents=True, exist_ok=True)
        with (self.settings.index_dir / ".lock").open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
