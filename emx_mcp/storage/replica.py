"""The per-namespace vector indexes derived from the event log, and their cursors into it.

Every change to an index goes through one path, `catch_up`, which applies the events and the
removals the log holds beyond the cursors the indexes have seen. Writes commit to the log and
then catch up; reads catch up before searching, so changes made by another process sharing the
data directory are seen too. Snapshots save the indexes with their cursors, so a restart replays
only what is newer.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import structlog

from emx_mcp.storage import snapshots
from emx_mcp.storage.events import EventLog
from emx_mcp.storage.index import VectorIndex
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

    def __len__(self) -> int:
        with self._lock:
            return sum(len(index) for index in self._indexes.values())

    def index(self, namespace: str) -> VectorIndex | None:
        with self._lock:
            return self._indexes.get(namespace)

    def path(self, namespace: str) -> Path:
        return self.folder / f"{namespace}{snapshots.SUFFIX}"

    # -- start --------------------------------------------------------------------------------

    def load(self, event_log: EventLog) -> None:
        """Load each namespace's snapshot if it is sound and consistent with the log, then catch up."""
        snapshots.remove_leftovers(self.folder)
        max_seq = event_log.max_seq()
        for path in sorted(self.folder.glob(f"*{snapshots.SUFFIX}")):
            namespace = path.name.removesuffix(snapshots.SUFFIX)
            try:
                index = snapshots.load(path, self.policy)
            except snapshots.CorruptSnapshot as exc:
                log.warning(
                    "index snapshot unusable; rebuilding from the event log", path=str(path), reason=str(exc)
                )
                continue
            # What the log says the index should hold at its cursors: events up to last_seq, plus
            # those forgotten since last_forget (still in the snapshot until replayed).
            expected = event_log.count(namespace, up_to_seq=index.last_seq) + event_log.forgotten_count(
                namespace, after_change=index.last_forget, up_to_seq=index.last_seq
            )
            if index.dim != self.dim or index.last_seq > max_seq or expected != len(index):
                log.warning("index snapshot does not match the event log; rebuilding", path=str(path))
                continue
            self._indexes[namespace] = index
        # A namespace without a usable snapshot replays from the start of the log.
        unloaded = set(event_log.namespaces()) - set(self._indexes)
        if unloaded or not self._indexes:
            self._applied_seq = self._applied_forget = 0
        else:
            self._applied_seq = min(ix.last_seq for ix in self._indexes.values())
            self._applied_forget = min(ix.last_forget for ix in self._indexes.values())
        self.catch_up(event_log)

    # -- catching up --------------------------------------------------------------------------

    def _index_for(self, namespace: str) -> VectorIndex:
        index = self._indexes.get(namespace)
        if index is None:
            index = self._indexes[namespace] = VectorIndex(self.dim, self.policy)
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
            self.snapshot_in_background()

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

    def snapshot_in_background(self) -> None:
        with self._lock:
            if self._snapshot_thread is not None and self._snapshot_thread.is_alive():
                return
            self._snapshot_thread = threading.Thread(
                target=self._snapshot_quietly, name="emx-snapshot", daemon=True
            )
            self._snapshot_thread.start()

    def wait_for_snapshots(self, timeout: float | None = None) -> None:
        """Wait for a background snapshot in progress, if any."""
        thread = self._snapshot_thread
        if thread is not None:
            thread.join(timeout)

    def _snapshot_quietly(self) -> None:
        try:
            self.snapshot()
        except Exception:
            log.exception("index snapshot failed; the event log still holds everything")

    def snapshot(self, every_namespace: bool = False) -> None:
        """Write a snapshot of every namespace whose index changed since the last one (or of all)."""
        with self._snapshot_lock:
            with self._lock:
                chosen = set(self._indexes) if every_namespace else set(self._dirty)
                blobs = {
                    ns: (snapshots.to_bytes(ix), ix.last_seq, ix.last_forget)
                    for ns, ix in self._indexes.items()
                    if ns in chosen
                }
                self._dirty.clear()
                self._unsaved = 0
            try:
                self._write(blobs)
            except BaseException as exc:
                with self._lock:
                    self._dirty.update(blobs)
                self.snapshot_error = f"{type(exc).__name__}: {exc}"
                raise
            self.snapshot_error = None

    def _write(self, blobs: dict[str, tuple[bytes, int, int]]) -> None:
        with snapshots.file_lock(self.folder):
            for namespace, (blob, last_seq, last_forget) in blobs.items():
                path = self.path(namespace)
                on_disk = snapshots.header(path) or {}
                if on_disk.get("last_seq", -1) >= last_seq and on_disk.get("last_forget", -1) >= last_forget:
                    continue  # another process already wrote one at least as new
                snapshots.write(path, blob)

    def close(self) -> None:
        """Write final snapshots; a failure only costs a longer replay at the next start."""
        self.wait_for_snapshots()
        try:
            self.snapshot()
        except Exception:
            log.exception("final index snapshot failed; the next start replays the event log")
