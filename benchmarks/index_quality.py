"""Index quality on real vectors: emx-mcp's VectorIndex against raw FAISS, in one run.

For GloVe 6B 50-d (400,000 word vectors) and all-MiniLM-L6-v2 embeddings of every sentence in
shared/data (about 76,500), at several sizes:

- emx-mcp's VectorIndex with the default policy, filled in batches of 10,000 as a store would be
  (training and retraining happen on their own, in the background): build time, its self-measured
  recall@10, recall@10 on 1,000 held-out queries against exact search, single-query latency
  p50/p95, batch throughput, bytes per vector, and the time per added vector once full;
- raw FAISS IndexIVFFlat (same nlist rule, trained on a 256-per-list sample) with nprobe tuned by
  hand to the smallest value reaching the same held-out recall: its single-query latency;
- exact IndexFlatIP: its single-query latency.

    .venv/bin/python benchmarks/index_quality.py [--quick]

Writes results/index_quality.{json,md} and results/index_quality.png (recall against latency).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import faiss
import numpy as np
from common import RESULTS, all_sentences, glove_vectors, minilm_embeddings, percentile, save

from emx_mcp.storage import ivf_batch
from emx_mcp.storage.index import VectorIndex
from emx_mcp.storage.policy import TrainingPolicy, nlist_for, training_sample_size

HELD_OUT = 1_000
K = 10


def exact_topk(base: np.ndarray, queries: np.ndarray, k: int = K) -> np.ndarray:
    _, rows = faiss.knn(queries, base, k, metric=faiss.METRIC_INNER_PRODUCT)
    return rows


def recall(truth: np.ndarray, found: np.ndarray) -> float:
    return float(np.mean([len(set(t) & set(f)) / len(t) for t, f in zip(truth, found, strict=True)]))


def single_latencies(search: Any, queries: np.ndarray) -> dict[str, float]:
    times = []
    for q in queries:
        start = time.perf_counter()
        search(q.reshape(1, -1))
        times.append((time.perf_counter() - start) * 1000)
    return {"p50_ms": round(percentile(times, 50), 4), "p95_ms": round(percentile(times, 95), 4)}


def ours(base: np.ndarray, queries: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    n, dim = base.shape
    index = VectorIndex(dim, TrainingPolicy())
    start = time.perf_counter()
    for lo in range(0, n, 10_000):
        index.add(np.arange(lo, min(n, lo + 10_000)), base[lo : lo + 10_000])
    index.wait_idle()  # a training started by the last batch is part of the build
    build_s = time.perf_counter() - start
    stats = index.stats()
    _, found = index.search(queries, K)
    lat = single_latencies(lambda q: index.search(q, K), queries)
    start = time.perf_counter()
    index.search(queries, K)
    batch_qps = len(queries) / (time.perf_counter() - start)
    # Time per added vector at this size: 1,000 adds of one vector each (ids beyond the store).
    extra = base[:1000] + 0.0
    start = time.perf_counter()
    for i in range(1000):
        index.add(np.array([n + i]), extra[i : i + 1])
    add_us = (time.perf_counter() - start) / 1000 * 1e6
    return {
        "kind": "ivf" if stats.trained else "flat",
        "nlist": stats.nlist,
        "nprobe": stats.nprobe,
        "trainings": stats.state.trainings,
        "build_s": round(build_s, 2),
        "self_measured_recall_at_10": stats.state.measured_recall_at_10 if stats.trained else 1.0,
        "held_out_recall_at_10": round(recall(truth, found), 4),
        "single": lat,
        "batch_qps": round(batch_qps, 1),
        "bytes_per_vector": round(index.memory_bytes() / len(index), 1),
        "bytes_per_vector_over_raw": round(index.memory_bytes() / len(index) / (dim * 4), 3),
        "add_us_per_vector": round(add_us, 1),
    }


def raw_ivf(base: np.ndarray, queries: np.ndarray, truth: np.ndarray, target: float) -> dict[str, Any]:
    n, dim = base.shape
    nlist = nlist_for(n)
    start = time.perf_counter()
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(0)
    index.train(base[rng.choice(n, training_sample_size(n, nlist), replace=False)])
    index.add(base)
    build_s = time.perf_counter() - start
    sweep: dict[int, float] = {}

    def measure(nprobe: int) -> float:
        if nprobe not in sweep:
            index.nprobe = nprobe
            sweep[nprobe] = recall(truth, index.search(queries, K)[1])
        return sweep[nprobe]

    # Smallest nprobe reaching the target: doubling, then bisection (the hand tuning, done exactly).
    low, high = 0, 1
    while measure(high) < target and high < nlist:
        low, high = high, min(nlist, high * 2)
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if measure(mid) >= target else (mid, high)
    chosen = high
    index.nprobe = chosen
    return {
        "nlist": nlist,
        "nprobe": chosen,
        "build_s": round(build_s, 2),
        "held_out_recall_at_10": round(recall(truth, index.search(queries, K)[1]), 4),
        "single": single_latencies(lambda q: index.search(q, K), queries),
        "sweep": [{"nprobe": p, "recall": round(r, 4)} for p, r in sorted(sweep.items())],
    }


def exact(base: np.ndarray, queries: np.ndarray) -> dict[str, Any]:
    index = faiss.IndexFlatIP(base.shape[1])
    index.add(base)
    return {"single": single_latencies(lambda q: index.search(q, K), queries)}


def run(name: str, vectors: np.ndarray, sizes: list[int]) -> list[dict[str, Any]]:
    rng = np.random.default_rng(42)
    order = rng.permutation(len(vectors))
    queries = np.ascontiguousarray(vectors[order[:HELD_OUT]])
    pool = np.ascontiguousarray(vectors[order[HELD_OUT:]])
    rows = []
    for size in sizes:
        base = pool[:size]
        print(f"{name} n={size:,} ...", flush=True)
        truth = exact_topk(base, queries)
        mine = ours(base, queries, truth)
        raw = raw_ivf(base, queries, truth, mine["held_out_recall_at_10"]) if mine["kind"] == "ivf" else None
        flat = exact(base, queries)
        row = {"dataset": name, "n": size, "dim": base.shape[1], "ours": mine, "raw_ivf": raw, "exact": flat}
        if raw is not None:
            row["latency_ratio_vs_raw_ivf"] = round(mine["single"]["p50_ms"] / raw["single"]["p50_ms"], 3)
        row["latency_ratio_vs_exact"] = round(mine["single"]["p50_ms"] / flat["single"]["p50_ms"], 3)
        print(f"  {row}", flush=True)
        rows.append(row)
    return rows


def plot(rows: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for row in rows:
        label = f"{row['dataset']} {row['n'] // 1000}k"
        raw = row["raw_ivf"]
        ax.scatter(
            row["ours"]["single"]["p50_ms"], row["ours"]["held_out_recall_at_10"], marker="o", label=label
        )
        if raw:
            ax.scatter(raw["single"]["p50_ms"], raw["held_out_recall_at_10"], marker="x", color="grey")
        ax.scatter(row["exact"]["single"]["p50_ms"], 1.0, marker="s", color="black", s=12)
    ax.set_xscale("log")
    ax.set_xlabel("single-query latency p50 (ms, log)")
    ax.set_ylabel("recall@10 vs exact (held-out queries)")
    ax.set_title("emx-mcp VectorIndex (o), raw FAISS IVF tuned (x), exact flat (square)")
    ax.axhline(0.95, color="red", linewidth=0.6, linestyle="--")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(RESULTS / "index_quality.png", dpi=110)


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| data | n | kind | nlist/nprobe | recall@10 self / held-out | p50 / p95 ms | raw IVF p50 ms "
        "(ratio) | exact p50 ms | batch q/s | bytes/vec (x raw) | add µs/vec | build s |",
        "| --- | ---: | --- | --- | --- | --- | --- | --- | ---: | --- | ---: | ---: |",
    ]
    for r in rows:
        o, raw = r["ours"], r["raw_ivf"]
        raw_cell = (
            f"{raw['single']['p50_ms']:.3f} ({r['latency_ratio_vs_raw_ivf']:.2f}x)" if raw else "n/a (flat)"
        )
        lines.append(
            f"| {r['dataset']} | {r['n']:,} | {o['kind']} | {o['nlist']}/{o['nprobe']} | "
            f"{o['self_measured_recall_at_10']} / {o['held_out_recall_at_10']} | "
            f"{o['single']['p50_ms']:.3f} / {o['single']['p95_ms']:.3f} | {raw_cell} | "
            f"{r['exact']['single']['p50_ms']:.3f} | {o['batch_qps']:,.0f} | "
            f"{o['bytes_per_vector']:.0f} ({o['bytes_per_vector_over_raw']:.2f}) | "
            f"{o['add_us_per_vector']} | {o['build_s']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="GloVe only, small sizes")
    args = parser.parse_args()
    faiss.omp_set_num_threads(2)
    if not ivf_batch.wait_ready():
        print(f"batch kernels unavailable, FAISS answers batches: {ivf_batch.unavailable_reason()}")
    glove = glove_vectors()
    rows = run(
        "glove-50d", glove, [10_000, 50_000] if args.quick else [10_000, 100_000, len(glove) - HELD_OUT]
    )
    if not args.quick:
        minilm = minilm_embeddings(all_sentences())
        rows += run("minilm-384d", minilm, [10_000, len(minilm) - HELD_OUT])
    add_ratio = None
    glove_rows = [r for r in rows if r["dataset"] == "glove-50d"]
    if len(glove_rows) >= 2:
        add_ratio = round(
            glove_rows[-1]["ours"]["add_us_per_vector"] / glove_rows[0]["ours"]["add_us_per_vector"], 2
        )
    result = {"rows": rows, "add_time_ratio_largest_vs_10k": add_ratio}
    save(
        "index_quality",
        result,
        table(rows) + f"\n\nadd time per vector, largest vs 10k (GloVe): {add_ratio}x",
    )
    plot(rows)


if __name__ == "__main__":
    main()
