"""Snapshots of a large index: tool calls during a save, and peak memory to save and to load.

An IVF-Flat index of N vectors (default 1,000,000 x 384, the default EMX_MAX_EVENTS at the
packaged model's dimension; clustered synthetic vectors, since only sizes matter here) is saved
the way the replica saves it: frozen, then streamed to disk. In the same run:

- search latency (single queries, k=10) without a snapshot, and while one is being written, with
  a writer adding a vector every 10 ms throughout (adds must go on too);
- peak resident memory during the save, sampled every 5 ms, above what the process held before;
- peak resident memory to load the file in a fresh process, above that process's baseline;
- for comparison, what the earlier in-memory serialisation costs the same index (it ran with
  every tool call waiting): its time and its peak memory.

    .venv/bin/python benchmarks/snapshots.py [--n 1000000] [--dim 384]

Writes results/snapshots.{json,md}.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from common import percentile, save

from emx_mcp.embedding import normalize
from emx_mcp.storage import snapshots
from emx_mcp.storage.index import IndexParts, IndexState, VectorIndex, new_flat
from emx_mcp.storage.policy import TrainingPolicy

PROVENANCE = snapshots.Provenance("benchmark", "default", 1, 0, "benchmark")
POLICY = TrainingPolicy(train_at=50_000)
NLIST, NPROBE, CENTRES = 1024, 16, 256


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@contextmanager
def peak_rss() -> Iterator[dict[str, int]]:
    """Sample the resident set every 5 ms while the block runs; yields {'before', 'peak'}."""
    out = {"before": rss_bytes(), "peak": 0}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            out["peak"] = max(out["peak"], rss_bytes())
            done.wait(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        yield out
    finally:
        done.set()
        sampler.join()
        out["peak"] = max(out["peak"], rss_bytes())


def vectors(n: int, dim: int, seed: int, centres: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return normalize(centres[rng.integers(0, len(centres), n)] + 0.4 * rng.standard_normal((n, dim)))


def build(n: int, dim: int) -> VectorIndex:
    centres = np.random.default_rng(0).standard_normal((CENTRES, dim)).astype(np.float32)
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, NLIST, faiss.METRIC_INNER_PRODUCT)
    ivf.train(vectors(NLIST * 40, dim, 1, centres))
    for lo in range(0, n, 100_000):
        ivf.add_with_ids(
            vectors(min(100_000, n - lo), dim, 2 + lo, centres), np.arange(lo, min(n, lo + 100_000))
        )
    probes = vectors(200, dim, 99, centres)
    state = IndexState(nprobe=NPROBE, measured_recall_at_10=None, trainings=1, n_at_training=n)
    parts = IndexParts(ivf, new_flat(dim), np.arange(200, dtype=np.int64), probes, state)
    index = VectorIndex(dim, POLICY, parts)
    index.last_seq = PROVENANCE.last_seq
    return index


def latencies(search: Callable[[], Any], until: Callable[[], bool], least: int) -> list[float]:
    out: list[float] = []
    while len(out) < least or not until():
        start = time.perf_counter()
        search()
        out.append((time.perf_counter() - start) * 1000)
    return out


def during_snapshot(index: VectorIndex, path: Path, queries: np.ndarray, dim: int) -> dict[str, Any]:
    """Search in a loop and add every 10 ms while the replica's way of saving runs in a thread."""
    done = threading.Event()
    add_ms: list[float] = []

    def writer() -> None:
        rng = np.random.default_rng(5)
        next_id = 10**9
        while not done.is_set():
            start = time.perf_counter()
            index.add(np.array([next_id]), normalize(rng.standard_normal((1, dim))))
            add_ms.append((time.perf_counter() - start) * 1000)
            next_id += 1
            done.wait(0.01)

    def snapshot() -> None:
        with index.frozen() as view:
            snapshots.write(path, view, dim, POLICY.kind, PROVENANCE)
        done.set()

    threads = [threading.Thread(target=writer), threading.Thread(target=snapshot)]
    started = time.perf_counter()
    with peak_rss() as memory:
        for t in threads:
            t.start()
        rows = iter(range(10**9))
        during = latencies(
            lambda: index.search(queries[next(rows) % len(queries)][None], 10), done.is_set, 50
        )
        for t in threads:
            t.join()
    return {
        "save_s": round(time.perf_counter() - started, 2),
        "search_ms": during,
        "add_ms": add_ms,
        "save_peak_rss_above_before": memory["peak"] - memory["before"],
    }


def legacy_serialisation(index: VectorIndex) -> dict[str, Any]:
    """What the earlier snapshot did under the service-wide lock: every section as bytes, then joined."""
    with index.frozen() as view, peak_rss() as memory:
        start = time.perf_counter()
        live = faiss.serialize_index(view.live).tobytes()
        payload = b"".join([live, view.delta, view.probe_ids.tobytes(), view.probes.tobytes()])
        digest = hashlib.sha256(payload).hexdigest()
        blob = b"EMXIDX3\n" + digest.encode() + payload
        seconds = time.perf_counter() - start
        del live, payload, blob
    return {
        "seconds_holding_every_call": round(seconds, 2),
        "peak_rss_above_before": memory["peak"] - memory["before"],
    }


def load_in_a_fresh_process(path: Path) -> dict[str, int]:
    """Run this script with --load: a new interpreter reads the snapshot back."""
    out = subprocess.run(
        [sys.executable, __file__, "--load", str(path)], capture_output=True, text=True, check=True
    ).stdout.split()
    return {
        "load_peak_rss_above_before": int(out[0]),
        "loaded_index_bytes": int(out[1]),
        "load_s_ms": int(out[2]),
    }


def load_only(path: Path) -> None:
    with peak_rss() as memory:
        start = time.perf_counter()
        index = snapshots.load(path, POLICY, PROVENANCE)
        ms = int((time.perf_counter() - start) * 1000)
    print(memory["peak"] - memory["before"], index.memory_bytes(), ms)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--load", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load:
        load_only(args.load)
        return
    faiss.omp_set_num_threads(2)
    print(f"building an IVF-Flat index of {args.n:,} x {args.dim} ...", flush=True)
    index = build(args.n, args.dim)
    queries = vectors(
        2000, args.dim, 7, np.random.default_rng(0).standard_normal((CENTRES, args.dim)).astype(np.float32)
    )
    index_bytes = index.memory_bytes()
    rows = iter(range(10**9))
    quiet = latencies(lambda: index.search(queries[next(rows) % len(queries)][None], 10), lambda: True, 2000)
    with tempfile.TemporaryDirectory(prefix="emx-snap-", dir=Path(__file__).parent) as work:
        path = Path(work) / "index.emxidx"
        print("saving while searching and adding ...", flush=True)
        during = during_snapshot(index, path, queries, args.dim)
        file_bytes = path.stat().st_size
        print("loading in a fresh process ...", flush=True)
        loaded = load_in_a_fresh_process(path)
    print("the earlier in-memory serialisation, for comparison ...", flush=True)
    legacy = legacy_serialisation(index)
    p99_quiet, p99_during = percentile(quiet, 99), percentile(during["search_ms"], 99)
    result = {
        "n": args.n,
        "dim": args.dim,
        "index_bytes": index_bytes,
        "file_bytes": file_bytes,
        "search_p50_ms_without": round(percentile(quiet, 50), 3),
        "search_p99_ms_without": round(p99_quiet, 3),
        "search_p50_ms_during": round(percentile(during["search_ms"], 50), 3),
        "search_p99_ms_during": round(p99_during, 3),
        "p99_ratio": round(p99_during / p99_quiet, 2),
        "searches_during": len(during["search_ms"]),
        "adds_during": len(during["add_ms"]),
        "add_p99_ms_during": round(percentile(during["add_ms"], 99), 3),
        "save_s": during["save_s"],
        # The process holds the index throughout; what the save adds is on top of it.
        "save_peak_over_index": round(1 + during["save_peak_rss_above_before"] / index_bytes, 3),
        "load_s": round(loaded["load_s_ms"] / 1000, 2),
        "load_peak_over_index": round(loaded["load_peak_rss_above_before"] / index_bytes, 3),
        "legacy": {
            **legacy,
            "peak_over_index": round(1 + legacy["peak_rss_above_before"] / index_bytes, 3),
        },
    }
    save("snapshots", result, table(result))


def table(r: dict[str, Any]) -> str:
    gib = 1024**3
    return "\n".join(
        [
            f"IVF-Flat index of {r['n']:,} x {r['dim']} ({r['index_bytes'] / gib:.2f} GiB in memory, "
            f"{r['file_bytes'] / gib:.2f} GiB on disk):",
            "",
            "| measure | value |",
            "| --- | --- |",
            "| search p50 / p99 without a snapshot (ms) | "
            f"{r['search_p50_ms_without']} / {r['search_p99_ms_without']} |",
            f"| search p50 / p99 while a snapshot is written (ms) | {r['search_p50_ms_during']} / "
            f"{r['search_p99_ms_during']} (**{r['p99_ratio']}x**, {r['searches_during']:,} searches) |",
            f"| adds during the snapshot, one every 10 ms: count, p99 (ms) | {r['adds_during']}, "
            f"{r['add_p99_ms_during']} |",
            "| save time (s); peak memory while saving (the index plus what the save adds), over the index | "
            f"{r['save_s']}; **{r['save_peak_over_index']}x** |",
            "| load in a fresh process (s); its peak memory above the bare interpreter, over the index | "
            f"{r['load_s']}; **{r['load_peak_over_index']}x** |",
            "| before: in-memory serialisation, all tool calls waiting (s); its peak memory over the index | "
            f"{r['legacy']['seconds_holding_every_call']}; {r['legacy']['peak_over_index']}x |",
        ]
    )


if __name__ == "__main__":
    main()
