"""The FAISS vector index: exact while small, IVF once it pays off, never losing a vector.

Ids are event seqs (int64); scores are inner products of unit vectors (cosine similarity).

Life of the index (DESIGN invariants 2-5):
- Below `TrainingPolicy.train_at` vectors live in an exact flat index (the training buffer), so
  search works from the first vector and has recall 1.
- Training runs in a background thread on a consistent copy of every stored vector: k-means on a
  sample of them (up to 256 per centroid), then every vector is added to the new IVF index under
  its id. Adds and removes that arrive meanwhile go to the live index and are replayed on the new
  one, which replaces the live index only if both hold the same number of vectors.
- After each training, `nprobe` is set to the smallest value whose recall@10, measured on a sample
  of stored vectors against exact search, reaches the target.
- Retraining (same procedure, nlist re-chosen) happens when the store doubles or the lists drift
  out of balance. Reads and writes go on throughout.

A snapshot on disk holds the live index, the measurements, and the last seq it contains.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt
import structlog
from faiss.contrib.inspect_tools import get_invlist

from emx_mcp.embedding import Vectors
from emx_mcp.storage import ivf_batch
from emx_mcp.storage.policy import TrainingPolicy, nlist_for, training_sample_size

log = structlog.get_logger(__name__)

Ids = npt.NDArray[np.int64]
Scores = npt.NDArray[np.float32]

# Once trained, new vectors wait in an exact flat index of at most this many and are then assigned
# to their lists together: one matrix product instead of a pass over every centroid per vector.
DELTA_MAX = 512

# Below this many rows, FAISS runs on the calling thread alone: single queries and adds are faster
# that way, and immune to OpenMP threads spin-waiting when the other core is busy.
SMALL_BATCH = 32

_MAGIC = b"EMXIDX3\n"
_HEADER_LEN = struct.Struct("<Q")
RECALL_K = 10


class CorruptSnapshot(Exception):
    """A snapshot file is truncated, altered or of another format; rebuild from the log."""


class _ReadWriteLock:
    """Many concurrent searches, or one writer. Writers do not starve: a waiting writer blocks new readers."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


@dataclass(slots=True)
class IndexState:
    """What the index knows about itself; saved with every snapshot."""

    nprobe: int = 0
    measured_recall_at_10: float | None = None
    recall_measured_at: str | None = None
    recall_probes: int = 0
    trained_at: str | None = None
    training_size: int = 0
    training_seconds: float = 0.0
    n_at_training: int = 0
    imbalance_at_training: float = 0.0
    trainings: int = 0
    last_training_error: str | None = None


@dataclass(slots=True)
class _Build:
    """Adds and removes that reach the live index while a new one is being built."""

    ops: list[tuple[Ids, Vectors | None]] = field(default_factory=list)  # vectors None: a removal


@contextmanager
def _threads_for(rows: int) -> Iterator[None]:
    """One FAISS thread for small calls; FAISS's thread count is per calling thread."""
    if rows >= SMALL_BATCH:
        yield
        return
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)


def _merge(s1: Scores, i1: Ids, s2: Scores, i2: Ids, k: int) -> tuple[Scores, Ids]:
    """The k best of two result sets per query row; missing results (-1) sort last."""
    scores = np.hstack([s1, s2])
    ids = np.hstack([i1, i2])
    scores[ids < 0] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(ids, order, axis=1)


def _utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _flat(dim: int) -> Any:
    return faiss.IndexIDMap(faiss.IndexFlatIP(dim))


def _new_ivf(kind: str, dim: int, nlist: int) -> Any:
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


def _extract(index: Any, dim: int) -> tuple[Ids, Vectors]:
    """Every (id, vector) an index holds. Exact for flat and IVF-Flat; decoded for SQ8."""
    if hasattr(index, "invlists"):
        parts_ids, parts_vecs = [], []
        sq = index.sq if isinstance(index, faiss.IndexIVFScalarQuantizer) else None
        for list_no in range(index.nlist):
            if index.invlists.list_size(list_no) == 0:
                continue
            ids, codes = get_invlist(index.invlists, list_no)  # type: ignore[no-untyped-call]
            if sq is None:
                vecs = codes.view(np.float32).reshape(-1, dim)
            else:
                vecs = sq.decode(codes)
                if index.by_residual:
                    vecs = vecs + index.quantizer.reconstruct(list_no)
            parts_ids.append(np.array(ids, dtype=np.int64))
            parts_vecs.append(np.array(vecs, dtype=np.float32))
        if not parts_ids:
            return np.zeros(0, dtype=np.int64), np.zeros((0, dim), dtype=np.float32)
        return np.concatenate(parts_ids), np.ascontiguousarray(np.concatenate(parts_vecs))
    flat: Any = faiss.downcast_index(index.index)
    vectors = faiss.vector_to_array(flat.codes).view(np.float32).reshape(-1, dim)
    return faiss.vector_to_array(index.id_map).astype(np.int64), np.ascontiguousarray(vectors)


def _ids_of(index: Any) -> Ids:
    """The ids of a flat IndexIDMap or of an IVF index's inverted lists, without their vectors."""
    if not hasattr(index, "invlists"):
        return faiss.vector_to_array(index.id_map).astype(np.int64)
    invlists = index.invlists
    parts = [
        faiss.rev_swig_ptr(invlists.get_ids(list_no), size).copy()
        for list_no in range(index.nlist)
        if (size := int(invlists.list_size(list_no)))
    ]
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)


def _exact_neighbours(base: Vectors, base_ids: Ids, queries: Vectors, k: int) -> Ids:
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


class VectorIndex:
    """Inner-product search over (id, vector) pairs; safe to use from several threads."""

    def __init__(self, dim: int, policy: TrainingPolicy | None = None) -> None:
        self.dim = dim
        self.policy = policy or TrainingPolicy()
        # Replication cursors, kept by the service and saved with snapshots: the last event seq
        # and the last forget record this index reflects.
        self.last_seq = 0
        self.last_forget = 0
        self.state = IndexState()
        # faiss.IndexIDMap over a flat index (untrained), or a faiss.IndexIVF subclass (trained).
        self._live: Any = _flat(dim)
        # Trained only: recent vectors not yet assigned to lists, searched exactly beside the IVF.
        self._delta: Any = _flat(dim)
        self._probe_ids: Ids = np.zeros(0, dtype=np.int64)
        self._probes: Vectors = np.zeros((0, dim), dtype=np.float32)
        self._lock = _ReadWriteLock()
        self._build: _Build | None = None
        self._worker: threading.Thread | None = None
        self._worker_guard = threading.Lock()
        self._next_balance_check = 0
        # Addresses of the live IVF-Flat lists for batched search; dropped whenever they change.
        self._table: ivf_batch.ListTable | None = None

    # -- properties ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return int(self._live.ntotal) + int(self._delta.ntotal)

    @property
    def trained(self) -> bool:
        return isinstance(self._live, faiss.IndexIVF)

    @property
    def retraining(self) -> bool:
        return self._build is not None

    # -- writes -------------------------------------------------------------------------------

    def add(self, ids: Ids, vectors: Vectors) -> None:
        """Add `vectors` (n, dim) under new `ids` (n,); searchable when this returns."""
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim or ids.shape != (len(vectors),):
            raise ValueError(
                f"expected ids (n,) and vectors (n, {self.dim}); got {ids.shape} and {vectors.shape}"
            )
        if len(ids) == 0:
            return
        with self._lock.write(), _threads_for(len(ids)):
            if self.trained and len(ids) < DELTA_MAX:
                self._delta.add_with_ids(vectors, ids)
                if self._delta.ntotal >= DELTA_MAX:
                    self._fold_delta()
            else:
                self._live.add_with_ids(vectors, ids)
                self._table = None
            if self._build is not None:
                self._build.ops.append((ids, vectors))
        self._maybe_maintain()

    def _fold_delta(self) -> None:
        """Move the delta's vectors into their inverted lists. Caller holds the write lock."""
        ids, vectors = _extract(self._delta, self.dim)
        self._live.add_with_ids(vectors, ids)
        self._table = None
        self._delta.reset()

    def remove(self, ids: Ids) -> int:
        """Remove the given ids; return how many were present."""
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if len(ids) == 0:
            return 0
        with self._lock.write():
            selector = faiss.IDSelectorBatch(ids)
            removed = int(self._live.remove_ids(selector)) + int(self._delta.remove_ids(selector))
            self._table = None
            if self._build is not None:
                self._build.ops.append((ids, None))
        return removed

    # -- reads --------------------------------------------------------------------------------

    def search(self, queries: Vectors, k: int, allowed: Ids | None = None) -> tuple[Scores, Ids]:
        """Top-k for queries (m, dim): scores (m, k) and ids (m, k), -1 where fewer than k.

        `allowed` restricts the search to those ids (an exact filter applied inside FAISS).
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"expected queries (m, {self.dim}); got {queries.shape}")
        if k < 1:
            raise ValueError(f"k must be positive; got {k}")
        if not np.isfinite(queries).all():
            raise ValueError("queries must be finite (no NaN or infinity)")
        selector = None
        if allowed is not None:
            allowed = np.ascontiguousarray(allowed, dtype=np.int64)
            if len(allowed) == 0:
                m = len(queries)
                return np.full((m, k), -np.inf, dtype=np.float32), np.full((m, k), -1, dtype=np.int64)
            selector = faiss.IDSelectorBatch(allowed)
        flat_params = None if selector is None else faiss.SearchParameters(sel=selector)  # type: ignore[call-arg]
        with self._lock.read(), _threads_for(len(queries)):
            if not self.trained:
                return self._live.search(queries, k, params=flat_params)  # type: ignore[no-any-return]
            nprobe = self.state.nprobe
            if allowed is not None and len(self):
                # A filter keeps a fraction of each list; probe more lists to see as many candidates.
                nprobe = min(int(self._live.nlist), math.ceil(nprobe * len(self) / len(allowed)))
            if selector is None and self._batch_kernel_fits(len(queries)):
                scores, ids = ivf_batch.search(self._list_table(), queries, nprobe, k)
            else:
                params = faiss.SearchParametersIVF(nprobe=nprobe, sel=selector)  # type: ignore[call-arg]
                scores, ids = self._live.search(queries, k, params=params)
            if self._delta.ntotal == 0:
                return scores, ids
            d_scores, d_ids = self._delta.search(queries, min(k, int(self._delta.ntotal)), params=flat_params)
        return _merge(scores, ids, d_scores, d_ids, k)

    def _batch_kernel_fits(self, rows: int) -> bool:
        """Whether a search of `rows` queries goes to `ivf_batch` (IVF-Flat, a batch, kernels loaded)."""
        if rows < SMALL_BATCH or self.policy.kind != "ivf_flat" or not self.policy.batch_kernels:
            return False
        if ivf_batch.ready():
            return True
        ivf_batch.prepare()  # FAISS answers this batch; later ones use the kernels once loaded
        return False

    def _list_table(self) -> ivf_batch.ListTable:
        """The live lists' addresses, read once per change. Caller holds the read lock."""
        table = self._table
        if table is None:
            table = self._table = ivf_batch.list_table(self._live)
        return table

    def ids(self) -> Ids:
        """Every id the index holds (trained lists, delta and buffer), unordered."""
        with self._lock.read():
            parts = [_ids_of(self._live), _ids_of(self._delta)]
        return np.concatenate(parts)

    def list_sizes(self) -> npt.NDArray[np.int64] | None:
        with self._lock.read():
            if not self.trained:
                return None
            invlists = self._live.invlists
            return np.array([invlists.list_size(i) for i in range(self._live.nlist)], dtype=np.int64)

    def imbalance(self) -> float:
        sizes = self.list_sizes()
        if sizes is None or sizes.sum() == 0:
            return 0.0
        return float(len(sizes) * np.square(sizes.astype(np.float64)).sum() / float(sizes.sum()) ** 2)

    def memory_bytes(self) -> int:
        """Bytes of vectors, ids, centroids, probes and list addresses (container slack excluded)."""
        with self._lock.read():
            n = len(self)
            if self.trained:
                entry = int(self._live.code_size) + 8
                extra = int(self._live.nlist) * self.dim * 4 + int(self._delta.ntotal) * (
                    self.dim * 4 + 8 - entry
                )
            else:
                entry, extra = self.dim * 4 + 8, 0
            table = 0 if self._table is None else self._table.nbytes
        return n * entry + extra + table + self._probes.nbytes + self._probe_ids.nbytes

    def health(self) -> dict[str, Any]:
        sizes = self.list_sizes()
        state = asdict(self.state)
        trained = self.trained
        return {
            "kind": "ivf" if trained else "flat",
            "index_type": self.policy.kind if trained else "flat",
            "vectors": len(self),
            "buffered": int(self._delta.ntotal) if trained else len(self),
            "train_at": self.policy.train_at,
            "nlist": int(self._live.nlist) if trained else 0,
            "nprobe": state["nprobe"] if trained else 0,
            "list_sizes": None
            if sizes is None
            else {"min": int(sizes.min()), "mean": round(float(sizes.mean()), 1), "max": int(sizes.max())},
            "imbalance": round(self.imbalance(), 3),
            "measured_recall_at_10": state["measured_recall_at_10"] if trained else 1.0,
            "recall_measured_at": state["recall_measured_at"],
            "recall_probes": state["recall_probes"],
            "target_recall": self.policy.target_recall,
            "tuned_for_recall": round(self.policy.calibration_target(state["recall_probes"]), 4)
            if trained
            else None,
            "training": None
            if not state["trainings"]
            else {
                "source": "stored vectors",
                "size": state["training_size"],
                "seconds": state["training_seconds"],
                "trained_at": state["trained_at"],
                "vectors_at_training": state["n_at_training"],
                "trainings": state["trainings"],
            },
            "last_training_error": state["last_training_error"],
            "retraining": self.retraining,
            "batch_kernels": ivf_batch.status()
            if self.policy.kind == "ivf_flat" and self.policy.batch_kernels
            else "off",
            "bytes_in_memory": self.memory_bytes(),
        }

    # -- training -----------------------------------------------------------------------------

    def _maybe_maintain(self) -> None:
        if self._build is None and self._training_due():
            self.train(background=True)

    def _training_due(self) -> bool:
        n = len(self)
        if not self.trained:
            return self.policy.should_train(n, trained=False)
        # Measuring balance walks every list, so do it about once per 1% of growth.
        if n < self._next_balance_check and n < self.policy.retrain_growth * self.state.n_at_training:
            return False
        self._next_balance_check = n + max(1_000, n // 100)
        return self.policy.should_retrain(
            n, self.state.n_at_training, self.imbalance(), self.state.imbalance_at_training
        )

    def train(self, background: bool = False) -> None:
        """(Re)build the IVF index from every stored vector; in a thread if `background`."""
        with self._worker_guard:
            if self._worker is not None and self._worker.is_alive():
                return
            if background:
                self._worker = threading.Thread(
                    target=self._train_logged, name="emx-index-train", daemon=True
                )
                self._worker.start()
                return
        self._train()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait for a background training to finish; True if none is running."""
        worker = self._worker
        if worker is not None:
            worker.join(timeout)
            return not worker.is_alive()
        return True

    def _train_logged(self) -> None:
        try:
            # Vectors that arrived during a training may already call for the next one.
            self._train()
            while self._training_due() and self.state.last_training_error is None:
                self._train()
        except Exception as exc:
            self._build = None
            self.state.last_training_error = f"{type(exc).__name__}: {exc}"
            log.exception("index training failed; the live index is unchanged")

    def _train(self) -> None:
        started = time.perf_counter()
        with self._lock.read():
            # A consistent copy: writers wait while it is taken (searches go on); from here on
            # they also record what they do, to be replayed on the new index.
            ids, vectors = _extract(self._live, self.dim)
            if self._delta.ntotal:
                delta_ids, delta_vectors = _extract(self._delta, self.dim)
                ids, vectors = np.concatenate([ids, delta_ids]), np.concatenate([vectors, delta_vectors])
            self._build = _Build()
        n = len(ids)
        nlist = nlist_for(n)
        if n < self.policy.train_at or nlist < 2:
            self._build = None
            return
        rng = np.random.default_rng(self.policy.seed + self.state.trainings)
        sample_size = training_sample_size(n, nlist)
        sample = vectors[rng.choice(n, sample_size, replace=False)]
        new = _new_ivf(self.policy.kind, self.dim, nlist)
        new.train(sample)
        new.add_with_ids(vectors, ids)
        probe_rows = rng.choice(n, min(n, self.policy.probe_queries), replace=False)
        probe_ids, probes = ids[probe_rows], np.ascontiguousarray(vectors[probe_rows])
        truth = _exact_neighbours(vectors, ids, probes, RECALL_K + 1)
        target = self.policy.calibration_target(len(probe_ids), RECALL_K)
        nprobe, recall = calibrate_nprobe(new, probes, probe_ids, truth, target)
        del vectors, sample
        with self._lock.write():
            build, self._build = self._build, None
            assert build is not None
            for op_ids, op_vectors in build.ops:
                if op_vectors is not None:
                    new.add_with_ids(op_vectors, op_ids)
                else:
                    new.remove_ids(faiss.IDSelectorBatch(op_ids))
            if new.ntotal != len(self):
                self.state.last_training_error = (
                    f"refused swap: new index has {new.ntotal} vectors, live index {len(self)}"
                )
                log.error("index training refused", reason=self.state.last_training_error)
                return
            self._live = new
            self._table = None
            self._delta.reset()  # its vectors were copied above or replayed from the log of ops
            self._probe_ids, self._probes = probe_ids, probes
            self.state.nprobe, self.state.measured_recall_at_10 = nprobe, round(recall, 4)
            self.state.recall_measured_at = self.state.trained_at = _utc_now()
            self.state.recall_probes = len(probe_ids)
            self.state.training_size = sample_size
            self.state.training_seconds = round(time.perf_counter() - started, 3)
            self.state.n_at_training = n
            self.state.trainings += 1
            self.state.last_training_error = None
        self.state.imbalance_at_training = self.imbalance()
        log.info(
            "index trained",
            vectors=n,
            nlist=nlist,
            nprobe=nprobe,
            recall_at_10=round(recall, 4),
            seconds=self.state.training_seconds,
        )

    # -- snapshots ----------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """Serialise the index, its measurements and its cursors as one self-checking blob."""
        with self._lock.read():
            sections = [
                faiss.serialize_index(self._live).tobytes(),
                faiss.serialize_index(self._delta).tobytes(),
                self._probe_ids.tobytes(),
                self._probes.tobytes(),
            ]
            header: dict[str, Any] = {
                "dim": self.dim,
                "last_seq": self.last_seq,
                "last_forget": self.last_forget,
                "count": len(self),
                "trained": self.trained,
                "kind": self.policy.kind,
                "state": asdict(self.state),
                "sections": [len(s) for s in sections],
            }
        payload = b"".join(sections)
        header["sha256"] = hashlib.sha256(payload).hexdigest()
        head = json.dumps(header, sort_keys=True).encode()
        return _MAGIC + _HEADER_LEN.pack(len(head)) + head + payload

    @classmethod
    def from_bytes(cls, blob: bytes, policy: TrainingPolicy | None = None) -> VectorIndex:
        header, payload = _split(blob)
        if hashlib.sha256(payload).hexdigest() != header["sha256"]:
            raise CorruptSnapshot("checksum mismatch")
        lengths = header["sections"]
        if not isinstance(lengths, list) or len(lengths) != 4 or sum(lengths) != len(payload):
            raise CorruptSnapshot("section lengths do not match the payload")
        a, b, c = np.cumsum(lengths[:3]).tolist()
        dim = int(header["dim"])
        try:
            live = faiss.deserialize_index(np.frombuffer(payload[:a], dtype=np.uint8))
            delta = faiss.deserialize_index(np.frombuffer(payload[a:b], dtype=np.uint8))
            probe_ids = np.frombuffer(payload[b:c], dtype=np.int64).copy()
            probes = np.frombuffer(payload[c:], dtype=np.float32).reshape(-1, dim).copy()
        except (RuntimeError, ValueError) as exc:
            raise CorruptSnapshot(f"unreadable payload: {exc}") from exc
        consistent = (
            live.d == dim == delta.d
            and live.ntotal + delta.ntotal == header["count"]
            and len(probes) == len(probe_ids)
        )
        if not consistent:
            raise CorruptSnapshot("header does not match the payload")
        policy = policy or TrainingPolicy()
        if header["trained"] and header["kind"] != policy.kind:
            raise CorruptSnapshot(f"snapshot holds a {header['kind']} index; {policy.kind} is configured")
        index = cls(dim, policy)
        index._live, index._delta = live, delta
        index._probe_ids, index._probes = probe_ids, probes
        index.last_seq, index.last_forget = int(header["last_seq"]), int(header["last_forget"])
        index.state = IndexState(**header["state"])
        return index

    def save(self, path: Path) -> None:
        """Write a snapshot atomically: temp file, fsync, rename, fsync the folder."""
        write_atomic(path, self.to_bytes())

    @classmethod
    def load(cls, path: Path, policy: TrainingPolicy | None = None) -> VectorIndex:
        try:
            blob = path.read_bytes()
        except OSError as exc:
            raise CorruptSnapshot(f"cannot read {path}: {exc}") from exc
        return cls.from_bytes(blob, policy)


def snapshot_header(path: Path) -> dict[str, Any] | None:
    """A snapshot's header (cursors, counts) without reading the payload; None if unreadable."""
    try:
        with path.open("rb") as fh:
            start = fh.read(len(_MAGIC) + _HEADER_LEN.size)
            if len(start) < len(_MAGIC) + _HEADER_LEN.size or not start.startswith(_MAGIC):
                return None
            (size,) = _HEADER_LEN.unpack(start[len(_MAGIC) :])
            header = json.loads(fh.read(min(size, 1 << 20)))
        return header if isinstance(header, dict) else None
    except (OSError, ValueError):
        return None


_REQUIRED = {"dim", "last_seq", "last_forget", "count", "trained", "kind", "state", "sections", "sha256"}


def _split(blob: bytes) -> tuple[dict[str, Any], bytes]:
    if not blob.startswith(_MAGIC) or len(blob) < len(_MAGIC) + _HEADER_LEN.size:
        raise CorruptSnapshot("not an emx-mcp index snapshot")
    (size,) = _HEADER_LEN.unpack_from(blob, len(_MAGIC))
    start = len(_MAGIC) + _HEADER_LEN.size
    if size > len(blob) - start:
        raise CorruptSnapshot("truncated header")
    try:
        header = json.loads(blob[start : start + size])
    except ValueError as exc:
        raise CorruptSnapshot("unreadable header") from exc
    if not isinstance(header, dict) or not header.keys() >= _REQUIRED:
        raise CorruptSnapshot("incomplete header")
    return header, blob[start + size :]


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that a crash leaves either the old or the new file, whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with tmp.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
