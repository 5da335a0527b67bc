"""One batch of 1,000 queries against 1,000 single searches, on GloVe 6B 50-d vectors.

The shape of `recall_batch` against repeated `recall`: same VectorIndex (default policy), same
queries (held out), at 10k, 100k and 400k stored vectors. Also the same 1,000 queries in calls of
256, the most one `recall_batch` takes. For reference, the same ratio for plain FAISS with the
same structure (nlist, nprobe) in the same run, whose batches scan query by query.

    .venv/bin/python benchmarks/batch_search.py
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial

import faiss
import numpy as np
from common import glove_vectors, save

from emx_mcp.storage import ivf_batch
from emx_mcp.storage.index import VectorIndex

QUERIES = 1_000
TOOL_LIMIT = 256  # queries per recall_batch call


def timed(search: Callable[[np.ndarray], object], queries: np.ndarray, rows: int) -> float:
    """Median seconds of three runs of all `queries`, `rows` per call."""
    runs = []
    for _ in range(3):
        start = time.perf_counter()
        for lo in range(0, len(queries), rows):
            search(queries[lo : lo + rows])
        runs.append(time.perf_counter() - start)
    return sorted(runs)[1]


def raw_index(base: np.ndarray, nlist: int, nprobe: int) -> faiss.Index:
    """Plain FAISS with the same structure: IndexFlatIP while ours is flat, else IndexIVFFlat."""
    dim = base.shape[1]
    if nlist == 0:
        flat = faiss.IndexFlatIP(dim)
        flat.add(base)
        return flat
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
    sample = np.random.default_rng(0).choice(len(base), min(len(base), 256 * nlist), replace=False)
    ivf.train(base[sample])
    ivf.add(base)
    ivf.nprobe = nprobe
    return ivf


def main() -> None:
    faiss.omp_set_num_threads(2)
    if not ivf_batch.wait_ready():
        print(f"batch kernels unavailable, FAISS answers batches: {ivf_batch.unavailable_reason()}")
    vectors = glove_vectors()
    order = np.random.default_rng(7).permutation(len(vectors))
    queries = np.ascontiguousarray(vectors[order[:QUERIES]])
    pool = np.ascontiguousarray(vectors[order[QUERIES:]])
    rows = []
    for size in (10_000, 100_000, len(pool)):
        index = VectorIndex(pool.shape[1])
        for lo in range(0, size, 10_000):
            index.add(np.arange(lo, min(size, lo + 10_000)), pool[lo : min(size, lo + 10_000)])
        index.wait_idle()
        ours = partial(index.search, k=10)
        single, batch, tool = (timed(ours, queries, rows) for rows in (1, QUERIES, TOOL_LIMIT))
        stats = index.stats()
        raw = raw_index(pool[:size], stats.nlist, stats.nprobe)
        theirs = partial(raw.search, k=10)
        raw_single, raw_batch = (timed(theirs, queries, rows) for rows in (1, QUERIES))
        row = {
            "n": size,
            "kind": "ivf" if stats.trained else "flat",
            "nlist": stats.nlist,
            "nprobe": stats.nprobe,
            "single_total_s": round(single, 4),
            "batch_total_s": round(batch, 4),
            "speedup": round(single / batch, 2),
            "calls_of_256_total_s": round(tool, 4),
            "speedup_calls_of_256": round(single / tool, 2),
            "raw_faiss_speedup": round(raw_single / raw_batch, 2),
        }
        print(row, flush=True)
        rows.append(row)
    lines = [
        "| n | index | 1,000 single searches (s) | one batch of 1,000 (s) | speed-up | "
        "4 calls of up to 256 (s) | speed-up | raw FAISS speed-up |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        kind = r["kind"] if r["kind"] == "flat" else f"ivf (nlist {r['nlist']}, nprobe {r['nprobe']})"
        lines.append(
            f"| {r['n']:,} | {kind} | {r['single_total_s']} | {r['batch_total_s']} | {r['speedup']}x | "
            f"{r['calls_of_256_total_s']} | {r['speedup_calls_of_256']}x | {r['raw_faiss_speedup']}x |"
        )
    kernels = "loaded" if ivf_batch.ready() else f"unavailable: {ivf_batch.unavailable_reason()}"
    save("batch_search", {"queries": QUERIES, "batch_kernels": kernels, "rows": rows}, "\n".join(lines))


if __name__ == "__main__":
    main()
