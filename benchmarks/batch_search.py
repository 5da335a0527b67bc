"""One batch of 1,000 queries against 1,000 single searches, on GloVe 6B 50-d vectors.

The shape of `recall_batch` against repeated `recall`: same VectorIndex (default policy), same
queries (held out), at 10k, 100k and 400k stored vectors.

    .venv/bin/python benchmarks/batch_search.py
"""

from __future__ import annotations

import time

import faiss
import numpy as np
from common import glove_vectors, save

from emx_mcp.storage.index import VectorIndex

QUERIES = 1_000


def main() -> None:
    faiss.omp_set_num_threads(2)
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
        start = time.perf_counter()
        for q in queries:
            index.search(q.reshape(1, -1), 10)
        single = time.perf_counter() - start
        start = time.perf_counter()
        index.search(queries, 10)
        batch = time.perf_counter() - start
        health = index.health()
        row = {
            "n": size,
            "kind": health["kind"],
            "nprobe": health["nprobe"],
            "single_total_s": round(single, 4),
            "batch_total_s": round(batch, 4),
            "speedup": round(single / batch, 2),
        }
        print(row, flush=True)
        rows.append(row)
    lines = [
        "| n | index | 1,000 single searches (s) | one batch of 1,000 (s) | speed-up |",
        "| ---: | --- | ---: | ---: | ---: |",
    ]
    for r in rows:
        kind = r["kind"] if r["kind"] == "flat" else f"ivf (nprobe {r['nprobe']})"
        lines.append(
            f"| {r['n']:,} | {kind} | {r['single_total_s']} | {r['batch_total_s']} | {r['speedup']}x |"
        )
    save("batch_search", {"queries": QUERIES, "rows": rows}, "\n".join(lines))


if __name__ == "__main__":
    main()
