"""Index snapshots: round trips, damaged or foreign files refused, writes that do not block."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from emx_mcp.storage import snapshots
from emx_mcp.storage.index import VectorIndex
from emx_mcp.storage.policy import TrainingPolicy
from tests.storage.vectors import clustered, random_unit

POLICY = TrainingPolicy()
MINE = snapshots.Provenance("store-a", "ns", 300, 7, "fingerprint-a")


def test_snapshot_round_trip_keeps_ids_cursors_and_provenance(tmp_path: Path) -> None:
    vectors = random_unit(300, 24)
    index = VectorIndex(24)
    index.add(np.arange(1, 301), vectors)
    path = tmp_path / "ns.emxidx"
    snapshots.save(path, index, MINE)
    loaded = snapshots.load(path, POLICY, MINE)
    assert (len(loaded), loaded.last_seq, loaded.last_forget) == (300, 300, 7)
    header = snapshots.header(path)
    assert header is not None and header["store_id"] == "store-a" and header["namespace"] == "ns"
    _, ids = loaded.search(vectors[:10], 1)
    assert ids[:, 0].tolist() == list(range(1, 11))
    assert not list(tmp_path.glob(".*"))


@pytest.mark.parametrize(
    "other",
    [
        snapshots.Provenance("store-b", "ns", 300, 7, "fingerprint-a"),  # another store's
        snapshots.Provenance("store-a", "other", 300, 7, "fingerprint-a"),  # another namespace's
        snapshots.Provenance("store-a", "ns", 300, 7, "fingerprint-b"),  # a log restored and rewritten
        snapshots.Provenance("store-a", "ns", 301, 7, "fingerprint-a"),  # other cursors
    ],
)
def test_a_snapshot_that_is_not_the_expected_one_is_refused(
    tmp_path: Path, other: snapshots.Provenance
) -> None:
    index = VectorIndex(8)
    index.add(np.arange(1, 11), random_unit(10, 8))
    snapshots.save(tmp_path / "x.emxidx", index, MINE)
    with pytest.raises(snapshots.CorruptSnapshot):
        snapshots.load(tmp_path / "x.emxidx", POLICY, other)


def flip(blob: bytes, at: int) -> bytes:
    return blob[:at] + bytes([blob[at] ^ 0x01]) + blob[at + 1 :]


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[: len(b) // 2],  # truncated mid-payload
        lambda b: b[:10],  # truncated after the magic
        lambda b: b"",  # empty file
        lambda b: b"garbage" * 100,  # not a snapshot at all
        lambda b: flip(b, 200),  # one bit of the live index
        lambda b: flip(b, len(b) - 300),  # one bit of the header (a digit of a count, say)
        lambda b: b[:-100] + bytes(x ^ 0xFF for x in b[-100:]),  # the trailer
    ],
)
def test_damaged_snapshot_is_detected(tmp_path: Path, damage) -> None:  # type: ignore[no-untyped-def]
    index = VectorIndex(16)
    index.add(np.arange(1, 101), random_unit(100, 16))
    path = tmp_path / "x.emxidx"
    snapshots.save(path, index, MINE)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(snapshots.CorruptSnapshot):
        snapshots.load(path, POLICY, MINE)


def test_missing_snapshot_is_reported_as_corrupt(tmp_path: Path) -> None:
    with pytest.raises(snapshots.CorruptSnapshot):
        snapshots.load(tmp_path / "absent.emxidx", POLICY)
    assert snapshots.header(tmp_path / "absent.emxidx") is None


def test_file_names_differ_where_namespaces_differ_only_in_case() -> None:
    names = [snapshots.file_name(ns) for ns in ("Team", "team", "TEAM", "team.a", "team_a")]
    assert len({n.lower() for n in names}) == len(names)


def test_ivf_snapshot_round_trip(tmp_path: Path) -> None:
    vectors = clustered(2500, 16)
    index = VectorIndex(16, TrainingPolicy(train_at=2000))
    index.add(np.arange(2500), vectors)
    index.wait_idle(60)
    snapshots.save(tmp_path / "i.emxidx", index, MINE)
    loaded = snapshots.load(tmp_path / "i.emxidx", TrainingPolicy(train_at=2000), MINE)
    assert loaded.stats().trained
    assert loaded.stats().nprobe == index.stats().nprobe
    assert loaded.state.measured_recall_at_10 == index.state.measured_recall_at_10
    _, a = index.search(vectors[:50], 5)
    _, b = loaded.search(vectors[:50], 5)
    assert (a == b).all()
    with pytest.raises(snapshots.CorruptSnapshot, match="ivf_flat"):
        snapshots.load(tmp_path / "i.emxidx", TrainingPolicy(kind="ivf_sq8"), MINE)


def test_a_frozen_index_takes_adds_and_searches_and_holds_removals(tmp_path: Path) -> None:
    """While a snapshot streams the live index out, searches and adds go on; removals wait."""
    vectors = clustered(3000, 16, seed=4)
    index = VectorIndex(16, TrainingPolicy(train_at=2000))
    index.add(np.arange(2000), vectors[:2000])
    index.wait_idle(60)
    removed = threading.Event()
    with index.frozen() as view:
        index.add(np.arange(2000, 3000), vectors[2000:])  # more than the delta's usual limit
        _, found = index.search(vectors[2500:2600], 1)
        assert (found[:, 0] == np.arange(2500, 2600)).all()
        remover = threading.Thread(target=lambda: (index.remove(np.array([5])), removed.set()))
        remover.start()
        assert not removed.wait(0.3), "a removal must wait while the index is frozen"
        path = tmp_path / "f.emxidx"
        snapshots.write(path, view, 16, "ivf_flat", MINE)
    remover.join(10)
    assert removed.is_set() and len(index) == 2999 and index.stats().buffered == 0
    saved = snapshots.load(path, TrainingPolicy(train_at=2000), MINE)
    assert sorted(saved.ids().tolist()) == list(range(2000)), "the snapshot holds the index as frozen"
