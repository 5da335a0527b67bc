"""Training the IVF index in the background, and measuring the recall it reaches (DESIGN invariants 2-5).

Training runs in a background thread on a consistent copy of every stored vector: k-means on a
sample of them (up to 256 per centroid), then every vector is added to the new IVF index under
its id. Adds and removes that arrive meanwhile go to the live index and are replayed on the new
one, which replaces the live index only if both hold the same number of vectors. After each
training, `nprobe` is set to the smallest value whose recall@10, measured on a sample of stored
vectors against exact search, reaches the target. Retraining (same procedure, nlist re-chosen)
happens when the store doubles or the lists drift out of balance.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import TYPE_CHECKING, Any

import faiss
import numpy as np
import structlog

from emx_mcp.embedding import Vectors
from emx_mcp.storage.index import Ids, extract
from emx_mcp.storage.policy import IndexKind, nlist_for, training_sample_size

if TYPE_CHECKING:
    from emx_mcp.storage.index import VectorIndex

log = structlog.get_logger(__name__)

RECALL_K = 10


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def new_ivf(kind: IndexKind, dim: int, nlist: int) -> Any:
    # FAISS's Python layer keeps the quantizer alive as long as the index refers to it.
    quantizer = faiss.IndexFlatIP(dim)
    index: Any
    if kind == "ivf_sq8":
        index = faiss.IndexIVFScalarQuantizer(
            quantizer, dim, nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
        )
    else:
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    return index


def stored_vectors(live: Any, delta: Any, dim: int) -> tuple[Ids, Vectors]:
    """Every (id, vector) of the live index and its delta: what a training starts from."""
    ids, vectors = extract(live, dim)
    if delta.ntotal:
        delta_ids, delta_vectors = extract(delta, dim)
        ids, vectors = np.concatenate([ids, delta_ids]), np.concatenate([vectors, delta_vectors])
    return ids, vectors


def exact_neighbours(base: Vectors, base_ids: Ids, queries: Vectors, k: int) -> Ids:
    """Ids (m, k) of each query's k nearest vectors of `base` by inner product, -1 past the end."""
    _, rows = faiss.knn(queries, base, min(k, len(base)), metric=faiss.METRIC_INNER_PRODUCT)
    ids: Ids = np.where(rows >= 0, base_ids[np.maximum(rows, 0)], -1)
    return ids


def recall_at(truth: Ids, found: Ids, probe_ids: Ids, k: int = RECALL_K) -> float:
    """Mean overlap of the top k, leaving out each probe's own id (a stored vector finds itself)."""
    hits = total = 0
    for own, want, got in zip(probe_ids, truth, found, strict=True):
        want_top = [int(i) for i in want if i != own and i >= 0][:k]
        got_top = [int(i) for i in got if i != own and i >= 0][:k]
        hits += len(set(want_top).intersection(got_top))
        total += len(want_top)
    return hits / total if total else 1.0


def calibrate_nprobe(
    index: Any, probes: Vectors, probe_ids: Ids, truth: Ids, target: float
) -> tuple[int, float]:
    """Smallest nprobe whose recall@10 reaches `target` (or nlist, the best possible)."""

    def measure(nprobe: int) -> float:
        params = faiss.SearchParametersIVF(nprobe=nprobe)  # type: ignore[call-arg]
        _, found = index.search(probes, RECALL_K + 1, params=params)
        return recall_at(truth, found, probe_ids)

    nlist = int(index.nlist)
    low, nprobe = 0, 1
    while True:
        recall = measure(nprobe)
        if recall >= target or nprobe >= nlist:
            break
        low, nprobe = nprobe, min(nlist, nprobe * 2)
    best = (nprobe, recall)
    high = nprobe
    while high - low > 1 and best[1] >= target:  # binary search in (low, high]
        mid = (low + high) // 2
        r = measure(mid)
        if r >= target:
            high, best = mid, (mid, r)
        else:
            low = mid
    return best


# At most this many trainings build at once in a process (each needs 2-3x its vectors in memory);
# others wait their turn, and health reports them as queued.
MAX_CONCURRENT_TRAININGS = 1
_slots = threading.BoundedSemaphore(MAX_CONCURRENT_TRAININGS)
_queue_guard = threading.Lock()
_queued = 0

# After a failed training, wait this long before the next attempt, doubling up to the maximum.
RETRY_FIRST_S = 10.0
RETRY_MAX_S = 900.0


def queued_trainings() -> int:
    """Trainings waiting for their turn in this process."""
    return _queued


class Trainer:
    """Decides when an index (re)trains, and runs the training in a background thread."""

    def __init__(self, index: VectorIndex) -> None:
        self._index = index
        self._worker: threading.Thread | None = None
        self._guard = threading.Lock()
        self._next_balance_check = 0
        self.queued = False
        self.failures = 0  # consecutive failed trainings
        self._retry_at = 0.0  # time.monotonic() before which no background training starts

    def retry_in(self) -> float | None:
        """Seconds until a failed training may be tried again; None when nothing failed."""
        if not self.failures:
            return None
        return max(0.0, round(self._retry_at - time.monotonic(), 1))

    def maybe_start(self) -> None:
        """Start a background training if one is due and none is running."""
        if not self._index.retraining and self.due():
            self.start(background=True)

    def due(self) -> bool:
        if self.failures and time.monotonic() < self._retry_at:
            return False
        index = self._index
        n = len(index)
        policy, state = index.policy, index.state
        if not index.trained:
            return policy.should_train(n, trained=False)
        # Measuring balance walks every list, so do it about once per 1% of growth.
        if n < self._next_balance_check and n < policy.retrain_growth * state.n_at_training:
            return False
        self._next_balance_check = n + max(1_000, n // 100)
        return policy.should_retrain(n, state.n_at_training, index.imbalance(), state.imbalance_at_training)

    def start(self, background: bool) -> None:
        with self._guard:
            if self._worker is not None and self._worker.is_alive():
                return
            if background:
                self._worker = threading.Thread(target=self._run_logged, name="emx-index-train", daemon=True)
                self._worker.start()
                return
        self._run_in_turn()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for a background training to finish; True if none is running."""
        worker = self._worker
        if worker is not None:
            worker.join(timeout)
            return not worker.is_alive()
        return True

    def _run_logged(self) -> None:
        # Vectors that arrived during a training may already call for the next one; a training
        # that swapped nothing in (too few vectors, or refused) is not repeated at once.
        while self._run_in_turn() and self.due():
            pass

    def _run_in_turn(self) -> bool:
        """Wait for a training slot, then train; True if a new index was swapped in."""
        global _queued
        with _queue_guard:
            _queued += 1
        self.queued = True
        try:
            with _slots:
                with _queue_guard:
                    _queued -= 1
                self.queued = False
                return self._attempt()
        finally:
            if self.queued:
                with _queue_guard:
                    _queued -= 1
                self.queued = False

    def _attempt(self) -> bool:
        index = self._index
        try:
            swapped = self.run_once()
        except Exception as exc:
            index.cancel_build()
            index.state.last_training_error = f"{type(exc).__name__}: {exc}"
            log.exception("index training failed; the live index is unchanged")
            swapped = False
        if index.state.last_training_error is not None and not swapped:
            self.failures += 1
            self._retry_at = time.monotonic() + min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** (self.failures - 1))
        elif swapped:
            self.failures = 0
        return swapped

    def run_once(self) -> bool:
        """Build a new IVF index from every stored vector and swap it in; True if it was swapped in."""
        index = self._index
        started = time.perf_counter()
        ids, vectors = index.begin_build()
        n = len(ids)
        nlist = nlist_for(n)
        if n < index.policy.train_at or nlist < 2:
            index.cancel_build()
            return False
        state = index.state
        rng = np.random.default_rng(index.policy.seed + state.trainings)
        sample_size = training_sample_size(n, nlist)
        new = new_ivf(index.policy.kind, index.dim, nlist)
        new.train(vectors[rng.choice(n, sample_size, replace=False)])
        new.add_with_ids(vectors, ids)
        probe_rows = rng.choice(n, min(n, index.policy.probe_queries), replace=False)
        probe_ids, probes = ids[probe_rows], np.ascontiguousarray(vectors[probe_rows])
        truth = exact_neighbours(vectors, ids, probes, RECALL_K + 1)
        target = index.policy.calibration_target(len(probe_ids), RECALL_K)
        nprobe, recall = calibrate_nprobe(new, probes, probe_ids, truth, target)
        del vectors
        measured_at = utc_now()
        trained = dataclasses.replace(
            state,
            nprobe=nprobe,
            measured_recall_at_10=round(recall, 4),
            recall_measured_at=measured_at,
            trained_at=measured_at,
            recall_probes=len(probe_ids),
            training_size=sample_size,
            training_seconds=round(time.perf_counter() - started, 3),
            n_at_training=n,
            trainings=state.trainings + 1,
            last_training_error=None,
        )
        refused = index.finish_build(new, probe_ids, probes, trained)
        if refused is not None:
            index.state.last_training_error = refused
            log.error("index training refused", reason=refused)
            return False
        index.state.imbalance_at_training = index.imbalance()
        log.info(
            "index trained",
            vectors=n,
            nlist=nlist,
            nprobe=nprobe,
            recall_at_10=round(recall, 4),
            seconds=trained.training_seconds,
        )
        return True
