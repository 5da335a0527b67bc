"""The memory use cases. Owns one EventLog, one Encoder and one VectorIndex per namespace.

Every change to an index goes through one path, `_catch_up`, which applies the events the log
holds beyond the last seq the index has seen. `remember` commits to the log and then catches
up; `recall` catches up before searching, so events written by another process are found too.
"""

from __future__ import annotations

import contextlib
import fcntl
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import structlog

from emx_mcp import validation
from emx_mcp.config import Settings
from emx_mcp.embedding import Encoder, Vectors
from emx_mcp.errors import StoreMismatch
from emx_mcp.storage.events import Event, EventLog, NewEvent
from emx_mcp.storage.index import CorruptSnapshot, VectorIndex, snapshot_last_seq, write_atomic

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Hit:
    event: Event
    score: float
    via: Literal["similarity", "contiguity"]


class MemoryService:
    """Durable episodic memory: remember, recall, and the index bookkeeping behind them."""

    def __init__(self, settings: Settings, encoder: Encoder) -> None:
        self.settings = settings
        self.encoder = encoder
        self._log: EventLog | None = None
        self._dim = 0
        self._indexes: dict[str, VectorIndex] = {}
        self._applied_seq = 0
        self._dirty: set[str] = set()
        self._unsaved = 0
        self._open_lock = threading.Lock()
        self._index_lock = threading.RLock()
        self._snapshot_lock = threading.Lock()
        self._snapshot_thread: threading.Thread | None = None

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
                self._load_snapshots()
                self._catch_up()
            except BaseException:
                self._log = None
                event_log.close()
                raise
            log.info("store opened", data_dir=str(self.settings.data_dir), events=len(self), dim=self._dim)

    def warm_up(self) -> None:
        """Open the store and load the encoder, so the first tool call is fast."""
        self.open()
        self._encode(["warm-up"])

    def close(self) -> None:
        """Write final snapshots and close the log."""
        with self._open_lock:
            if self._log is None:
                return
            thread = self._snapshot_thread
            if thread is not None:
                thread.join()
            self.snapshot()
            self._log.close()
            self._log = None

    def __len__(self) -> int:
        with self._index_lock:
            return sum(len(index) for index in self._indexes.values())

    @property
    def event_log(self) -> EventLog:
        self.open()
        assert self._log is not None
        return self._log

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
    ) -> list[Event]:
        """Store `text` as an event of `session` (a new session if None); return it once committed."""
        text_ = validation.text(text, self.settings.max_text_chars)
        namespace_ = validation.namespace(namespace)
        session_ = uuid.uuid4().hex if session is None else validation.session(session)
        metadata_ = {} if metadata is None else validation.metadata(metadata)
        timestamp_ = validation.now() if timestamp is None else validation.timestamp(timestamp)
        self.open()
        vectors = self._encode([text_])
        events = self.event_log.append(
            namespace_, session_, [NewEvent(text_, timestamp_, metadata_)], vectors
        )
        self._catch_up()
        return events

    def recall(
        self, query: object, k: object = 5, session: object = None, namespace: object = "default"
    ) -> list[Hit]:
        """The k stored events most similar to `query`, best first."""
        query_ = validation.text(query, self.settings.max_text_chars, what="query")
        k_ = validation.k(k)
        namespace_ = validation.namespace(namespace)
        session_ = None if session is None else validation.session(session)
        self.open()
        vectors = self._encode([query_])
        self._catch_up()
        with self._index_lock:
            index = self._indexes.get(namespace_)
        if index is None or len(index) == 0:
            return []
        allowed = None if session_ is None else self.event_log.session_seqs(namespace_, session_)
        scores, ids = index.search(vectors, k_, allowed)
        found = self.event_log.by_seqs([int(i) for i in ids[0] if i >= 0])
        return [
            Hit(found[int(seq)], float(score), "similarity")
            for score, seq in zip(scores[0], ids[0], strict=True)
            if int(seq) in found
        ]

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
                index = VectorIndex.load(path)
            except CorruptSnapshot as exc:
                log.warning(
                    "index snapshot unusable; rebuilding from the event log", path=str(path), reason=str(exc)
                )
                continue
            consistent = (
                index.dim == self._dim
                and index.last_seq <= max_seq
                and self._log.count(namespace, up_to_seq=index.last_seq) == len(index)
            )
            if not consistent:
                log.warning("index snapshot does not match the event log; rebuilding", path=str(path))
                continue
            self._indexes[namespace] = index
        # A namespace without a usable snapshot replays from the start of the log.
        unloaded = set(self._log.namespaces()) - set(self._indexes)
        loaded = [ix.last_seq for ix in self._indexes.values()]
        self._applied_seq = 0 if unloaded or not loaded else min(loaded)

    def _catch_up(self) -> None:
        """Apply every logged event beyond what the indexes hold."""
        assert self._log is not None
        with self._index_lock:
            for seqs, namespaces, vectors in self._log.vectors_after(self._applied_seq, self._dim):
                names = np.asarray(namespaces)
                for namespace in set(namespaces):
                    index = self._indexes.get(namespace)
                    if index is None:
                        index = self._indexes[namespace] = VectorIndex(self._dim)
                    mask = (names == namespace) & (seqs > index.last_seq)
                    if mask.any():
                        index.add(seqs[mask], vectors[mask])
                        self._dirty.add(namespace)
                self._applied_seq = int(seqs[-1])
                self._unsaved += len(seqs)
            due = self._unsaved >= self.settings.snapshot_every
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
                blobs = {ns: (self._indexes[ns].to_bytes(), self._indexes[ns].last_seq) for ns in self._dirty}
                self._dirty.clear()
                self._unsaved = 0
            try:
                with self._snapshot_file_lock():
                    for namespace, (blob, last_seq) in blobs.items():
                        path = self._snapshot_path(namespace)
                        on_disk = snapshot_last_seq(path)
                        if on_disk is not None and on_disk >= last_seq:
                            continue  # another process already wrote one at least as new
                        write_atomic(path, blob)
            except BaseException:
                with self._index_lock:
                    self._dirty.update(blobs)
                raise

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
