"""Index snapshots: round trips, and damaged files detected rather than trusted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from emx_mcp.storage import snapshots
from emx_mcp.storage.index import VectorIndex
from emx_mcp.storage.policy import TrainingPolicy
from tests.storage.vectors import clustered, random_unit


def test_snapshot_round_trip_keeps_ids_and_last_seq(tmp_path: Path) -> None:
    vectors = random_unit(300, 24)
    index = VectorIndex(24)
    index.add(np.arange(1, 301), vectors)
    index.last_seq, index.last_forget = 300, 7
    path = tmp_path / "ns.emxidx"
    snapshots.save(path, index)
    loaded = snapshots.load(path)
    assert (len(loaded), loaded.last_seq, loaded.last_forget) == (300, 300, 7)
    header = snapshots.header(path)
    assert header is not None and header["last_seq"] == 300
    _, ids = loaded.search(vectors[:10], 1)
    assert ids[:, 0].tolist() == list(range(1, 11))
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[: len(b) // 2],  # truncated mid-payload
        lambda b: b[:10],  # truncated header
        lambda b: b"",  # empty file
        lambda b: b"garbage" * 100,  # not a snapshot at all
        lambda b: b[:-100] + bytes(x ^ 0xFF for x in b[-100:]),  # flipped payload bits
    ],
)
def test_damaged_snapshot_is_detected(tmp_path: Path, damage) -> None:  # type: ignore[no-untyped-def]
    index = VectorIndex(16)
    index.add(np.arange(1, 101), random_unit(100, 16))
    path = tmp_path / "x.emxidx"
    path.write_bytes(damage(snapshots.to_bytes(index)))
    with pytest.raises(snapshots.CorruptSnapshot):
        snapshots.load(path)


def test_missing_snapshot_is_reported_as_corrupt(tmp_path: Path) -> None:
    with pytest.raises(snapshots.CorruptSnapshot):
        snapshots.load(tmp_path / "absent.emxidx")
    assert snapshots.header(tmp_path / "absent.emxidx") is None


def test_ivf_snapshot_round_trip(tmp_path: Path) -> None:
    vectors = clustered(2500, 16)
    index = VectorIndex(16, TrainingPolicy(train_at=2000))
    index.add(np.arange(2500), vectors)
    index.wait_idle(60)
    snapshots.save(tmp_path / "i.emxidx", index)
    loaded = snapshots.load(tmp_path / "i.emxidx", TrainingPolicy(train_at=2000))
    assert loaded.stats().trained
    assert loaded.stats().nprobe == index.stats().nprobe
    assert loaded.state.measured_recall_at_10 == index.state.measured_recall_at_10
    _, a = index.search(vectors[:50], 5)
    _, b = loaded.search(vectors[:50], 5)
    assert (a == b).all()
    with pytest.raises(snapshots.CorruptSnapshot, match="ivf_flat"):
        snapshots.load(tmp_path / "i.emxidx", TrainingPolicy(kind="ivf_sq8"))
