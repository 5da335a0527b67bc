"""The per-namespace vector indexes derived from the event log, and their cursors into it.

Every change to an index goes through one path, `catch_up`, which applies the events and the
removals the log holds beyond the cursors the indexes have seen. Writes commit to the log and
then catch up; reads catch up before searching, so changes made by another process sharing the
data directory are seen too. Snapshots save the indexes with their cursors, so a restart replays
only what is newer.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

import numpy as np
import structlog

from emx_mcp.embedding import Vectors
from emx_mcp.storage import snapshots
from emx_mcp.storage.events import EventLog
from emx_mcp.storage.index import Ids, VectorIndex
from emx_mcp.storage.policy import TrainingPolicy

log = structlog.get_logger(__name__)


class Replica:
    """One VectorIndex per namespace, kept in step with an EventLog."""

    def __init__(self, folder: Path, policy: TrainingPolicy, dim: int, snapshot_every: int) -> None:
        self.folder = folder
        self.policy = policy
        self.dim = dim
        self.snapshot_every = snapshot_every
        self._indexes: dict[str, VectorIndex] = {}
        self._applied_seq = 0
        self._applied_forget = 0
        self._dirty: set[str] = set()
        self._unsaved = 0
        self._lock = threading.RLock()
        self._snapshot_lock = threading.Lock()
        self._snapshot_thread: threading.Thread | None = None
        self.snapshot_error: str | None = None
        # Namespaces whose snapshot was missing or refused at the last load, hence rebuilt.
        self.rebuilt: set[str] = set()
        self._log: EventLog | None = None

    def __len__(self) -> int:
        with self._lock:
            return sum(len(index) for index in self._indexes.values())

    def index(self, namespace: str) -> VectorIndex | None:
        with self._lock:
            return self._indexes.get(namespace)

    def path(self, namespace: str) -> Path:
        return self.folder / snapshots.file_name(namespace)

    # -- start --------------------------------------------------------------------------------

    def load(self, event_log: EventLog) -> None:
        """Load each namespace's snapshot if it proves to be of this log, catch up, and rewrite the rest.

        A snapshot of another store, of another namespace, of a log restored from an older
        backup, or damaged in any way is not used: that namespace is rebuilt from the log's
        stored embeddings and its snapshot written again at once.
        """
        self._log = event_log
        snapshots.remove_leftovers(self.folder)
        self._remove_strays()
        high_water = event_log.high_water()
        for namespace in event_log.namespaces():
            index = self._load_one(event_log, namespace, high_water)
            if index is None:
                self.rebuilt.add(namespace)
            else:
                self._indexes[namespace] = index
        # A namespace without a usable snapshot replays from the start of the log.
        if self.rebuilt or not self._indexes:
            self._applied_seq = self._applied_forget = 0
        else:
            self._applied_seq = min(ix.last_seq for ix in self._indexes.values())
            self._applied_forget = min(ix.last_forget for ix in self._indexes.values())
        self.catch_up(event_log)
        if self.rebuilt:
            with self._lock:
                self._dirty |= self.rebuilt
            self.snapshot_in_background(event_log)

    def _load_one(self, event_log: EventLog, namespace: str, high_water: int) -> VectorIndex | None:
        path = self.path(namespace)
        head = snapshots.header(path)
        if head is None:
            if path.exists():
                log.warning("index snapshot unreadable; rebuilding from the event log", path=str(path))
            return None
        try:
            if not 0 <= int(head["last_seq"]) <= high_water:
                raise snapshots.CorruptSnapshot("it covers events the log never had")
            last_seq, last_forget = int(head["last_seq"]), int(head["last_forget"])
            expected = snapshots.Provenance(
                event_log.store_id,
                namespace,
                last_seq,
                last_forget,
                event_log.fingerprint(last_seq, last_forget),
            )
            index = snapshots.load(path, self.policy, expected)
        except (snapshots.CorruptSnapshot, ValueError, TypeError) as exc:
            log.warning(
                "index snapshot refused; rebuilding from the event log", path=str(path), reason=str(exc)
            )
            return None
        # What the log says the index should hold at its cursors: events up to last_seq, plus
        # those forgotten since last_forget (still in the snapshot until replayed).
        expected_count = event_log.count(namespace, up_to_seq=index.last_seq) + event_log.forgotten_count(
            namespace, after_change=index.last_forget, up_to_seq=index.last_seq
        )
        if index.dim != self.dim or expected_count != len(index):
            log.warning("index snapshot does not match the event log; rebuilding", path=str(path))
            return None
        index.vector_source = self.vector_source
        return index

    def _remove_strays(self) -> None:
        """Delete snapshot files that are of another format or under a name that is not their own."""
        if not self.folder.is_dir():
            return
        with snapshots.file_lock(self.folder):
            for path in self.folder.glob(f"*{snapshots.SUFFIX}"):
                head = snapshots.header(path)
                namespace = head.get("namespace") if head else None
                if not isinstance(namespace, str) or path.name != snapshots.file_name(namespace):
                    path.unlink(missing_ok=True)
                    log.info(
                        "removed a snapshot file that is not this version's or is misnamed", path=str(path)
                    )

    # -- catching up --------------------------------------------------------------------------

    def _index_for(self, namespace: str) -> VectorIndex:
        index = self._indexes.get(namespace)
        if index is None:
            index = self._indexes[namespace] = VectorIndex(self.dim, self.policy)
            index.vector_source = self.vector_source
        return index

    def catch_up(self, event_log: EventLog) -> None:
        """Apply every logged event and removal beyond what the indexes hold."""
        with self._lock:
            changed = self._apply_events(event_log) + self._apply_removals(event_log)
            for index in self._indexes.values():
                index.last_seq = max(index.last_seq, self._applied_seq)
                index.last_forget = max(index.last_forget, self._applied_forget)
            self._unsaved += changed
            # Snapshots rewrite the whole index, so space them by a tenth of its size at least:
            # the cost per event stays constant, and a restart replays at most that tenth.
            total = sum(len(ix) for ix in self._indexes.values())
            due = self._unsaved >= max(self.snapshot_every, total // 10)
        if due:
            self.snapshot_in_background(event_log)

    def _apply_events(self, event_log: EventLog) -> int:
        changed = 0
        for seqs, namespaces, vectors in event_log.vectors_after(self._applied_seq, self.dim):
            names = np.asarray(namespaces)
            for namespace in set(namespaces):
                index = self._index_for(namespace)
                mask = (names == namespace) & (seqs > index.last_seq)
                if mask.any():
                    index.add(seqs[mask], vectors[mask])
                    self._dirty.add(namespace)
            self._applied_seq = int(seqs[-1])
            changed += len(seqs)
        return changed

    def _apply_removals(self, event_log: EventLog) -> int:
        removals = event_log.forgotten_after(self._applied_forget)
        for namespace in {ns for _, _, ns in removals}:
            index = self._index_for(namespace)
            gone = [seq for change, seq, ns in removals if ns == namespace and change > index.last_forget]
            if gone:
                index.remove(np.array(gone, dtype=np.int64))
                self._dirty.add(namespace)
        if removals:
            self._applied_forget = removals[-1][0]
        return len(removals)

    # -- snapshots ----------------------------------------------------------------------------

    def snapshot_in_background(self, event_log: EventLog) -> None:
        with self._lock:
            if self._snapshot_thread is not None and self._snapshot_thread.is_alive():
                return
            self._snapshot_thread = threading.Thread(
                target=self._snapshot_quietly, args=(event_log,), name="emx-snapshot", daemon=True
            )
            self._snapshot_thread.start()

    def wait_for_snapshots(self, timeout: float | None = None) -> None:
        """Wait for a background snapshot in progress, if any."""
        thread = self._snapshot_thread
        if thread is not None:
            thread.join(timeout)

    def _snapshot_quietly(self, event_log: EventLog) -> None:
        try:
            self.snapshot(event_log)
        except Exception:
            log.exception("index snapshot failed; the event log still holds everything")

    def snapshot(self, event_log: EventLog, every_namespace: bool = False) -> None:
        """Write a snapshot of every namespace whose index changed since the last one (or of all).

        Tool calls go on meanwhile: each index is frozen (searches continue, adds wait in its
        delta) only while its own file is streamed out, and the replica's lock is held just long
        enough to freeze it at a position of the log.
        """
        with self._snapshot_lock:
            with self._lock:
                chosen = sorted(set(self._indexes) if every_namespace else self._dirty)
                self._dirty.difference_update(chosen)
                self._unsaved = 0
            try:
                for namespace in chosen:
                    self._snapshot_one(event_log, namespace)
            except BaseException as exc:
                with self._lock:
                    self._dirty.update(chosen)
                self.snapshot_error = f"{type(exc).__name__}: {exc}"
                raise
            self.snapshot_error = None

    def _snapshot_one(self, event_log: EventLog, namespace: str) -> None:
        with contextlib.ExitStack() as stack:
            with self._lock:
                index = self._indexes[namespace]
                view = stack.enter_context(index.frozen())
                provenance = snapshots.Provenance(
                    event_log.store_id,
                    namespace,
                    index.last_seq,
                    index.last_forget,
                    event_log.fingerprint(index.last_seq, index.last_forget),
                )
            path = self.path(namespace)
            with snapshots.file_lock(self.folder):
                if not self._newer_on_disk(event_log, path, provenance):
                    snapshots.write(path, view, index.dim, index.policy.kind, provenance)

    @staticmethod
    def _newer_on_disk(event_log: EventLog, path: Path, mine: snapshots.Provenance) -> bool:
        """Whether another process already wrote a snapshot of this log at least as new as `mine`."""
        head = snapshots.header(path)
        if head is None or head["store_id"] != mine.store_id or head["namespace"] != mine.namespace:
            return False
        if head["last_seq"] < mine.last_seq or head["last_forget"] < mine.last_forget:
            return False
        if head["last_seq"] > event_log.high_water():
            return False
        return bool(head["fingerprint"] == event_log.fingerprint(head["last_seq"], head["last_forget"]))

    def vector_source(self, ids: Ids) -> tuple[Ids, Vectors]:
        """The true stored vectors of those of `ids` still in the log: what a lossy index retrains from."""
        assert self._log is not None
        return self._log.vectors_of(ids, self.dim)

    def close(self, event_log: EventLog) -> None:
        """Write final snapshots; a failure only costs a longer replay at the next start."""
        self.wait_for_snapshots()
        try:
            self.snapshot(event_log)
        except Exception:
            log.exception("final index snapshot failed; the next start replays the event log")
