"""kill -9 at random moments loses no acknowledged event (DESIGN invariant 1)."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from emx_mcp.config import Settings
from emx_mcp.embedding import HashingEncoder
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
