from __future__ import annotations

import threading
from pathlib import Path

import faiss
import numpy as np
import pytest

from emx_mcp.embedding import normalize
from emx_mcp.storage import index as index_module
from emx_mcp.storage.index import (
    DELTA_MAX,
    CorruptSnapshot,
    VectorIndex,
    _exact_neighbours,
    _extract,
    recall_at,
    snapshot_header,
    write_atomic,
)
from emx_mcp.storage.policy import TrainingPolicy, nlist_for


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


def test_snapshot_round_trip_keeps_ids_and_last_seq(tmp_path: Path) -> None:
    vectors = random_unit(300, 24)
    index = VectorIndex(24)
    index.add(np.arange(1, 301), vectors)
    index.last_seq, index.last_forget = 300, 7
    path = tmp_path / "ns.emxidx"
    index.save(path)
    loaded = VectorIndex.load(path)
    assert (len(loaded), loaded.last_seq, loaded.last_forget) == (300, 300, 7)
    header = snapshot_header(path)
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
    path.write_bytes(damage(index.to_bytes()))
    with pytest.raises(CorruptSnapshot):
        VectorIndex.load(path)


def test_missing_snapshot_is_reported_as_corrupt(tmp_path: Path) -> None:
    with pytest.raises(CorruptSnapshot):
        VectorIndex.load(tmp_path / "absent.emxidx")
    assert snapshot_header(tmp_path / "absent.emxidx") is None


def test_write_atomic_replaces_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    write_atomic(path, b"old" * 1000)
    write_atomic(path, b"new")
    assert path.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


# -- IVF: training buffer, retraining, measured recall ------------------------------------------


def clustered(n: int, dim: int, seed: int = 0, centres: int = 40) -> np.ndarray:
    """Unit vectors around a few random centres: the shape real embeddings have, unlike uniform noise."""
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((centres, dim))
    return normalize(means[rng.integers(0, centres, n)] + 0.35 * rng.standard_normal((n, dim)))


def test_buffered_vectors_survive_training() -> None:
    """Acceptance: train at 1,000; 1,200 vectors in 12 batches of 100 are all their own top-1."""
    vectors = clustered(1200, 32)
    ids = np.arange(10_000, 11_200, dtype=np.int64)
    index = VectorIndex(32, TrainingPolicy(train_at=1000))
    for batch in range(12):
        rows = slice(batch * 100, (batch + 1) * 100)
        index.add(ids[rows], vectors[rows])
        # Searchable at once, before, during and after training.
        _, found = index.search(vectors[: (batch + 1) * 100], 1)
        assert (found[:, 0] == ids[: (batch + 1) * 100]).all()
        if batch < 9:
            assert index.health()["kind"] == "flat" and index.health()["buffered"] == (batch + 1) * 100
    assert index.wait_idle(60)
    health = index.health()
    assert health["kind"] == "ivf" and health["vectors"] == 1200
    # Batches added after the training finished wait in the exact delta until DELTA_MAX of them.
    assert health["buffered"] in (0, 100, 200)
    assert health["buffered"] + sum(index._live.invlists.list_size(i) for i in range(health["nlist"])) == 1200
    assert health["nlist"] == nlist_for(health["training"]["vectors_at_training"])
    assert health["training"]["source"] == "stored vectors"
    assert health["training"]["size"] <= 256 * health["nlist"]
    assert health["measured_recall_at_10"] >= TrainingPolicy().calibration_target(health["recall_probes"])
    _, found = index.search(vectors, 1)
    assert (found[:, 0] == ids).all()


def test_training_adds_every_buffered_vector_exactly_once() -> None:
    vectors = clustered(3000, 16, seed=3)
    index = VectorIndex(16, TrainingPolicy(train_at=2000))
    index.add(np.arange(3000), vectors)
    assert index.wait_idle(60)
    assert index.trained
    ids, _ = _extract(index._live, 16)
    assert sorted(ids.tolist()) == list(range(3000))


def test_nprobe_is_the_smallest_reaching_the_target() -> None:
    vectors = clustered(6000, 24, seed=5)
    policy = TrainingPolicy(train_at=5000, target_recall=0.9)
    index = VectorIndex(24, policy)
    index.add(np.arange(6000), vectors)
    index.wait_idle(60)
    health = index.health()
    target = policy.calibration_target(health["recall_probes"])
    assert health["measured_recall_at_10"] >= target > 0.9
    nprobe = health["nprobe"]
    assert nprobe > 1, "this data set should need more than one list probed"
    all_ids, all_vecs = _extract(index._live, 24)
    truth = _exact_neighbours(all_vecs, all_ids, index._probes, 11)
    _, found = index._live.search(index._probes, 11, params=faiss.SearchParametersIVF(nprobe=nprobe - 1))
    assert recall_at(truth, found, index._probe_ids) < target


def test_recall_measure_leaves_out_the_probe_itself() -> None:
    truth = np.array([[7, 1, 2, 3]])
    assert recall_at(truth, np.array([[7, 1, 2, 9]]), np.array([7]), k=3) == pytest.approx(2 / 3)
    assert recall_at(truth, np.array([[1, 2, 3, 7]]), np.array([7]), k=3) == 1.0


def test_retrains_when_the_store_doubles() -> None:
    vectors = clustered(5000, 16, seed=7)
    index = VectorIndex(16, TrainingPolicy(train_at=1000))
    index.add(np.arange(1200), vectors[:1200])
    index.wait_idle(60)
    first = index.health()
    assert first["training"]["trainings"] == 1
    for start in range(1200, 5000, 200):
        index.add(np.arange(start, start + 200), vectors[start : start + 200])
        index.wait_idle(60)
    after = index.health()
    assert after["training"]["trainings"] >= 2
    assert after["nlist"] > first["nlist"]
    assert after["vectors"] == 5000
    _, found = index.search(vectors, 1)
    assert (found[:, 0] == np.arange(5000)).mean() > 0.99


def test_reads_and_writes_continue_during_retraining() -> None:
    """Acceptance: adds, removes and searches from several threads while a retrain runs."""
    dim = 32
    vectors = clustered(24_000, dim, seed=11)
    index = VectorIndex(dim, TrainingPolicy(train_at=4000))
    index.add(np.arange(4000), vectors[:4000])
    index.wait_idle(60)
    removed = set(range(0, 400, 4))
    errors: list[BaseException] = []
    saw_retraining = threading.Event()

    def writer(worker: int) -> None:
        try:
            for start in range(4000 + worker * 100, 24_000, 400):
                index.add(np.arange(start, start + 100), vectors[start : start + 100])
                saw_retraining.set() if index.retraining else None
        except BaseException as exc:
            errors.append(exc)

    def reader() -> None:
        try:
            for i in range(300):
                _, found = index.search(vectors[i % 4000 : i % 4000 + 1], 5)
                assert found[0, 0] >= 0
        except BaseException as exc:
            errors.append(exc)

    def remover() -> None:
        try:
            for seq in sorted(removed):
                assert index.remove(np.array([seq])) == 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    threads += [threading.Thread(target=reader) for _ in range(2)] + [threading.Thread(target=remover)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert index.wait_idle(120)
    assert not errors, errors
    assert saw_retraining.is_set(), "no retraining overlapped the writes"
    ids, _ = _extract(index._live, dim)
    expected = set(range(24_000)) - removed
    assert len(ids) == len(set(ids.tolist())), "an id is present twice"
    assert set(ids.tolist()) == expected
    assert index.health()["training"]["trainings"] >= 2


def test_swap_is_refused_when_counts_differ(monkeypatch: pytest.MonkeyPatch) -> None:
    vectors = clustered(1500, 16)
    index = VectorIndex(16, TrainingPolicy(train_at=1000))
    index.add(np.arange(900), vectors[:900])
    original = index_module._extract

    def lossy(live, dim):  # type: ignore[no-untyped-def]
        ids, vecs = original(live, dim)
        return ids[:-1], vecs[:-1]  # as if one buffered vector were dropped

    monkeypatch.setattr(index_module, "_extract", lossy)
    index.add(np.arange(900, 1500), vectors[900:])
    index.wait_idle(60)
    health = index.health()
    assert health["kind"] == "flat" and health["vectors"] == 1500
    assert "refused swap" in health["last_training_error"]
    _, found = index.search(vectors, 1)
    assert (found[:, 0] == np.arange(1500)).all()


def test_sq8_is_smaller_and_reports_its_recall() -> None:
    vectors = clustered(4000, 64, seed=2)
    flat = VectorIndex(64, TrainingPolicy(train_at=3000))
    sq8 = VectorIndex(64, TrainingPolicy(train_at=3000, kind="ivf_sq8"))
    for index in (flat, sq8):
        index.add(np.arange(4000), vectors)
        index.wait_idle(60)
    assert sq8.health()["index_type"] == "ivf_sq8"
    assert sq8.memory_bytes() < 0.5 * flat.memory_bytes()
    assert 0.0 < sq8.health()["measured_recall_at_10"] <= 1.0


def test_ivf_snapshot_round_trip(tmp_path: Path) -> None:
    vectors = clustered(2500, 16)
    index = VectorIndex(16, TrainingPolicy(train_at=2000))
    index.add(np.arange(2500), vectors)
    index.wait_idle(60)
    index.save(tmp_path / "i.emxidx")
    loaded = VectorIndex.load(tmp_path / "i.emxidx", TrainingPolicy(train_at=2000))
    assert loaded.health()["kind"] == "ivf"
    assert loaded.health()["nprobe"] == index.health()["nprobe"]
    assert loaded.health()["measured_recall_at_10"] == index.health()["measured_recall_at_10"]
    _, a = index.search(vectors[:50], 5)
    _, b = loaded.search(vectors[:50], 5)
    assert (a == b).all()
    with pytest.raises(CorruptSnapshot, match="ivf_flat"):
        VectorIndex.load(tmp_path / "i.emxidx", TrainingPolicy(kind="ivf_sq8"))


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
    assert index.trained and index.health()["buffered"] == 0
    for i in range(2000, 2000 + DELTA_MAX - 1):
        index.add(np.array([i]), vectors[i : i + 1])
    assert index.health()["buffered"] == DELTA_MAX - 1
    _, found = index.search(vectors[2000 : 2000 + DELTA_MAX - 1], 1)
    assert (found[:, 0] == np.arange(2000, 2000 + DELTA_MAX - 1)).all()
    index.add(np.array([2000 + DELTA_MAX - 1]), vectors[2000 + DELTA_MAX - 1 : 2000 + DELTA_MAX])
    assert index.health()["buffered"] == 0 and len(index) == 2000 + DELTA_MAX
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
    index.save(tmp_path / "d.emxidx")
    loaded = VectorIndex.load(tmp_path / "d.emxidx", TrainingPolicy(train_at=2000))
    assert len(loaded) == 2098 and loaded.health()["buffered"] == 99
    # Growing past double retrains; vectors that were in the delta must all come through.
    loaded.add(np.arange(2100, 4500), vectors[2100:4500])
    loaded.wait_idle(60)
    ids, _ = _extract(loaded._live, 16)
    delta_ids, _ = _extract(loaded._delta, 16)
    everything = sorted(ids.tolist() + delta_ids.tolist())
    assert everything == sorted(set(range(4500)) - {2050, 5})
    assert loaded.health()["training"]["trainings"] == 2


def test_write_atomic_syncs_the_file_and_its_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Power loss: a snapshot is either the old file or the new one, whole, and the rename is durable."""
    import os

    synced: list[int] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    write_atomic(tmp_path / "snap.emxidx", b"x" * 4096)
    assert len(synced) == 2  # the data before the rename, the folder after it
    assert (tmp_path / "snap.emxidx").read_bytes() == b"x" * 4096
