"""Load: 8 concurrent clients over streamable HTTP, mixed remember / recall / recall_batch, 60 s.

A real `emx-mcp serve --transport http` (real model, bearer token, fresh data directory) on
loopback. Each client is its own MCP session and loops until the time is up: remember a real
Wikipedia paragraph (40%), recall one real sentence (40%), or recall_batch eight (20%). Reported:
requests per second, p50/p95/p99 latency per tool, errors (must be 0), and at the end whether
every acknowledged event is recallable (its own text as the query finds it first) and whether
the log and the index hold exactly the acknowledged events.

    .venv/bin/python benchmarks/load.py [--clients 8] [--seconds 60]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import anyio
import httpx2
from common import DATA, percentile, save, sentences
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

WEIGHTS = {"remember": 0.4, "recall": 0.4, "recall_batch": 0.2}


def paragraphs() -> list[str]:
    out = []
    for line in (DATA / "wiki.jsonl").open():
        for section in json.loads(line)["sections"]:
            out += [p for p in section["paragraphs"] if 80 <= len(p) <= 1500]
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_server(data_dir: Path, token: str) -> tuple[subprocess.Popen[bytes], str, Path]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMX_")}
    env.update(
        EMX_DATA_DIR=str(data_dir),
        EMX_TRANSPORT="http",
        EMX_PORT=str(port),
        EMX_AUTH_TOKEN=token,
        EMX_LOG_LEVEL="WARNING",
    )
    stderr = data_dir.parent / "server.stderr"
    with stderr.open("wb") as err:
        process = subprocess.Popen(
            [str(Path(sys.executable).with_name("emx-mcp")), "serve"], env=env, stderr=err
        )
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process, f"http://127.0.0.1:{port}/mcp", stderr
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(stderr.read_text()[-2000:]) from None
            time.sleep(0.2)


def connect(url: str, token: str) -> tuple[httpx2.AsyncClient, Client]:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=300)
    return http, Client(streamable_http_client(url, http_client=http), read_timeout_seconds=300)


async def run_load(url: str, token: str, clients: int, seconds: float) -> dict[str, Any]:
    rng = random.Random(20261121)
    texts = paragraphs()
    rng.shuffle(texts)
    queries = sentences(20_000)
    latencies: dict[str, list[float]] = defaultdict(list)
    errors: list[str] = []
    acknowledged: dict[str, str] = {}  # event id -> its text
    stop_at = time.monotonic() + seconds

    async def one_client(number: int) -> None:
        own = random.Random(number)
        http, client = connect(url, token)
        async with http, client:
            while time.monotonic() < stop_at:
                tool = own.choices(list(WEIGHTS), weights=list(WEIGHTS.values()))[0]
                if tool == "remember":
                    args: dict[str, Any] = {"text": texts.pop(), "session": f"client-{number}"}
                elif tool == "recall":
                    args = {"query": own.choice(queries), "k": 5}
                else:
                    args = {"queries": own.sample(queries, 8), "k": 5}
                start = time.perf_counter()
                try:
                    result = await client.call_tool(tool, args)
                except Exception as exc:  # a transport failure is an error too
                    errors.append(f"{tool}: {type(exc).__name__}: {exc}")
                    continue
                latencies[tool].append(time.perf_counter() - start)
                if result.is_error or result.structured_content is None:
                    errors.append(f"{tool}: {result.content}")
                elif tool == "remember":
                    for event in result.structured_content["events"]:
                        acknowledged[event["id"]] = event["text"]

    started = time.perf_counter()
    with anyio.fail_after(seconds + 600):  # bounded: a hung server ends the run with an error
        async with anyio.create_task_group() as group:
            for number in range(clients):
                group.start_soon(one_client, number)
    elapsed = time.perf_counter() - started
    return {
        "elapsed_s": round(elapsed, 1),
        "latencies": latencies,
        "errors": errors,
        "acknowledged": acknowledged,
    }


async def verify(url: str, token: str, acknowledged: dict[str, str]) -> dict[str, Any]:
    """Every acknowledged event comes back first for its own text; log, index and acks agree."""
    http, client = connect(url, token)
    lost: list[str] = []
    items = list(acknowledged.items())
    async with http, client:
        for start in range(0, len(items), 128):
            chunk = items[start : start + 128]
            result = await client.call_tool(
                "recall_batch", {"queries": [t for _, t in chunk], "k": 3, "contiguity": 0}
            )
            assert result.structured_content is not None, result.content
            for (event_id, text), hits in zip(chunk, result.structured_content["results"], strict=True):
                first = hits[0] if hits else None
                # A text stored twice (the same sentence in two paragraphs) may find its twin first.
                if first is None or (first["id"] != event_id and first["text"] != text):
                    lost.append(event_id)
        health = await client.call_tool("index_health", {})
    assert health.structured_content is not None
    h = health.structured_content
    return {
        "acknowledged_events": len(acknowledged),
        "not_recalled_first": len(lost),
        "events_in_log": h["events_in_log"],
        "vectors_in_index": h["vectors"],
        "index_kind": h["kind"],
        "status": h["status"],
    }


def report(load: dict[str, Any], check: dict[str, Any], clients: int, seconds: int) -> dict[str, Any]:
    rows = {}
    total = 0
    for tool in WEIGHTS:
        ms = [s * 1000 for s in load["latencies"][tool]]
        total += len(ms)
        rows[tool] = {
            "requests": len(ms),
            "per_s": round(len(ms) / load["elapsed_s"], 2),
            "p50_ms": round(percentile(ms, 50), 1) if ms else None,
            "p95_ms": round(percentile(ms, 95), 1) if ms else None,
            "p99_ms": round(percentile(ms, 99), 1) if ms else None,
        }
    return {
        "clients": clients,
        "seconds": seconds,
        "elapsed_s": load["elapsed_s"],
        "requests": total,
        "requests_per_s": round(total / load["elapsed_s"], 2),
        "errors": len(load["errors"]),
        "first_errors": load["errors"][:10],
        "tools": rows,
        "check": check,
    }


def table(r: dict[str, Any]) -> str:
    c = r["check"]
    lines = [
        f"{r['clients']} clients, {r['seconds']} s over streamable HTTP with a bearer token: "
        f"{r['requests']:,} requests, {r['requests_per_s']} per second, **{r['errors']} errors**.",
        "",
        "| tool | requests | per second | p50 ms | p95 ms | p99 ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for tool, t in r["tools"].items():
        lines.append(
            f"| `{tool}` | {t['requests']:,} | {t['per_s']} | {t['p50_ms']} | {t['p95_ms']} | {t['p99_ms']} |"
        )
    lines += [
        "",
        f"Afterwards: {c['acknowledged_events']:,} acknowledged events, {c['events_in_log']:,} in the log, "
        f"{c['vectors_in_index']:,} in the index ({c['index_kind']}); **{c['not_recalled_first']} not "
        f"recalled first** by their own text; index_health status `{c['status']}`.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=int, default=60)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="emx-load-"))
    token = secrets.token_urlsafe(24)
    process, url, stderr = start_server(work / "data", token)
    try:
        load = anyio.run(run_load, url, token, args.clients, args.seconds)
        check = anyio.run(verify, url, token, load["acknowledged"])
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(120)
    results = report(load, check, args.clients, args.seconds)
    log = stderr.read_text(errors="replace")
    results["server_tracebacks"] = log.count("Traceback")
    results["server_exit_code"] = process.returncode
    shutil.rmtree(work, ignore_errors=True)
    save("load", results, table(results))
    failed = (
        results["errors"]
        or check["not_recalled_first"]
        or check["events_in_log"] != check["acknowledged_events"]
        or check["vectors_in_index"] != check["acknowledged_events"]
        or results["server_tracebacks"]
    )
    if failed:
        raise SystemExit("load benchmark: errors, lost events or server tracebacks (see above)")


if __name__ == "__main__":
    main()
