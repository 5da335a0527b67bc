from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from emx_mcp.embedding import normalize
from emx_mcp.storage.index import CorruptSnapshot, VectorIndex, snapshot_last_seq, write_atomic


def random_unit(n: int, dim: int, seed: int = 0) -> np.ndarray:
    return normalize(np.random.default_rng(seed).standard_normal((n, dim)))


def test_every_vector_is_its_own_nearest_neighbour() -> None:
    vectors = random_unit(500, 32)
    ids = np.arange(1000, 1500, dtype=np.int64)
    index = VectorIndex(32)
    index.add(ids, vectors)
    scores, found = index.search(vectors, 3)
    assert len(index) == 500
    assert (found[:, 0] == ids).all()
    assert np.allclose(scores[:, 0], 1.0, atol=1e-5)
    assert index.last_seq == 1499


def test_search_pads_with_minus_one_when_fewer_than_k() -> None:
    index = VectorIndex(8)
    index.add(np.array([7, 9]), random_unit(2, 8))
    _, ids = index.search(random_unit(1, 8, seed=3), 5)
    assert sorted(ids[0, :2].tolist()) == [7, 9]
    assert (ids[0, 2:] == -1).all()


def test_allowed_ids_filter_is_exact() -> None:
    vectors = random_unit(200, 16)
    index = VectorIndex(16)
    index.add(np.arange(200), vectors)
    allowed = np.array([5, 50, 150])
    _, ids = index.search(vectors[[0, 50]], 10, allowed=allowed)
    assert set(ids[0][ids[0] >= 0].tolist()) == {5, 50, 150}
    assert ids[1, 0] == 50
    _, none = index.search(vectors[:1], 4, allowed=np.array([], dtype=np.int64))
    assert (none == -1).all()


def test_rejects_wrong_shapes() -> None:
    index = VectorIndex(8)
    with pytest.raises(ValueError, match="expected ids"):
        index.add(np.arange(3), random_unit(3, 9))
    with pytest.raises(ValueError, match="expected queries"):
        index.search(random_unit(1, 4), 1)


def test_snapshot_round_trip_keeps_ids_and_last_seq(tmp_path: Path) -> None:
    vectors = random_unit(300, 24)
    index = VectorIndex(24)
    index.add(np.arange(1, 301), vectors)
    path = tmp_path / "ns.emxidx"
    index.save(path)
    loaded = VectorIndex.load(path)
    assert len(loaded) == 300 and loaded.last_seq == 300 and snapshot_last_seq(path) == 300
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
    path.write_bytes(damage(index.to_bytes()))
    with pytest.raises(CorruptSnapshot):
        VectorIndex.load(path)


def test_missing_snapshot_is_reported_as_corrupt(tmp_path: Path) -> None:
    with pytest.raises(CorruptSnapshot):
        VectorIndex.load(tmp_path / "absent.emxidx")
    assert snapshot_last_seq(tmp_path / "absent.emxidx") is None


def test_write_atomic_replaces_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    write_atomic(path, b"old" * 1000)
    write_atomic(path, b"new")
    assert path.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]
