"""VectorIndex: exact search, filters, the delta after training, memory per vector."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from emx_mcp.storage import snapshots
from emx_mcp.storage.index import DELTA_MAX, VectorIndex
from emx_mcp.storage.policy import TrainingPolicy
from tests.storage.vectors import clustered, random_unit


def test_every_vector_is_its_own_nearest_neighbour() -> None:
    vectors = random_unit(500, 32)
    ids = np.arange(1000, 1500, dtype=np.int64)
    index = VectorIndex(32)
    index.add(ids, vectors)
    scores, found = index.search(vectors, 3)
    assert len(index) == 500
    assert (found[:, 0] == ids).all()
    assert np.allclose(scores[:, 0], 1.0, atol=1e-5)


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
    with pytest.raises(ValueError, match="finite"):
        index.search(np.full((40, 8), np.nan, dtype=np.float32), 1)


def test_allowed_filter_works_on_ivf() -> None:
    vectors = clustered(2500, 16)
    index = VectorIndex(16, TrainingPolicy(train_at=2000))
    index.add(np.arange(2500), vectors)
    index.wait_idle(60)
    allowed = np.array([3, 1000, 2400])
    _, ids = index.search(vectors[[1000]], 10, allowed=allowed)
    got = set(ids[0][ids[0] >= 0].tolist())
    assert 1000 in got and got <= {3, 1000, 2400}


def test_memory_per_vector_is_close_to_the_raw_vectors() -> None:
    dim = 64
    vectors = clustered(30_000, dim)
    index = VectorIndex(dim, TrainingPolicy(train_at=20_000))
    index.add(np.arange(30_000), vectors)
    index.wait_idle(120)
    assert index.trained
    assert index.memory_bytes() / 30_000 <= 1.3 * dim * 4


def test_adds_after_training_wait_in_an_exact_delta_then_fold() -> None:
    vectors = clustered(3000, 16, seed=9)
    index = VectorIndex(16, TrainingPolicy(train_at=2000))
    index.add(np.arange(2000), vectors[:2000])
    index.wait_idle(60)
    assert index.trained and index.stats().buffered == 0
    for i in range(2000, 2000 + DELTA_MAX - 1):
        index.add(np.array([i]), vectors[i : i + 1])
    assert index.stats().buffered == DELTA_MAX - 1
    _, found = index.search(vectors[2000 : 2000 + DELTA_MAX - 1], 1)
    assert (found[:, 0] == np.arange(2000, 2000 + DELTA_MAX - 1)).all()
    index.add(np.array([2000 + DELTA_MAX - 1]), vectors[2000 + DELTA_MAX - 1 : 2000 + DELTA_MAX])
    assert index.stats().buffered == 0 and len(index) == 2000 + DELTA_MAX
    _, found = index.search(vectors[: 2000 + DELTA_MAX], 1)
    assert (found[:, 0] == np.arange(2000 + DELTA_MAX)).mean() > 0.99


def test_delta_survives_snapshot_remove_and_retraining(tmp_path: Path) -> None:
    vectors = clustered(4500, 16, seed=10)
    index = VectorIndex(16, TrainingPolicy(train_at=2000))
    index.add(np.arange(2000), vectors[:2000])
    index.wait_idle(60)
    for i in range(2000, 2100):
        index.add(np.array([i]), vectors[i : i + 1])
    assert index.remove(np.array([2050, 5])) == 2
    provenance = snapshots.Provenance("store", "ns", 2100, 1, "fingerprint")
    snapshots.save(tmp_path / "d.emxidx", index, provenance)
    loaded = snapshots.load(tmp_path / "d.emxidx", TrainingPolicy(train_at=2000), provenance)
    assert len(loaded) == 2098 and loaded.stats().buffered == 99
    # Growing past double retrains; vectors that were in the delta must all come through.
    loaded.add(np.arange(2100, 4500), vectors[2100:4500])
    loaded.wait_idle(60)
    everything = sorted(loaded.ids().tolist())
    assert everything == sorted(set(range(4500)) - {2050, 5})
    assert loaded.state.trainings == 2
