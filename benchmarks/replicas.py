"""Two replicas, one Milvus: the load benchmark's mix spread over two `emx-mcp serve` processes.

Milvus Lite 2.5 (Milvus's own engine) is served over TCP by `emx-mcp milvus-lite`; two replicas
(`EMX_STORE=milvus`, real model, bearer token) serve streamable HTTP on their own ports. Eight
clients alternate between them; clients 2n and 2n+1 (one on each replica) write to the same
session, so replicas append to one session at the same moments. After 60 s:

- errors must be 0;
- every acknowledged event is stored (`emx-mcp export` from the store), nothing else is;
- every acknowledged event is recalled first by its own text through *each* replica;
- no two events share a (session, position).

    .venv/bin/python benchmarks/replicas.py [--clients 8] [--seconds 60]
"""

from __future__ import annotations

import argparse
import itertools
import json
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
from common import save
from load import EMX, HttpServer, export, free_port, recalled_first, run_load, tool_rows, until_ready


class Spread:
    """Hands out connections to the replicas in turn: client n talks to replica n mod 2."""

    def __init__(self, servers: list[HttpServer]) -> None:
        self._next = itertools.cycle(servers)

    def connect(self) -> Any:
        return next(self._next).connect()


def start_milvus(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen(
        [str(EMX), "milvus-lite", "--db", str(folder / "milvus.db"), "--port", str(port)],
        stderr=(folder / "milvus.stderr").open("wb"),
        start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.milvus_server import wait_until_ready

    wait_until_ready(uri, process, 60)
    return process, uri


def positions(uri: str) -> list[tuple[str, int]]:
    from pymilvus import MilvusClient

    client = MilvusClient(uri=uri)
    places = []
    iterator = client.query_iterator(
        "emx_events", batch_size=4000, filter="seq >= 0", output_fields=["session", "position"]
    )
    while rows := iterator.next():
        places += [(r["session"], int(r["position"])) for r in rows]
    iterator.close()
    client.close()
    return places


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=int, default=60)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="emx-replicas-"))
    milvus, uri = start_milvus(work)
    store = {"EMX_STORE": "milvus", "EMX_MILVUS_URI": uri}
    token = secrets.token_urlsafe(24)
    try:
        data = work / "replica" / "data"  # shared only for the ONNX export; the memory is in Milvus
        data.mkdir(parents=True)
        replicas = [HttpServer(data, "coalesced", token, **store) for _ in range(2)]
        try:
            for server in replicas:
                anyio.run(until_ready, server)
            load = anyio.run(
                run_load, Spread(replicas), args.clients, args.seconds, 20261130, lambda n: f"shared-{n // 2}"
            )
            stored = export(data, "coalesced", **store)
            missed = {
                f"replica {i}": len(anyio.run(recalled_first, s, stored)) for i, s in enumerate(replicas)
            }
        finally:
            exits = [server.stop() for server in replicas]
        places = positions(uri)
        tracebacks = sum(server.tracebacks() for server in replicas)
        fallbacks = sum(
            server.stderr.read_text(errors="replace").count("BM25 scores unavailable") for server in replicas
        )
        causes = [
            line
            for server in replicas
            for line in server.stderr.read_text(errors="replace").splitlines()
            if "Exception:" in line or "Error:" in line
        ][:10]
    finally:
        milvus.send_signal(signal.SIGTERM)
        milvus.wait(60)
        shutil.rmtree(work, ignore_errors=True)
    acknowledged = load["acknowledged"]
    tools = tool_rows(load)
    total = sum(t["requests"] for t in tools.values())
    result = {
        "clients": args.clients,
        "seconds": args.seconds,
        "requests": total,
        "requests_per_s": round(total / load["elapsed_s"], 2),
        "errors": len(load["errors"]),
        "first_errors": load["errors"][:10],
        "tools": tools,
        "acknowledged_events": len(acknowledged),
        "lost": len(acknowledged - stored.keys()),
        "unacknowledged_stored": len(stored.keys() - acknowledged),
        "not_recalled_first": missed,
        "duplicate_places": len(places) - len(set(places)),
        "events": len(places),
        "server_exit_codes": exits,
        "server_tracebacks": tracebacks,
        "first_causes": causes,
        "bm25_fallbacks": fallbacks,
        "measured_at": time.strftime("%Y-%m-%d"),
    }
    print(json.dumps(result), flush=True)
    cells = " | ".join(f"{t['p50_ms']:.0f} / {t['p95_ms']:.0f} / {t['p99_ms']:.0f}" for t in tools.values())
    table = "\n".join(
        [
            "| replicas | clients | seconds | requests/s | errors | acknowledged | lost | not first (A / B) "
            "| duplicate places | remember p50 / p95 / p99 ms | recall p50 / p95 / p99 ms "
            "| recall_batch p50 / p95 / p99 ms |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
            f"| 2 | {args.clients} | {args.seconds} | {result['requests_per_s']} | {result['errors']} "
            f"| {len(acknowledged)} | {result['lost']} | {' / '.join(str(v) for v in missed.values())} "
            f"| {result['duplicate_places']} | {cells} |",
        ]
    )
    save("replicas", result, table)
    if result["errors"] or result["lost"] or any(missed.values()) or result["duplicate_places"] or tracebacks:
        raise SystemExit("replicas benchmark: errors, lost events, misses or duplicate places")


if __name__ == "__main__":
    main()
