"""Compiled kernels for `ivf_batch`: probe selection and a list-major scan of IVF-Flat lists.

Imported only by `ivf_batch`'s loader, in a background thread: importing numba and compiling
takes about 8 s on a 2-core machine, loading numba's on-disk cache about half a second.

The lists are read in place from FAISS's memory through their addresses; the caller guarantees
that nothing writes to the index while a kernel runs.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
import numpy.typing as npt
from numba import njit, prange, types
from numba.extending import intrinsic

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]


def _address_as(element: Any) -> Any:
    """An intrinsic that reads an int64 address as a pointer to `element`s."""

    @intrinsic
    def cast(typingctx: Any, address: Any) -> Any:
        pointer = types.CPointer(element)

        def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
            return builder.inttoptr(args[0], context.get_value_type(pointer))

        return pointer(types.int64), codegen

    return cast


_floats_at = _address_as(types.float32)
_ints_at = _address_as(types.int64)


@njit(parallel=True, cache=True, boundscheck=False)
def probe(queries: F32, centroids: F32, nprobe: int) -> I64:
    """The `nprobe` centroids of highest inner product for each query: (m, nprobe), unordered.

    Exact, like FAISS's quantizer: per query, bisect on the score for the threshold that keeps
    exactly `nprobe` centroids (each step a vectorised count), then collect them; centroids tied
    at the threshold are taken in index order.
    """
    scores = np.dot(queries, centroids.T)
    m, nlist = scores.shape
    out = np.empty((m, nprobe), np.int64)
    for q in prange(m):
        row = scores[q]
        lo = row[0]
        hi = row[0]
        for c in range(nlist):
            lo = min(lo, row[c])
            hi = max(hi, row[c])
        # Invariant: at least nprobe scores >= lo, fewer than nprobe scores >= hi.
        hi = np.nextafter(hi, np.float32(np.inf))
        for _ in range(64):
            mid = np.float32(lo + (hi - lo) * np.float32(0.5))
            if mid <= lo or mid >= hi:
                break
            above = 0
            for c in range(nlist):
                above += row[c] >= mid
            if above >= nprobe:
                lo = mid
                if above == nprobe:
                    break
            else:
                hi = mid
        taken = 0
        for c in range(nlist):
            if row[c] >= hi:
                out[q, taken] = c
                taken += 1
        for c in range(nlist):
            if taken == nprobe:
                break
            if lo <= row[c] < hi:
                out[q, taken] = c
                taken += 1
    return out


@njit(cache=True, boundscheck=False)
def scan(queries: F32, assign: I64, code_at: I64, ids_at: I64, sizes: I64, k: int) -> tuple[F32, I64]:
    """Top-k over the probed lists: scores (m, k) descending and ids (m, k), -1 past the end.

    List-major: the queries that probe a list are gathered and multiplied with the list's
    vectors in one BLAS product, so each list is read once per batch instead of once per query.
    The products land in one buffer; then each query keeps its k best in a single pass.
    `assign` (m, nprobe) holds list numbers; `code_at`, `ids_at` and `sizes` (nlist,) describe
    the lists.
    """
    first, block, members, where = _group_by_list(assign, sizes)
    products = _list_products(queries, code_at, sizes, first, block, members)
    return _keep_best(assign, ids_at, sizes, where, products, k)


@njit(cache=True, boundscheck=False)
def _group_by_list(assign: I64, sizes: I64) -> tuple[I64, I64, I64, I64]:
    """Counting sort of (query, probe) pairs by list.

    first[l]: where list l's queries start in `members`; block[l]: where its products start;
    where[q, p]: where query q's products with its p-th probed list start.
    """
    m, nprobe = assign.shape
    nlist = sizes.shape[0]
    first = np.zeros(nlist + 1, np.int64)
    for q in range(m):
        for p in range(nprobe):
            first[assign[q, p] + 1] += 1
    block = np.zeros(nlist + 1, np.int64)
    for lst in range(nlist):
        block[lst + 1] = block[lst] + first[lst + 1] * sizes[lst]
        first[lst + 1] += first[lst]
    cursor = first[:-1].copy()
    members = np.empty(first[nlist], np.int64)
    where = np.empty((m, nprobe), np.int64)
    for q in range(m):
        for p in range(nprobe):
            lst = assign[q, p]
            row = cursor[lst] - first[lst]
            members[cursor[lst]] = q
            where[q, p] = block[lst] + row * sizes[lst]
            cursor[lst] += 1
    return first, block, members, where


@njit(parallel=True, cache=True, boundscheck=False)
def _list_products(queries: F32, code_at: I64, sizes: I64, first: I64, block: I64, members: I64) -> F32:
    """Every probing query times every vector of the list it probes, one BLAS product per list."""
    dim = queries.shape[1]
    nlist = sizes.shape[0]
    products = np.empty(block[nlist], np.float32)
    for lst in prange(nlist):
        n = sizes[lst]
        rows = first[lst + 1] - first[lst]
        if n == 0 or rows == 0:
            continue
        vectors = numba.carray(_floats_at(code_at[lst]), (n, dim))
        gathered = np.empty((rows, dim), np.float32)
        for r in range(rows):
            gathered[r] = queries[members[first[lst] + r]]
        np.dot(gathered, vectors.T, products[block[lst] : block[lst] + rows * n].reshape((rows, n)))
    return products


@njit(parallel=True, cache=True, boundscheck=False)
def _keep_best(assign: I64, ids_at: I64, sizes: I64, where: I64, products: F32, k: int) -> tuple[F32, I64]:
    """Each query's k best products over its probed lists, in one pass, best first."""
    m, nprobe = assign.shape
    best = np.full((m, k), -np.inf, np.float32)
    best_ids = np.full((m, k), -1, np.int64)
    for q in prange(m):
        top = best[q]
        top_ids = best_ids[q]
        worst = top[k - 1]
        for p in range(nprobe):
            lst = assign[q, p]
            n = sizes[lst]
            if n == 0:
                continue
            at = where[q, p]
            list_ids = numba.carray(_ints_at(ids_at[lst]), (n,))
            for j in range(n):
                score = products[at + j]
                if score > worst:
                    pos = k - 1
                    while pos > 0 and top[pos - 1] < score:
                        top[pos] = top[pos - 1]
                        top_ids[pos] = top_ids[pos - 1]
                        pos -= 1
                    top[pos] = score
                    top_ids[pos] = list_ids[j]
                    worst = top[k - 1]
    return best, best_ids
