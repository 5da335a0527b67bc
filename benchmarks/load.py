"""Load: many concurrent clients over streamable HTTP, mixed remember / recall / recall_batch.

A real `emx-mcp serve --transport http` (real model, bearer token, fresh data directory) on
loopback, once per server configuration and client count, all in one run:

- `today`: the torch encoder, every request encoding on its own (EMX_ENCODER_BACKEND=torch,
  EMX_ENCODER_COALESCE=false), as the server was before coalescing;
- `onnx`: the ONNX Runtime encoder, not coalesced;
- `coalesced`: the ONNX Runtime encoder with coalescing (the defaults);
- `int8`: as `coalesced`, with int8 weights (EMX_ENCODER_BACKEND=onnx-int8, not the default: its
  retrieval quality is below the model's, see benchmarks/encoders.py).

Each client is its own MCP session and loops until the time is up: remember a real Wikipedia
paragraph (40%), recall one real sentence (40%), or recall_batch eight (20%). The server has
loaded its model before the clock starts (index_health says when). Reported: requests per second,
p50/p95/p99 latency per tool, errors (must be 0), the encoder's mean batch (index_health), and the
CPU time per request of the server and of this load generator (they share the machine's cores, so
requests per second can be at most cores / (server + generator CPU per request)).
Afterwards the server is stopped, its memories exported with `emx-mcp export`, and it is started
again: the exported events must be exactly the acknowledged ones, and every one must be recalled
first by its own text.

Then one client over stdio (on a copy of the last data directory): `recall` p50 with coalescing on
and off, and the time from process start to the first answered recall.

    .venv/bin/python benchmarks/load.py [--clients 8 32] [--seconds 60] [--configs today onnx coalesced int8]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx2
from common import DATA, RESULTS, percentile, save, sentences, summary_ms
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

WEIGHTS = {"remember": 0.4, "recall": 0.4, "recall_batch": 0.2}
CONFIGS = {
    "today": {"EMX_ENCODER_BACKEND": "torch", "EMX_ENCODER_COALESCE": "false"},
    "onnx": {"EMX_ENCODER_BACKEND": "onnx", "EMX_ENCODER_COALESCE": "false"},
    "coalesced": {"EMX_ENCODER_BACKEND": "onnx", "EMX_ENCODER_COALESCE": "true"},
    "int8": {"EMX_ENCODER_BACKEND": "onnx-int8", "EMX_ENCODER_COALESCE": "true"},
}
EMX = Path(sys.executable).with_name("emx-mcp")


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


def environment(data_dir: Path, config: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMX_")}
    env.update(EMX_DATA_DIR=str(data_dir), EMX_LOG_LEVEL="WARNING", **CONFIGS[config], **extra)
    return env


class HttpServer:
    """`emx-mcp serve --transport http` on a free loopback port, stopped with SIGTERM."""

    def __init__(self, data_dir: Path, config: str, token: str, **extra: str) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}/mcp"
        self.token = token
        env = environment(
            data_dir, config, EMX_TRANSPORT="http", EMX_PORT=str(port), EMX_AUTH_TOKEN=token, **extra
        )
        self.stderr = data_dir.parent / f"server-{config}-{port}.stderr"
        with self.stderr.open("ab") as err:
            self.process = subprocess.Popen([str(EMX), "serve"], env=env, stderr=err)
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError(self.stderr.read_text()[-2000:]) from None
                time.sleep(0.2)

    def connect(self) -> tuple[httpx2.AsyncClient, Client]:
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {self.token}"}, timeout=300)
        return http, Client(streamable_http_client(self.url, http_client=http), read_timeout_seconds=300)

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(120)

    def tracebacks(self) -> int:
        return self.stderr.read_text(errors="replace").count("Traceback")

    def cpu_seconds(self) -> float:
        """User + system CPU time the server process has used so far."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def health(server: HttpServer) -> dict[str, Any]:
    http, client = server.connect()
    async with http, client:
        result = await client.call_tool("index_health", {})
    assert result.structured_content is not None, result.content
    return result.structured_content


async def until_ready(server: HttpServer) -> None:
    """Wait until the model is loaded (so the load phase measures serving, not start-up)."""
    with anyio.fail_after(300):
        while not (await health(server))["encoder"]["ready"]:
            await anyio.sleep(0.25)


def own_session(number: int) -> str:
    return f"client-{number}"


async def run_load(
    server: HttpServer | Any,
    clients: int,
    seconds: float,
    seed: int,
    session_of: Callable[[int], str] = own_session,
) -> dict[str, Any]:
    """`clients` concurrent MCP sessions on `server` (anything with `connect()`) for `seconds`."""
    rng = random.Random(seed)
    texts = paragraphs()
    rng.shuffle(texts)
    queries = sentences(20_000)
    latencies: dict[str, list[float]] = defaultdict(list)
    errors: list[str] = []
    acknowledged: set[str] = set()
    stop_at = time.monotonic() + seconds

    async def one_client(number: int) -> None:
        own = random.Random(seed + number)
        http, client = server.connect()
        async with http, client:
            while time.monotonic() < stop_at:
                tool = own.choices(list(WEIGHTS), weights=list(WEIGHTS.values()))[0]
                if tool == "remember":
                    args: dict[str, Any] = {"text": texts.pop(), "session": session_of(number)}
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
                    reply = result.structured_content
                    assert len(reply["ids"]) == reply["stored"], "a paragraph made over 100 episodes"
                    acknowledged.update(reply["ids"])

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


def export(data_dir: Path, config: str, **extra: str) -> dict[str, str]:
    """Every stored event (id -> text), through `emx-mcp export` with the server stopped."""
    out = data_dir.parent / "export.jsonl"
    subprocess.run(
        [str(EMX), "export", "--out", str(out), "--no-embeddings"],
        env=environment(data_dir, config, **extra),
        check=True,
        capture_output=True,
    )
    events = {}
    for line in out.open():
        record = json.loads(line)
        if "text" in record:
            events[record["id"]] = record["text"]
    out.unlink()
    return events


async def recalled_first(server: HttpServer, events: dict[str, str]) -> list[str]:
    """The ids among `events` that their own text does not find first."""
    http, client = server.connect()
    missed: list[str] = []
    items = list(events.items())
    async with http, client:
        for start in range(0, len(items), 128):
            chunk = items[start : start + 128]
            result = await client.call_tool(
                "recall_batch",
                {"queries": [t for _, t in chunk], "k": 3, "contiguity": 0},
            )
            assert result.structured_content is not None, result.content
            for (event_id, text), found in zip(chunk, result.structured_content["results"], strict=True):
                hits = found["results"]
                first = hits[0] if hits else None
                # A text stored twice (the same sentence in two paragraphs) may find its twin first,
                # and near-identical episodes come back as one item, the newest of them.
                twin = first is not None and (first["text"] == text or first.get("duplicates", 0) > 0)
                if first is None or (first["id"] != event_id and not twin):
                    missed.append(event_id)
    return missed


def tool_rows(load: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Requests, rate and p50/p95/p99 latency of each tool in a `run_load` result."""
    rows = {}
    for tool in WEIGHTS:
        ms = [s * 1000 for s in load["latencies"][tool]]
        rows[tool] = {
            "requests": len(ms),
            "per_s": round(len(ms) / load["elapsed_s"], 2),
            "p50_ms": round(percentile(ms, 50), 1) if ms else None,
            "p95_ms": round(percentile(ms, 95), 1) if ms else None,
            "p99_ms": round(percentile(ms, 99), 1) if ms else None,
        }
    return rows


def one_run(work: Path, config: str, clients: int, seconds: int, models: Path) -> dict[str, Any]:
    data_dir = work / f"{config}-{clients}" / "data"
    data_dir.mkdir(parents=True)
    if models.is_dir():  # the ONNX export made by an earlier run (export time is not serving)
        shutil.copytree(models, data_dir / "models")
    token = secrets.token_urlsafe(24)
    server = HttpServer(data_dir, config, token)
    try:
        anyio.run(until_ready, server)
        server_cpu, own_cpu = server.cpu_seconds(), own_cpu_seconds()
        load = anyio.run(run_load, server, clients, seconds, 20261121 + clients)
        server_cpu, own_cpu = server.cpu_seconds() - server_cpu, own_cpu_seconds() - own_cpu
        after = anyio.run(health, server)
    finally:
        exit_code = server.stop()
    if (data_dir / "models").is_dir():
        shutil.copytree(data_dir / "models", models, dirs_exist_ok=True)
    stored = export(data_dir, config)
    server = HttpServer(data_dir, config, token)
    try:
        missed = anyio.run(recalled_first, server, stored)
    finally:
        server.stop()
    acknowledged = load["acknowledged"]
    rows = tool_rows(load)
    total = sum(r["requests"] for r in rows.values())
    return {
        "config": config,
        "clients": clients,
        "seconds": seconds,
        "elapsed_s": load["elapsed_s"],
        "requests": total,
        "requests_per_s": round(total / load["elapsed_s"], 2),
        "server_cpu_ms_per_request": round(1000 * server_cpu / total, 1),
        "generator_cpu_ms_per_request": round(1000 * own_cpu / total, 1),
        "cores_busy": round((server_cpu + own_cpu) / load["elapsed_s"], 2),
        "errors": len(load["errors"]),
        "first_errors": load["errors"][:10],
        "tools": rows,
        "encoder": after["encoder"],
        "acknowledged_events": len(acknowledged),
        "lost": len(acknowledged - stored.keys()),
        "unacknowledged_stored": len(stored.keys() - acknowledged),
        "not_recalled_first": len(missed),
        "server_exit_code": exit_code,
        "server_tracebacks": server.tracebacks(),
        "data_dir": str(data_dir),
    }


# One client over stdio.


def stdio_params(data_dir: Path, config: str) -> StdioServerParameters:
    return StdioServerParameters(command=str(EMX), args=["serve"], env=environment(data_dir, config))


async def first_recall_seconds(data_dir: Path, config: str) -> float:
    """Process start to the first answered recall, as a client that asks at once sees it."""
    start = time.perf_counter()
    async with Client(stdio_params(data_dir, config), read_timeout_seconds=300) as client:
        result = await client.call_tool("recall", {"query": "What did the survey find?"})
        assert not result.is_error, result.content
        return time.perf_counter() - start


async def stdio_recall(data_dir: Path, config: str, queries: list[str]) -> dict[str, float]:
    async with Client(stdio_params(data_dir, config), read_timeout_seconds=300) as client:
        await client.call_tool("recall", {"query": "warm-up"})
        times = []
        for query in queries:
            start = time.perf_counter()
            result = await client.call_tool("recall", {"query": query, "k": 5})
            times.append(time.perf_counter() - start)
            assert not result.is_error, result.content
    return summary_ms(times)


def vector_space(config: str) -> str:
    """int8 weights make vectors of their own: a store made with them opens only with them."""
    return "int8" if CONFIGS[config]["EMX_ENCODER_BACKEND"] == "onnx-int8" else "model"


def single_client(work: Path, sources: dict[str, Path], models: Path) -> dict[str, Any]:
    """One stdio client per configuration, on a copy of a data directory of its vector space."""
    queries = random.Random(7).sample(sentences(20_000), 300)
    out: dict[str, Any] = {"events": None, "recall": {}, "first_recall_s": {}}
    for config, source in sources.items():
        data_dir = work / f"stdio-{config}" / "data"
        shutil.copytree(source, data_dir)
        shutil.rmtree(data_dir / "models", ignore_errors=True)
        if CONFIGS[config]["EMX_ENCODER_BACKEND"].startswith("onnx"):
            cold = anyio.run(first_recall_seconds, data_dir, config)  # exports the model
            out["first_recall_s"][f"{config} (exporting ONNX)"] = round(cold, 2)
        warm = [anyio.run(first_recall_seconds, data_dir, config) for _ in range(3)]
        out["first_recall_s"][config] = round(sorted(warm)[1], 2)
        out["recall"][config] = anyio.run(stdio_recall, data_dir, config, queries)
    return out


def tables(runs: list[dict[str, Any]], single: dict[str, Any] | None) -> str:
    lines = [
        "| server | clients | requests/s | errors | lost | not first | mean batch "
        "| remember p50 / p95 / p99 ms | recall p50 / p95 / p99 ms | recall_batch p50 / p95 / p99 ms "
        "| CPU ms per request: server + generator | cores busy |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in runs:
        cells = [
            f"{t['p50_ms']:.0f} / {t['p95_ms']:.0f} / {t['p99_ms']:.0f}" if t["requests"] else "-"
            for t in r["tools"].values()
        ]
        lines.append(
            f"| {r['config']} | {r['clients']} | {r['requests_per_s']} | {r['errors']} | {r['lost']} "
            f"| {r['not_recalled_first']} | {r['encoder']['mean_batch']} | "
            + " | ".join(cells)
            + f" | {r['server_cpu_ms_per_request']} + {r['generator_cpu_ms_per_request']}"
            + f" | {r['cores_busy']} |"
        )
    if single:
        lines += ["", "| one client over stdio | recall p50 ms | recall p95 ms | first recall after start |"]
        lines.append("| --- | ---: | ---: | ---: |")
        for config, r in single["recall"].items():
            lines.append(
                f"| {config} | {r['p50_ms']} | {r['p95_ms']} | {single['first_recall_s'][config]} s |"
            )
        for name, seconds in single["first_recall_s"].items():
            if "exporting" in name:
                lines.append(f"| {name} | | | {seconds} s |")
    return "\n".join(lines)


def plot(runs: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tools = list(WEIGHTS)
    fig, axes = plt.subplots(1, len(tools) + 1, figsize=(4 * (len(tools) + 1), 3.6))
    for config in dict.fromkeys(r["config"] for r in runs):
        mine = sorted((r for r in runs if r["config"] == config), key=lambda r: r["clients"])
        clients = [r["clients"] for r in mine]
        axes[0].plot(clients, [r["requests_per_s"] for r in mine], "o-", label=config)
        for ax, tool in zip(axes[1:], tools, strict=True):
            ax.plot(clients, [r["tools"][tool]["p95_ms"] for r in mine], "o-", label=config)
    axes[0].set(title="throughput", xlabel="clients", ylabel="requests per second")
    for ax, tool in zip(axes[1:], tools, strict=True):
        ax.set(title=f"{tool} p95", xlabel="clients", ylabel="ms")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.set_xticks(sorted({r["clients"] for r in runs}))
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "load.png", dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    parser.add_argument("--no-stdio", action="store_true", help="skip the single-client stdio part")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="emx-load-"))
    models = work / "models"
    runs = []
    try:
        for clients in args.clients:
            for config in args.configs:
                run = one_run(work, config, clients, args.seconds, models)
                print(json.dumps({k: v for k, v in run.items() if k != "first_errors"}), flush=True)
                runs.append(run)
        single = None
        if not args.no_stdio:
            last = {vector_space(r["config"]): Path(r["data_dir"]) for r in runs}
            sources = {c: last[vector_space(c)] for c in CONFIGS if c in args.configs}
            single = single_client(work, sources, models)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for run in runs:
        del run["data_dir"]
    save("load", {"runs": runs, "single_client_stdio": single}, tables(runs, single))
    plot(runs)
    failed = [
        r
        for r in runs
        if r["errors"]
        or r["lost"]
        or r["unacknowledged_stored"]
        or r["not_recalled_first"]
        or r["server_tracebacks"]
    ]
    if failed:
        raise SystemExit(f"load benchmark: errors, lost events or server tracebacks in {len(failed)} runs")


if __name__ == "__main__":
    main()
