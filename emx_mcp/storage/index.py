"""The FAISS vector index: exact while small, IVF once it pays off, never losing a vector.

Ids are event seqs (int64); scores are inner products of unit vectors (cosine similarity).

Below `TrainingPolicy.train_at` vectors live in an exact flat index (the training buffer), so
search works from the first vector and has recall 1. Training (storage/training.py) builds an IVF
index beside the live one and swaps it in; after that, new vectors wait in a small exact delta
and are assigned to their lists together. Everything here runs under one read-write lock: many
searches at once, or one writer.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt

from emx_mcp.embedding import Vectors
from emx_mcp.storage import ivf_batch
from emx_mcp.storage.policy import TrainingPolicy

Ids = npt.NDArray[np.int64]
Scores = npt.NDArray[np.float32]

# Once trained, new vectors wait in an exact flat index of at most this many and are then assigned
# to their lists together: one matrix product instead of a pass over every centroid per vector.
DELTA_MAX = 512

# Below this many rows, FAISS runs on the calling thread alone: single queries and adds are faster
# that way, and immune to OpenMP threads spin-waiting when the other core is busy.
SMALL_BATCH = 32


class ReadWriteLock:
    """Many concurrent readers, or one writer; a waiting writer blocks new readers (no starvation)."""

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


@dataclass(frozen=True, slots=True)
class IndexParts:
    """Everything a snapshot holds of an index, as FAISS objects and arrays."""

    live: Any  # faiss.IndexIDMap over IndexFlatIP, or a trained faiss.IndexIVF
    delta: Any  # faiss.IndexIDMap over IndexFlatIP
    probe_ids: Ids  # (p,)
    probes: Vectors  # (p, dim)
    state: IndexState


@dataclass(frozen=True, slots=True)
class IndexStats:
    """A consistent reading of the index, for health reports."""

    trained: bool
    index_type: str
    vectors: int
    buffered: int
    nlist: int
    nprobe: int
    list_sizes: Ids | None
    imbalance: float
    state: IndexState
    retraining: bool
    batch_kernels: str
    bytes_in_memory: int
    batch_searches: int  # searches answered by ivf_batch's kernels since the index was made
    training_queued: bool  # a training waits for its turn (one builds at a time per process)
    training_retry_in: float | None  # after failed trainings: seconds until the next attempt


@dataclass(frozen=True, slots=True)
class FrozenIndex:
    """An index held still for a snapshot: the live FAISS index itself, the rest copied."""

    live: Any
    delta: bytes  # the delta, serialised when the freeze began
    probe_ids: Ids
    probes: Vectors
    state: IndexState
    trained: bool
    count: int


@dataclass(slots=True)
class Recorder:
    """Adds and removes that reach the live index while a new one is being built."""

    ops: list[tuple[Ids, Vectors | None]] = field(default_factory=list)  # vectors None: a removal


@contextmanager
def faiss_threads_for(rows: int) -> Iterator[None]:
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


def merge_results(s1: Scores, i1: Ids, s2: Scores, i2: Ids, k: int) -> tuple[Scores, Ids]:
    """The k best of two result sets per query row; missing results (-1) sort last."""
    scores = np.hstack([s1, s2])
    ids = np.hstack([i1, i2])
    scores[ids < 0] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(ids, order, axis=1)


def new_flat(dim: int) -> Any:
    return faiss.IndexIDMap(faiss.IndexFlatIP(dim))


def extract(index: Any, dim: int) -> tuple[Ids, Vectors]:
    """Every (id, vector) a FAISS index holds. Exact for flat and IVF-Flat; decoded for SQ8."""
    from faiss.contrib.inspect_tools import get_invlist

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
    parts = [_list_ids(index, list_no) for list_no in range(index.nlist)]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def _list_ids(index: Any, list_no: int) -> Ids:
    size = int(index.invlists.list_size(list_no))
    if not size:
        return np.zeros(0, dtype=np.int64)
    return faiss.rev_swig_ptr(index.invlists.get_ids(list_no), size).astype(np.int64)


class VectorIndex:
    """Inner-product search over (id, vector) pairs; safe to use from several threads."""

    def __init__(
        self, dim: int, policy: TrainingPolicy | None = None, parts: IndexParts | None = None
    ) -> None:
        from emx_mcp.storage.training import Trainer

        self.dim = dim
        self.policy = policy or TrainingPolicy()
        # Replication cursors, kept by the replica and saved with snapshots: the last event seq
        # and the last forget record this index reflects.
        self.last_seq = 0
        self.last_forget = 0
        self.state = parts.state if parts else IndexState()
        # faiss.IndexIDMap over a flat index (untrained), or a faiss.IndexIVF subclass (trained).
        self._live: Any = parts.live if parts else new_flat(dim)
        # Trained only: recent vectors not yet assigned to lists, searched exactly beside the IVF.
        self._delta: Any = parts.delta if parts else new_flat(dim)
        self._probe_ids: Ids = parts.probe_ids if parts else np.zeros(0, dtype=np.int64)
        self._probes: Vectors = parts.probes if parts else np.zeros((0, dim), dtype=np.float32)
        self._lock = ReadWriteLock()
        # While a snapshot serialises the live index it is frozen: adds go to the delta and
        # removals wait, so the writer can read it without holding the lock (see `frozen`).
        self._frozen = 0
        self._thawed = threading.Condition()
        self._recorder: Recorder | None = None
        # Addresses of the live IVF-Flat lists for batched search; dropped whenever they change.
        self._table: ivf_batch.ListTable | None = None
        self._batch_searches = 0
        # Where a lossy index (ivf_sq8) gets the true vectors of its ids to retrain from: the log.
        self.vector_source: Callable[[Ids], tuple[Ids, Vectors]] | None = None
        self.trainer = Trainer(self)

    # -- properties ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return int(self._live.ntotal) + int(self._delta.ntotal)

    @property
    def trained(self) -> bool:
        return isinstance(self._live, faiss.IndexIVF)

    @property
    def retraining(self) -> bool:
        return self._recorder is not None

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
        with self._lock.write(), faiss_threads_for(len(ids)):
            if self._frozen or (self.trained and len(ids) < DELTA_MAX):
                self._delta.add_with_ids(vectors, ids)
                if self._delta.ntotal >= DELTA_MAX and not self._frozen:
                    self._fold_delta()
            else:
                self._live.add_with_ids(vectors, ids)
                self._table = None
            if self._recorder is not None:
                self._recorder.ops.append((ids, vectors))
        self.trainer.maybe_start()

    def _fold_delta(self) -> None:
        """Move the delta's vectors into their inverted lists. Caller holds the write lock."""
        ids, vectors = extract(self._delta, self.dim)
        self._live.add_with_ids(vectors, ids)
        self._table = None
        self._delta.reset()

    def remove(self, ids: Ids) -> int:
        """Remove the given ids; return how many were present."""
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if len(ids) == 0:
            return 0
        while True:
            with self._thawed:
                while self._frozen:
                    self._thawed.wait()
            with self._lock.write():
                if self._frozen:
                    continue  # frozen again between the wait and the lock
                selector = faiss.IDSelectorBatch(ids)
                removed = int(self._live.remove_ids(selector)) + int(self._delta.remove_ids(selector))
                self._table = None
                if self._recorder is not None:
                    self._recorder.ops.append((ids, None))
            return removed

    @contextmanager
    def frozen(self) -> Iterator[FrozenIndex]:
        """Hold the live index still while a snapshot serialises it, without holding the lock.

        Searches go on as usual; adds wait in the exact delta (searched beside the lists) and
        removals wait until the block ends. A training may swap in a new live index meanwhile:
        the frozen one stays whole for the writer, which keeps its own reference. Nested and
        concurrent freezes are counted.
        """
        with self._lock.write():
            self._frozen += 1
            view = FrozenIndex(
                live=self._live,
                delta=faiss.serialize_index(self._delta).tobytes(),
                probe_ids=self._probe_ids.copy(),
                probes=self._probes.copy(),
                state=dataclasses.replace(self.state),
                trained=self.trained,
                count=len(self),
            )
        try:
            yield view
        finally:
            with self._lock.write():
                self._frozen -= 1
                if (
                    not self._frozen
                    and self._delta.ntotal
                    and (not self.trained or self._delta.ntotal >= DELTA_MAX)
                ):
                    self._fold_delta()
            with self._thawed:
                self._thawed.notify_all()

    # -- reads --------------------------------------------------------------------------------

    def search(
        self, queries: Vectors, k: int, allowed: Ids | None = None, nprobe: int | None = None
    ) -> tuple[Scores, Ids]:
        """Top-k for queries (m, dim): scores (m, k) and ids (m, k), -1 where fewer than k.

        `allowed` restricts the search to those ids (an exact filter applied inside FAISS).
        `nprobe` overrides the calibrated value on a trained index (for measurements).
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"expected queries (m, {self.dim}); got {queries.shape}")
        if k < 1:
            raise ValueError(f"k must be positive; got {k}")
        if not np.isfinite(queries).all():
            raise ValueError("queries must be finite (no NaN or infinity)")
        if allowed is not None:
            allowed = np.ascontiguousarray(allowed, dtype=np.int64)
            if len(allowed) == 0:
                m = len(queries)
                return np.full((m, k), -np.inf, dtype=np.float32), np.full((m, k), -1, dtype=np.int64)
        selector = None if allowed is None else faiss.IDSelectorBatch(allowed)
        flat_params = None if selector is None else faiss.SearchParameters(sel=selector)  # type: ignore[call-arg]
        with self._lock.read(), faiss_threads_for(len(queries)):
            if self.trained:
                scores, ids = self._search_lists(queries, k, allowed, selector, nprobe)
            else:
                scores, ids = self._live.search(queries, k, params=flat_params)
            if self._delta.ntotal == 0:
                return scores, ids
            d_scores, d_ids = self._delta.search(queries, min(k, int(self._delta.ntotal)), params=flat_params)
        return merge_results(scores, ids, d_scores, d_ids, k)

    def _search_lists(
        self, queries: Vectors, k: int, allowed: Ids | None, selector: Any, nprobe: int | None
    ) -> tuple[Scores, Ids]:
        """Search the trained lists. Caller holds the read lock."""
        if nprobe is None:
            nprobe = self.state.nprobe
            if allowed is not None and len(self):
                # A filter keeps a fraction of each list; probe more lists to see as many candidates.
                nprobe = min(int(self._live.nlist), math.ceil(nprobe * len(self) / len(allowed)))
        if selector is None and self._batch_kernel_fits(len(queries)):
            self._batch_searches += 1
            return ivf_batch.search(self._list_table(), queries, nprobe, k)
        params = faiss.SearchParametersIVF(nprobe=nprobe, sel=selector)  # type: ignore[call-arg]
        return self._live.search(queries, k, params=params)  # type: ignore[no-any-return]

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

    def list_ids(self, list_no: int) -> Ids:
        """The ids in one inverted list of a trained index."""
        with self._lock.read():
            if not self.trained:
                raise ValueError("an untrained index has no inverted lists")
            return _list_ids(self._live, list_no)

    def probes(self) -> tuple[Ids, Vectors]:
        """The stored vectors (with their ids) that the last training measured recall on."""
        with self._lock.read():
            return self._probe_ids.copy(), self._probes.copy()

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

    def stats(self) -> IndexStats:
        sizes = self.list_sizes()
        trained = self.trained
        kernels = self.policy.kind == "ivf_flat" and self.policy.batch_kernels
        return IndexStats(
            trained=trained,
            index_type=self.policy.kind if trained else "flat",
            vectors=len(self),
            buffered=int(self._delta.ntotal) if trained else len(self),
            nlist=int(self._live.nlist) if trained else 0,
            nprobe=self.state.nprobe if trained else 0,
            list_sizes=sizes,
            imbalance=round(self.imbalance(), 3),
            state=dataclasses.replace(self.state),
            retraining=self.retraining,
            batch_kernels=ivf_batch.status() if kernels else "off",
            bytes_in_memory=self.memory_bytes(),
            batch_searches=self._batch_searches,
            training_queued=self.trainer.queued,
            training_retry_in=self.trainer.retry_in(),
        )

    # -- training: storage/training.py drives these ------------------------------------------

    def train(self, background: bool = False) -> None:
        """(Re)build the IVF index from every stored vector; in a thread if `background`."""
        self.trainer.start(background)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait for a background training to finish; True if none is running."""
        return self.trainer.wait(timeout)

    def begin_build(self) -> tuple[Ids, Vectors]:
        """A consistent copy of every (id, vector); from now on writes are recorded for replay.

        Writers wait while it is taken (searches go on).
        """
        from emx_mcp.storage import training

        source = self.vector_source if self.trained and self.policy.kind != "ivf_flat" else None
        with self._lock.read():
            if source is None:
                ids, vectors = training.stored_vectors(self._live, self._delta, self.dim)
            else:
                ids = np.concatenate([_ids_of(self._live), _ids_of(self._delta)])
            self._recorder = Recorder()
        if source is not None:
            # A lossy index holds approximations: retrain, and measure recall, on the true vectors.
            ids, vectors = source(ids)
        return ids, vectors

    def cancel_build(self) -> None:
        self._recorder = None

    def finish_build(self, new: Any, probe_ids: Ids, probes: Vectors, state: IndexState) -> str | None:
        """Replay what arrived during the build onto `new` and swap it in; None, or why it was refused."""
        with self._lock.write():
            recorder, self._recorder = self._recorder, None
            assert recorder is not None
            for op_ids, op_vectors in recorder.ops:
                if op_vectors is not None:
                    new.add_with_ids(op_vectors, op_ids)
                else:
                    new.remove_ids(faiss.IDSelectorBatch(op_ids))
            if new.ntotal != len(self):
                return f"refused swap: new index has {new.ntotal} vectors, live index {len(self)}"
            self._live = new
            self._table = None
            self._delta.reset()  # its vectors were copied by begin_build or replayed above
            self._probe_ids, self._probes = probe_ids, probes
            self.state = state
        return None
