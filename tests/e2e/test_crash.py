"""kill -9 at random moments loses no acknowledged event (DESIGN invariant 1)."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from emx_mcp.config import Settings
from emx_mcp.embedding import HashingEncoder, SentenceTransformerEncoder
from tests.e2e.servers import INITIALIZE, spawn_stdio
from tests.helpers import open_with_store, recall

pytestmark = pytest.mark.slow

CHILD = Path(__file__).with_name("crash_child.py")
TRIALS = 20


def run_and_kill(data_dir: Path, trial: int, rng: random.Random) -> list[tuple[str, str]]:
    """Start the child, kill it with SIGKILL at a random moment, return what it acknowledged."""
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), str(data_dir), str(trial)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    acked: list[tuple[str, str]] = []
    ready = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line == "ready\n":
                ready.set()
            elif line.endswith("\n") and "\t" in line:  # a line cut by the kill was never acknowledged
                event_id, text = line.rstrip("\n").split("\t", 1)
                acked.append((event_id, text))

    reader = threading.Thread(target=read)
    reader.start()
    assert ready.wait(60), "child did not start"
    time.sleep(rng.uniform(0.05, 1.0))
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    reader.join(30)
    return acked


def test_sigkill_loses_no_acknowledged_event(tmp_path: Path) -> None:
    rng = random.Random(20261121)
    data_dir = tmp_path / "data"
    everything: list[tuple[str, str]] = []
    for trial in range(TRIALS):
        acked = run_and_kill(data_dir, trial, rng)
        assert acked, f"trial {trial}: the child acknowledged nothing before the kill"
        everything.extend(acked)
        service, store = open_with_store(Settings(data_dir=data_dir), HashingEncoder(dim=256))
        try:
            missing = [i for i, _ in everything if store.event("default", i) is None]
            assert not missing, f"trial {trial}: {len(missing)} acknowledged events lost"
            assert len(store) == service.count() >= len(everything)
            for event_id, text in rng.sample(everything, min(40, len(everything))) + acked[-3:]:
                hits = recall(service, text, k=1)
                assert hits and hits[0].event.id == event_id, f"trial {trial}: {text!r} not recalled first"
        finally:
            # Close without a final snapshot half the time, so both recovery paths are exercised.
            if trial % 2:
                service.close()
            else:
                store.log.close()
    print(f"{TRIALS} SIGKILL trials, {len(everything)} acknowledged events, 0 lost")


SERVER_TRIALS = 3


def remember_until_killed(data_dir: Path, trial: int, rng: random.Random) -> list[tuple[str, str]]:
    """The real `emx-mcp serve` over stdio: remember in a loop, SIGKILL it at a random moment.

    An event counts as acknowledged when its result line has been read from the server's stdout.
    """
    proc = spawn_stdio(data_dir, stderr=subprocess.DEVNULL)
    assert proc.stdin is not None and proc.stdout is not None
    acked: list[tuple[str, str]] = []

    def send(message: dict[str, Any]) -> None:
        assert proc.stdin is not None
        proc.stdin.write((json.dumps(message) + "\n").encode())
        proc.stdin.flush()

    send(INITIALIZE)
    assert json.loads(proc.stdout.readline())["id"] == 1
    send({"jsonrpc": "2.0", "method": "notifications/initialized"})
    # The kill comes at a random moment once writes are under way: counted from the first
    # acknowledged event, as the model's load (and its first export) takes longer on a busy machine.
    killer = threading.Timer(rng.uniform(1.0, 6.0), proc.kill)
    watchdog = threading.Timer(180.0, proc.kill)  # a server that never answers fails the trial
    watchdog.start()
    try:
        for i in range(10_000):
            words = f"{rng.choice(WORDS)} {rng.choice(WORDS)} {i * 7919 % 10007}"
            text = f"server trial {trial} event {i}: the {words}"
            send(
                {
                    "jsonrpc": "2.0",
                    "id": 100 + i,
                    "method": "tools/call",
                    "params": {"name": "remember", "arguments": {"text": text, "session": f"kill-{trial}"}},
                }
            )
            line = proc.stdout.readline()
            if not line.endswith(b"\n"):
                break  # killed before the answer was complete: not acknowledged
            reply = json.loads(line)
            assert not reply["result"]["isError"], reply
            acked.append((reply["result"]["structuredContent"]["ids"][0], text))
            if len(acked) == 1:
                killer.start()
    except (BrokenPipeError, ValueError):
        pass
    finally:
        killer.cancel()
        watchdog.cancel()
        proc.kill()
        proc.wait(30)
    return acked


WORDS = ["database", "deploy", "cache", "router", "budget", "invoice", "sprint", "kernel", "backup", "search"]


def test_sigkill_of_the_real_server_loses_no_acknowledged_event(tmp_path: Path) -> None:
    rng = random.Random(20261130)
    data_dir = tmp_path / "data"
    everything: list[tuple[str, str]] = []
    for trial in range(SERVER_TRIALS):
        acked = remember_until_killed(data_dir, trial, rng)
        assert acked, f"trial {trial}: the server acknowledged nothing before the kill"
        everything.extend(acked)
    service, store = open_with_store(Settings(data_dir=data_dir), SentenceTransformerEncoder())
    try:
        missing = [i for i, _ in everything if store.event("default", i) is None]
        assert not missing, f"{len(missing)} of {len(everything)} acknowledged events lost"
        for event_id, text in rng.sample(everything, min(30, len(everything))):
            assert recall(service, text, k=1)[0].event.id == event_id, text
    finally:
        service.close()
    print(f"{SERVER_TRIALS} SIGKILLs of emx-mcp serve, {len(everything)} acknowledged events, 0 lost")
