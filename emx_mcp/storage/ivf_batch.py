"""Batched search of an IVF-Flat index, list by list instead of query by query.

FAISS answers a batch by scanning, for every query, each of its `nprobe` lists one vector at a
time; a batch only adds threads. Here the batch is turned around: the queries that probe a list
are multiplied with that list's vectors in one small BLAS product, so each list is read once per
batch. The probes are chosen exactly as FAISS chooses them and the vectors are FAISS's own (read
in place, no copy), so the results are FAISS's with the same nprobe, up to float rounding in the
last digit of a score, and recall is the same.

The kernels are compiled with numba. They load in a background thread the first time a batch
asks for them (`prepare`); until they are ready, and wherever they cannot load, callers use FAISS.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt
import structlog

log = structlog.get_logger(__name__)

Ids = npt.NDArray[np.int64]
Scores = npt.NDArray[np.float32]
Vectors = npt.NDArray[np.float32]

# Queries per kernel call, at most; fewer when their products (one float per query and probed
# vector) would exceed PRODUCTS_MAX_BYTES.
QUERY_CHUNK = 1024
PRODUCTS_MAX_BYTES = 64 << 20


@dataclass(frozen=True, slots=True)
class ListTable:
    """Where the inverted lists of one IVF-Flat index live. Valid until the index is written."""

    centroids: Vectors  # (nlist, d), a view of the coarse quantizer's vectors
    sizes: Ids  # (nlist,)
    code_at: Ids  # (nlist,) address of list l's float32 vectors (sizes[l], d); 0 when empty
    ids_at: Ids  # (nlist,) address of list l's int64 ids (sizes[l],); 0 when empty

    @property
    def nbytes(self) -> int:
        """Memory of its own; the centroids are a view of the quantizer's."""
        return self.sizes.nbytes + self.code_at.nbytes + self.ids_at.nbytes


def list_table(ivf: Any) -> ListTable:
    """Read the addresses of `ivf`'s lists (and view its centroids); the caller keeps writers out."""
    invlists = ivf.invlists
    nlist = int(ivf.nlist)
    sizes = np.zeros(nlist, dtype=np.int64)
    code_at = np.zeros(nlist, dtype=np.int64)
    ids_at = np.zeros(nlist, dtype=np.int64)
    for lst in range(nlist):
        size = int(invlists.list_size(lst))
        if size:
            sizes[lst] = size
            code_at[lst] = faiss.rev_swig_ptr(invlists.get_codes(lst), 1).ctypes.data
            ids_at[lst] = faiss.rev_swig_ptr(invlists.get_ids(lst), 1).ctypes.data
    quantizer: Any = faiss.downcast_index(ivf.quantizer)  # IndexFlatIP: its vectors are the centroids
    centroids = faiss.rev_swig_ptr(quantizer.get_xb(), nlist * int(ivf.d)).reshape(nlist, int(ivf.d))
    return ListTable(centroids, sizes, code_at, ids_at)


class KernelLoader:
    """Loads the kernels once, in the background; remembers a failure and stays on FAISS."""

    def __init__(self, module: str = "emx_mcp.storage._ivf_kernels") -> None:
        self.module = module
        self.kernels: ModuleType | None = None
        self.failed: str | None = None
        self.blas: Any = None
        self.ready = threading.Event()
        self.started = False
        self.guard = threading.Lock()
        # The kernels use every core; two batches at once would only queue for them.
        self.running = threading.Lock()

    def start(self) -> None:
        with self.guard:
            if self.started:
                return
            self.started = True
        threading.Thread(target=self._load, name="emx-ivf-batch-load", daemon=True).start()

    def _load(self) -> None:
        try:
            kernels = importlib.import_module(self.module)
            from threadpoolctl import ThreadpoolController

            _warm_up(kernels)
            # After the warm-up: numba loads its BLAS while compiling, and the controller only
            # sees libraries loaded when it is made.
            self.blas = ThreadpoolController()
            self.kernels = kernels
            log.debug("batch search kernels ready")
        except Exception as exc:  # any failure leaves FAISS in charge, which is always correct
            self.failed = f"{type(exc).__name__}: {exc}"
            log.warning("batch search kernels unavailable; using FAISS", error=self.failed)
        finally:
            self.ready.set()


_loader = KernelLoader()


@contextmanager
def use_loader(loader: KernelLoader) -> Iterator[KernelLoader]:
    """Let `loader` serve this process's batches for the block (to stage a loader that fails, in tests)."""
    global _loader
    previous, _loader = _loader, loader
    try:
        yield loader
    finally:
        _loader = previous


def prepare() -> None:
    """Start loading the kernels in the background, once per process."""
    _loader.start()


def ready() -> bool:
    """True when `search` can run."""
    return _loader.kernels is not None


def wait_ready(timeout: float | None = None) -> bool:
    """Start loading if needed and wait; True when the kernels loaded, False on failure or timeout."""
    prepare()
    _loader.ready.wait(timeout)
    return ready()


def unavailable_reason() -> str | None:
    return _loader.failed


def status() -> str:
    """'ready', 'loading', 'not loaded' (nothing has asked yet) or 'unavailable: <why>'."""
    if _loader.kernels is not None:
        return "ready"
    if _loader.failed is not None:
        return f"unavailable: {_loader.failed}"
    return "loading" if _loader.started else "not loaded"


def search(table: ListTable, queries: Vectors, nprobe: int, k: int) -> tuple[Scores, Ids]:
    """Top-k of `queries` (m, d) over the table's lists: scores (m, k) and ids (m, k), -1 past the end.

    Needs `ready()` and finite queries. The caller keeps writers out of the index until this returns.
    """
    kernels = _loader.kernels
    if kernels is None:
        raise RuntimeError("batch search kernels are not loaded; call wait_ready() first")
    nprobe = max(1, min(nprobe, len(table.sizes)))
    most_probed = int(np.partition(table.sizes, len(table.sizes) - nprobe)[-nprobe:].sum())
    rows = max(1, min(QUERY_CHUNK, PRODUCTS_MAX_BYTES // (4 * max(1, most_probed))))
    parts = []
    # Per-list products are small; BLAS threads inside the kernel's own threads only contend.
    with _loader.running, _loader.blas.limit(limits=1, user_api="blas"):
        for lo in range(0, len(queries), rows):
            chunk = queries[lo : lo + rows]
            assign = kernels.probe(chunk, table.centroids, nprobe)
            parts.append(kernels.scan(chunk, assign, table.code_at, table.ids_at, table.sizes, k))
    if len(parts) == 1:
        return parts[0]  # type: ignore[no-any-return]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _warm_up(kernels: ModuleType) -> None:
    """Compile (or load from numba's cache) the exact signatures `search` uses."""
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((8, 4)).astype(np.float32)
    ids = np.arange(8, dtype=np.int64)
    queries = rng.standard_normal((3, 4)).astype(np.float32)
    table = ListTable(
        centroids=np.ascontiguousarray(vectors[[0, 4]]),
        sizes=np.array([4, 4], dtype=np.int64),
        code_at=np.array([vectors[:4].ctypes.data, vectors[4:].ctypes.data], dtype=np.int64),
        ids_at=np.array([ids[:4].ctypes.data, ids[4:].ctypes.data], dtype=np.int64),
    )
    assign = kernels.probe(queries, table.centroids, 2)
    scores, found = kernels.scan(queries, assign, table.code_at, table.ids_at, table.sizes, 3)
    products = queries @ vectors.T
    expected = np.argsort(-products, axis=1, kind="stable")[:, :3]
    same_ids = np.array_equal(np.sort(found, axis=1), np.sort(expected, axis=1))
    same_scores = np.allclose(scores, np.take_along_axis(products, expected, axis=1), atol=1e-5)
    if not (assign.shape == (3, 2) and same_ids and same_scores):
        raise RuntimeError("batch search kernels disagree with numpy on a known case")
