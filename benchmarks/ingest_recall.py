"""Ingest and recall figures for the foundation, all measured in one run on real sentences.

(a) raw encoder throughput (batched, and one sentence per call as `remember` does);
(b) `remember` throughput through the service and through a real stdio MCP client, as ratios to (a);
(c) `recall` latency p50/p95 through the stdio client at 1k and 20k stored events;
plus the storage cost of one `remember` beyond encoding (with a zero-cost encoder) at 1k and 20k
stored events, and the time from process start to the `initialize` answer.

    .venv/bin/python benchmarks/ingest_recall.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
from common import (
    Timer,
    minilm_embeddings,
    open_service,
    open_with_store,
    remember,
    save,
    sentences,
    summary_ms,
)
from mcp import Client, StdioServerParameters

from emx_mcp.config import Settings
from emx_mcp.embedding import HashingEncoder, SentenceTransformerEncoder
from emx_mcp.storage.events import EventLog
from emx_mcp.storage.records import NewEvent


def encoder_throughput(encoder: SentenceTransformerEncoder, texts: list[str]) -> dict[str, float]:
    encoder.encode(texts[:64])  # warm
    with Timer() as batched:
        encoder.encode(texts)
    single = texts[:300]
    with Timer() as one_by_one:
        for t in single:
            encoder.encode([t])
    return {
        "batched_sentences_per_s": round(len(texts) / batched.seconds, 1),
        "single_sentences_per_s": round(len(single) / one_by_one.seconds, 1),
    }


def service_remember(encoder: Any, texts: list[str], data_dir: Path) -> float:
    service = open_service(Settings(data_dir=data_dir), encoder)
    with Timer() as t:
        for text in texts:
            remember(service, text, session="bench")
    service.close()
    return len(texts) / t.seconds


def storage_overhead_ms(data_dir: Path, stored: int, probes: int = 300) -> dict[str, float]:
    """Per-remember time with a near-free encoder, after `stored` events are already there."""
    encoder = HashingEncoder(dim=384)
    bulk_load(data_dir, [f"filler event {i}" for i in range(stored)], encoder.encode, encoder.model_id)
    service, store = open_with_store(Settings(data_dir=data_dir), encoder)
    index = store.index("default")
    if index is not None:
        index.wait_idle()  # opening a large store may start a training; measure the steady state
    times = []
    for i in range(probes):
        text = f"probe {i}"
        start = time.perf_counter()
        remember(service, text)
        times.append(time.perf_counter() - start)
    encode_only = []
    for i in range(probes):
        start = time.perf_counter()
        encoder.encode([f"probe {i}"])
        encode_only.append(time.perf_counter() - start)
    service.close()
    r = summary_ms(times)
    r["encode_p50_ms"] = summary_ms(encode_only)["p50_ms"]
    return r


def bulk_load(data_dir: Path, texts: list[str], encode: Any, model_id: str, chunk: int = 1000) -> None:
    """Fill a store through the event log (one transaction per chunk) with precomputed embeddings."""
    log = EventLog(Settings(data_dir=data_dir).db_path)
    vectors = encode(texts)
    log.bind_model(model_id, vectors.shape[1])
    stamp = "2026-01-01T00:00:00.000000Z"
    for start in range(0, len(texts), chunk):
        part = texts[start : start + chunk]
        log.append(
            "default",
            f"bulk-{start // chunk}",
            [NewEvent(t, stamp, {}) for t in part],
            vectors[start : start + chunk],
        )
    log.close()


def server_params(data_dir: Path) -> StdioServerParameters:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMX_")}
    env.update(EMX_DATA_DIR=str(data_dir), EMX_LOG_LEVEL="WARNING")
    return StdioServerParameters(command=sys.executable, args=["-m", "emx_mcp", "serve"], env=env)


async def stdio_remember(data_dir: Path, texts: list[str]) -> float:
    async with Client(server_params(data_dir), read_timeout_seconds=300) as client:
        await client.call_tool("remember", {"text": "warm-up", "session": "warm"})
        with Timer() as t:
            for text in texts:
                result = await client.call_tool("remember", {"text": text, "session": "bench"})
                assert not result.is_error, result.content
    return len(texts) / t.seconds


async def stdio_recall(data_dir: Path, queries: list[str]) -> dict[str, float]:
    async with Client(server_params(data_dir), read_timeout_seconds=300) as client:
        await client.call_tool("recall", {"query": "warm-up"})
        # A freshly loaded store may be training its index in the background; time the steady state.
        while True:
            health = await client.call_tool("index_health", {})
            assert health.structured_content is not None
            if not health.structured_content["retraining"]:
                break
            await anyio.sleep(0.5)
        times = []
        for query in queries:
            start = time.perf_counter()
            result = await client.call_tool("recall", {"query": query, "k": 10})
            times.append(time.perf_counter() - start)
            assert not result.is_error and result.structured_content is not None
            assert result.structured_content["results"][0]["text"] == query  # stored text comes back first
    return summary_ms(times)


async def connect_seconds(data_dir: Path) -> float:
    """Process start to a finished handshake, through the SDK's client as a real client does it."""
    start = time.perf_counter()
    async with Client(server_params(data_dir), read_timeout_seconds=60):
        return time.perf_counter() - start


def initialize_seconds(data_dir: Path, runs: int = 5) -> list[float]:
    return [anyio.run(connect_seconds, data_dir) for _ in range(runs)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    args = parser.parse_args()
    large = 2_000 if args.quick else 20_000
    n_remember = 100 if args.quick else 500
    texts = sentences(large + 2 * n_remember)
    encoder = SentenceTransformerEncoder()
    work = Path(tempfile.mkdtemp(prefix="emx-bench-"))
    results: dict[str, Any] = {"sizes": {"large": large, "remember_calls": n_remember}}
    try:
        print("encoder throughput ...", flush=True)
        results["encoder"] = enc = encoder_throughput(encoder, texts[:2000])
        print("remember through the service ...", flush=True)
        service_rate = service_remember(encoder, texts[:n_remember], work / "svc")
        print("remember through a stdio client ...", flush=True)
        stdio_rate = anyio.run(stdio_remember, work / "stdio", texts[n_remember : 2 * n_remember])
        results["remember"] = {
            "service_events_per_s": round(service_rate, 1),
            "stdio_events_per_s": round(stdio_rate, 1),
            "service_vs_single_encode": round(service_rate / enc["single_sentences_per_s"], 3),
            "stdio_vs_single_encode": round(stdio_rate / enc["single_sentences_per_s"], 3),
            "service_vs_batched_encode": round(service_rate / enc["batched_sentences_per_s"], 3),
        }
        print("storage overhead per remember ...", flush=True)
        results["storage_overhead"] = {
            str(n): storage_overhead_ms(work / f"overhead-{n}", n) for n in (1_000, large)
        }
        print("recall latency through a stdio client ...", flush=True)
        corpus = texts[2 * n_remember :]
        vectors = minilm_embeddings(corpus)
        results["recall"] = {}
        for size in (1_000, large):
            store = work / f"recall-{size}"
            bulk_load(store, corpus[:size], lambda _t, v=vectors[:size]: v, encoder.model_id)
            queries = corpus[:size][:: max(1, size // 200)][:200]
            results["recall"][str(size)] = anyio.run(stdio_recall, store, queries)
        print("initialize time ...", flush=True)
        init = initialize_seconds(work / "init")
        results["initialize_s"] = {
            "median": round(sorted(init)[len(init) // 2], 3),
            "max": round(max(init), 3),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    save("ingest_recall", results, table(results))


def table(r: dict[str, Any]) -> str:
    enc, rem, ovh, rec = r["encoder"], r["remember"], r["storage_overhead"], r["recall"]
    large = str(r["sizes"]["large"])
    rows = [
        "| measure | value |",
        "| --- | --- |",
        f"| encoder, batched (sentences/s) | {enc['batched_sentences_per_s']} |",
        f"| encoder, one sentence per call (sentences/s) | {enc['single_sentences_per_s']} |",
        f"| `remember` via service (events/s) | {rem['service_events_per_s']} "
        f"({rem['service_vs_single_encode']:.2f}x single-call encoder) |",
        f"| `remember` via stdio MCP client (events/s) | {rem['stdio_events_per_s']} "
        f"({rem['stdio_vs_single_encode']:.2f}x single-call encoder) |",
        f"| storage cost per `remember` at 1k stored, p50 / p95 (ms) | {ovh['1000']['p50_ms']} / "
        f"{ovh['1000']['p95_ms']} |",
        f"| storage cost per `remember` at {int(large):,} stored, p50 / p95 (ms) | {ovh[large]['p50_ms']} / "
        f"{ovh[large]['p95_ms']} |",
        f"| `recall` k=10 via stdio at 1k events, p50 / p95 (ms) | {rec['1000']['p50_ms']} / "
        f"{rec['1000']['p95_ms']} |",
        f"| `recall` k=10 via stdio at {int(large):,} events, p50 / p95 (ms) | {rec[large]['p50_ms']} / "
        f"{rec[large]['p95_ms']} |",
        f"| process start to `initialize` answer, median / max of 5 (s) | {r['initialize_s']['median']} / "
        f"{r['initialize_s']['max']} |",
    ]
    return "\n".join(rows)


if __name__ == "__main__":
    main()
