"""Training: a lossless buffer, measured recall and nprobe, retraining, refused swaps (DESIGN 2-5)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from emx_mcp.storage import training
from emx_mcp.storage.index import VectorIndex
from emx_mcp.storage.policy import TrainingPolicy, nlist_for
from emx_mcp.storage.training import exact_neighbours, recall_at
from tests.storage.vectors import clustered


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
            assert not index.stats().trained and index.stats().buffered == (batch + 1) * 100
    assert index.wait_idle(60)
    stats = index.stats()
    assert stats.trained and stats.vectors == 1200
    # Batches added after the training finished wait in the exact delta until DELTA_MAX of them.
    assert stats.buffered in (0, 100, 200)
    assert stats.list_sizes is not None and stats.buffered + int(stats.list_sizes.sum()) == 1200
    assert stats.nlist == nlist_for(stats.state.n_at_training)
    assert stats.state.training_size <= 256 * stats.nlist
    recall = stats.state.measured_recall_at_10
    assert recall is not None and recall >= TrainingPolicy().calibration_target(stats.state.recall_probes)
    _, found = index.search(vectors, 1)
    assert (found[:, 0] == ids).all()


def test_training_adds_every_buffered_vector_exactly_once() -> None:
    vectors = clustered(3000, 16, seed=3)
    index = VectorIndex(16, TrainingPolicy(train_at=2000))
    index.add(np.arange(3000), vectors)
    assert index.wait_idle(60)
    assert index.trained
    ids = index.ids()
    assert sorted(ids.tolist()) == list(range(3000))


def test_nprobe_is_the_smallest_reaching_the_target() -> None:
    vectors = clustered(6000, 24, seed=5)
    policy = TrainingPolicy(train_at=5000, target_recall=0.9)
    index = VectorIndex(24, policy)
    index.add(np.arange(6000), vectors)
    index.wait_idle(60)
    stats = index.stats()
    target = policy.calibration_target(stats.state.recall_probes)
    recall = stats.state.measured_recall_at_10
    assert recall is not None and recall >= target > 0.9
    nprobe = stats.nprobe
    assert nprobe > 1, "this data set should need more than one list probed"
    probe_ids, probes = index.probes()
    assert len(probe_ids) == stats.state.recall_probes
    truth = exact_neighbours(vectors, np.arange(6000), probes, 11)
    _, found = index.search(probes, 11, nprobe=nprobe)
    assert recall_at(truth, found, probe_ids) == pytest.approx(recall, abs=2e-3)
    _, found = index.search(probes, 11, nprobe=nprobe - 1)
    assert recall_at(truth, found, probe_ids) < target


def test_recall_measure_leaves_out_the_probe_itself() -> None:
    truth = np.array([[7, 1, 2, 3]])
    assert recall_at(truth, np.array([[7, 1, 2, 9]]), np.array([7]), k=3) == pytest.approx(2 / 3)
    assert recall_at(truth, np.array([[1, 2, 3, 7]]), np.array([7]), k=3) == 1.0


def test_retrains_when_the_store_doubles() -> None:
    vectors = clustered(5000, 16, seed=7)
    index = VectorIndex(16, TrainingPolicy(train_at=1000))
    index.add(np.arange(1200), vectors[:1200])
    index.wait_idle(60)
    first = index.stats()
    assert first.state.trainings == 1
    for start in range(1200, 5000, 200):
        index.add(np.arange(start, start + 200), vectors[start : start + 200])
        index.wait_idle(60)
    after = index.stats()
    assert after.state.trainings >= 2
    assert after.nlist > first.nlist
    assert after.vectors == 5000
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

    found_itself: list[bool] = []

    def reader() -> None:
        try:
            for i in range(300):
                own = (4 * i + 2) % 4000  # never removed
                _, found = index.search(vectors[own : own + 1], 5)
                found_itself.append(own in found[0])
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
    assert np.mean(found_itself) >= 0.95, "stored vectors must stay findable through every swap"
    ids = index.ids()
    expected = set(range(24_000)) - removed
    assert len(ids) == len(set(ids.tolist())), "an id is present twice"
    assert set(ids.tolist()) == expected
    assert index.state.trainings >= 2


def test_swap_is_refused_when_counts_differ(monkeypatch: pytest.MonkeyPatch) -> None:
    vectors = clustered(1500, 16)
    index = VectorIndex(16, TrainingPolicy(train_at=1000))
    index.add(np.arange(900), vectors[:900])
    original = training.stored_vectors

    def lossy(live, delta, dim):  # type: ignore[no-untyped-def]
        ids, vecs = original(live, delta, dim)
        return ids[:-1], vecs[:-1]  # as if one buffered vector were dropped

    monkeypatch.setattr(training, "stored_vectors", lossy)
    index.add(np.arange(900, 1500), vectors[900:])
    index.wait_idle(60)
    stats = index.stats()
    assert not stats.trained and stats.vectors == 1500
    assert "refused swap" in (stats.state.last_training_error or "")
    _, found = index.search(vectors, 1)
    assert (found[:, 0] == np.arange(1500)).all()


def test_sq8_is_smaller_and_reports_its_recall() -> None:
    vectors = clustered(4000, 64, seed=2)
    flat = VectorIndex(64, TrainingPolicy(train_at=3000))
    sq8 = VectorIndex(64, TrainingPolicy(train_at=3000, kind="ivf_sq8"))
    for index in (flat, sq8):
        index.add(np.arange(4000), vectors)
        index.wait_idle(60)
    assert sq8.stats().index_type == "ivf_sq8"
    assert sq8.memory_bytes() < 0.5 * flat.memory_bytes()
    assert 0.0 < sq8.state.measured_recall_at_10 <= 1.0


def test_sq8_measures_recall_against_the_true_vectors_after_a_retrain() -> None:
    """A lossy index retrains from, and measures recall against, the vectors as stored in the log."""
    dim = 32
    vectors = clustered(8000, dim, seed=21)
    index = VectorIndex(dim, TrainingPolicy(train_at=3000, kind="ivf_sq8"))
    truth_of = {i: vectors[i] for i in range(8000)}
    index.vector_source = lambda ids: (ids, np.stack([truth_of[int(i)] for i in ids]))
    index.add(np.arange(3000), vectors[:3000])
    assert index.wait_idle(60) and index.state.trainings == 1
    index.add(np.arange(3000, 8000), vectors[3000:])  # more than doubles: a retrain, from codes
    assert index.wait_idle(60) and index.state.trainings == 2
    probe_ids, probes = index.probes()
    assert np.allclose(probes, vectors[probe_ids], atol=1e-6), "probes are the true vectors, not decoded ones"
    truth = exact_neighbours(vectors, np.arange(8000), probes, 11)
    _, found = index.search(probes, 11)
    assert recall_at(truth, found, probe_ids) == pytest.approx(index.state.measured_recall_at_10, abs=1e-4)


def test_a_refused_swap_backs_off_instead_of_retraining_on_every_write(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    vectors = clustered(3000, 16)
    index = VectorIndex(16, TrainingPolicy(train_at=1000))
    original = training.stored_vectors
    copies = []

    def lossy(live, delta, dim):  # type: ignore[no-untyped-def]
        copies.append(1)
        ids, vecs = original(live, delta, dim)
        return ids[:-1], vecs[:-1]  # every training sees one vector too few: its swap is refused

    monkeypatch.setattr(training, "stored_vectors", lossy)
    index.add(np.arange(1100), vectors[:1100])
    assert index.wait_idle(60)
    for i in range(1100, 1500):  # 400 writes while the training keeps failing
        index.add(np.array([i]), vectors[i : i + 1])
        index.wait_idle(60)
    stats = index.stats()
    assert "refused swap" in (stats.state.last_training_error or "")
    assert len(copies) == 1, f"{len(copies)} trainings for 400 writes after a refused swap"
    assert stats.training_retry_in is not None and stats.training_retry_in > 0
    assert index.trainer.failures == 1


def test_a_training_that_finds_too_few_vectors_does_not_spin(monkeypatch: pytest.MonkeyPatch) -> None:
    """Due by the count of the index, but the copy taken is below train_at: one attempt, not a loop."""
    vectors = clustered(1200, 16)
    index = VectorIndex(16, TrainingPolicy(train_at=1000))
    index.add(np.arange(900), vectors[:900])
    original = training.stored_vectors
    copies = []

    def shrunk(live, delta, dim):  # type: ignore[no-untyped-def]
        copies.append(1)
        ids, vecs = original(live, delta, dim)
        return ids[:500], vecs[:500]

    monkeypatch.setattr(training, "stored_vectors", shrunk)
    index.add(np.arange(900, 1200), vectors[900:])
    assert index.wait_idle(10), "the training thread must stop"
    assert len(copies) == 1 and not index.trained


def test_one_training_builds_at_a_time_and_the_others_wait_their_turn(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    release = threading.Event()
    started = threading.Event()
    real_build = training.new_ivf

    def slow_build(kind, dim, nlist):  # type: ignore[no-untyped-def]
        started.set()
        assert release.wait(60)
        return real_build(kind, dim, nlist)

    monkeypatch.setattr(training, "new_ivf", slow_build)
    first, second = (VectorIndex(16, TrainingPolicy(train_at=1000)) for _ in range(2))
    first.add(np.arange(1000), clustered(1000, 16, seed=1))
    assert started.wait(30)
    second.add(np.arange(1000), clustered(1000, 16, seed=2))
    deadline = time.monotonic() + 10
    while not second.stats().training_queued and time.monotonic() < deadline:
        time.sleep(0.01)
    assert second.stats().training_queued and training.queued_trainings() == 1
    assert not first.stats().training_queued
    release.set()
    assert first.wait_idle(60) and second.wait_idle(60)
    assert first.trained and second.trained and training.queued_trainings() == 0
