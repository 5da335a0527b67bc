"""The list-major batch search returns FAISS's own answers and follows every write to the lists."""

from __future__ import annotations

import threading

import faiss
import numpy as np
import pytest

from emx_mcp.embedding import normalize
from emx_mcp.storage import ivf_batch
from emx_mcp.storage.index import DELTA_MAX, SMALL_BATCH, VectorIndex
from emx_mcp.storage.policy import TrainingPolicy

DIM = 32


@pytest.fixture(scope="module", autouse=True)
def kernels_loaded() -> None:
    assert ivf_batch.wait_ready(timeout=600), ivf_batch.unavailable_reason()


def clustered(n: int, seed: int) -> np.ndarray:
    """Unit vectors around 64 centres, so the inverted lists differ in size as real ones do."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((64, DIM))
    return normalize(centres[rng.integers(0, 64, n)] + 0.6 * rng.standard_normal((n, DIM)))


def trained_index(n: int = 12_000, kind: str = "ivf_flat") -> tuple[VectorIndex, np.ndarray]:
    vectors = clustered(n, seed=1)
    index = VectorIndex(DIM, TrainingPolicy(train_at=4_000, kind=kind))  # type: ignore[arg-type]
    for lo in range(0, n, 4_000):
        index.add(np.arange(lo, lo + 4_000), vectors[lo : lo + 4_000])
    assert index.wait_idle(timeout=120) and index.trained
    return index, vectors


def faiss_one_by_one(index: VectorIndex, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The same search one query at a time: single queries go to FAISS, on the same lists and nprobe."""
    before = index.stats().batch_searches
    rows = [index.search(q.reshape(1, -1), k) for q in queries]
    assert index.stats().batch_searches == before, "single queries must stay on FAISS"
    return np.vstack([r[0] for r in rows]), np.vstack([r[1] for r in rows])


def by_kernels(index: VectorIndex, queries: np.ndarray, k: int) -> bool:
    """Search and say whether the batch went through ivf_batch's kernels."""
    before = index.stats().batch_searches
    index.search(queries, k)
    return index.stats().batch_searches > before


def assert_same_answers(index: VectorIndex, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    before = index.stats().batch_searches
    scores, ids = index.search(queries, k)
    assert index.stats().batch_searches == before + 1, "the batch did not go through ivf_batch"
    want_scores, want_ids = faiss_one_by_one(index, queries, k)
    found = ids >= 0
    assert np.array_equal(found, want_ids >= 0)
    assert np.allclose(scores[found], want_scores[found], atol=1e-5)
    # The same ids, except that two vectors tied at the k-th score to rounding may trade places.
    for row in range(len(ids)):
        last = want_scores[row][found[row]].min(initial=np.inf)
        clear = want_ids[row][found[row] & (want_scores[row] > last + 1e-5)]
        assert np.isin(clear, ids[row]).all()
        tied = (found[row] & (want_scores[row] <= last + 1e-5)).sum()
        assert len(np.setdiff1d(ids[row], want_ids[row])) <= tied
    assert (scores[:, :-1] >= scores[:, 1:]).all()  # best first
    assert np.isneginf(scores[~found]).all()
    return scores, ids


@pytest.mark.parametrize("k", [1, 10, 64])
def test_batch_gives_faiss_answers(k: int) -> None:
    index, vectors = trained_index()
    queries = np.vstack([vectors[::60], clustered(100, seed=9)])
    _, ids = assert_same_answers(index, queries, k)
    assert (ids[: len(vectors[::60]), 0] == np.arange(0, 12_000, 60)).all()


def test_small_batches_and_sq8_stay_on_faiss() -> None:
    index, vectors = trained_index()
    assert index.stats().batch_kernels == "ready"
    assert by_kernels(index, vectors[:SMALL_BATCH], 5)
    assert not by_kernels(index, vectors[: SMALL_BATCH - 1], 5)
    index.policy = TrainingPolicy(train_at=4_000, batch_kernels=False)  # EMX_INDEX_BATCH_KERNELS=false
    assert not by_kernels(index, vectors[:200], 5) and index.stats().batch_kernels == "off"
    sq8, sq8_vectors = trained_index(kind="ivf_sq8")
    assert not by_kernels(sq8, sq8_vectors[:200], 5) and sq8.stats().batch_kernels == "off"
    _, ids = sq8.search(sq8_vectors[:200], 1)
    assert (ids[:, 0] == np.arange(200)).mean() > 0.9


def test_batch_follows_adds_and_removes() -> None:
    index, vectors = trained_index()
    queries = vectors[:300]
    assert_same_answers(index, queries, 10)
    # A batch of DELTA_MAX or more goes straight into the lists, which may move in memory.
    fresh = clustered(DELTA_MAX + 100, seed=5)
    fresh_ids = np.arange(50_000, 50_000 + len(fresh))
    index.add(fresh_ids, fresh)
    _, ids = assert_same_answers(index, fresh, 1)
    assert (ids[:, 0] == fresh_ids).all()
    # Empty one whole list and remove a scattered tenth of the rest.
    emptied = index.list_ids(0)
    removed = np.concatenate([emptied, np.arange(1, 12_000, 10)])
    assert index.remove(removed) == len(np.unique(removed))
    assert len(index.list_ids(0)) == 0
    _, ids = assert_same_answers(index, np.vstack([queries, fresh]), 10)
    assert not np.isin(ids, removed).any()


def test_k_beyond_the_probed_vectors_pads_with_minus_one() -> None:
    index, vectors = trained_index(n=4_000)
    _, ids = assert_same_answers(index, vectors[:50], 3_000)
    assert (ids == -1).any()


def test_kernels_that_fail_to_load_leave_faiss_in_charge() -> None:
    with ivf_batch.use_loader(ivf_batch.KernelLoader(module="emx_mcp.storage.no_such_kernels")):
        index, vectors = trained_index()
        assert index.stats().batch_kernels == "not loaded"
        _, ids = index.search(vectors[:100], 1)  # starts the loader; FAISS answers
        assert not ivf_batch.wait_ready(timeout=60)
        assert index.stats().batch_kernels.startswith("unavailable: ModuleNotFoundError")
        assert not by_kernels(index, vectors[:100], 1)
        _, again = index.search(vectors[:100], 1)
        assert (ids[:, 0] == np.arange(100)).all() and (again == ids).all()
        with pytest.raises(RuntimeError, match="not loaded"):
            ivf_batch.search(ivf_batch.list_table(small_faiss_ivf()), vectors[:40], 4, 1)
    assert ivf_batch.ready(), "the process's own loader is back after the block"


def small_faiss_ivf() -> faiss.IndexIVFFlat:
    """A trained FAISS IVF-Flat index of its own, to read a list table from."""
    vectors = clustered(2_000, seed=4)
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(DIM), DIM, 8, faiss.METRIC_INNER_PRODUCT)
    ivf.train(vectors)
    ivf.add_with_ids(vectors, np.arange(2_000))
    return ivf


def test_query_chunks_join_up(monkeypatch: pytest.MonkeyPatch) -> None:
    index, vectors = trained_index()
    queries = vectors[5::40]
    whole = index.search(queries, 10)
    monkeypatch.setattr(ivf_batch, "QUERY_CHUNK", 7)
    chunked = index.search(queries, 10)
    assert np.array_equal(whole[1], chunked[1]) and np.allclose(whole[0], chunked[0])
    # A products budget below one query's worth still searches one query per call.
    monkeypatch.setattr(ivf_batch, "QUERY_CHUNK", 1024)
    monkeypatch.setattr(ivf_batch, "PRODUCTS_MAX_BYTES", 16)
    one_by_one = index.search(queries, 10)
    assert np.array_equal(whole[1], one_by_one[1]) and np.allclose(whole[0], one_by_one[0])


def test_batches_during_writes_see_only_stored_vectors() -> None:
    index, vectors = trained_index()
    stop = threading.Event()
    errors: list[BaseException] = []
    seen: list[np.ndarray] = []

    def writer() -> None:
        try:
            for round_ in range(12):
                ids = np.arange(100_000 + round_ * 600, 100_000 + (round_ + 1) * 600)
                index.add(ids, clustered(600, seed=100 + round_))
                index.remove(np.arange(round_, 12_000, 97))
        except BaseException as exc:
            errors.append(exc)
        finally:
            stop.set()

    def reader() -> None:
        try:
            while not stop.is_set():
                seen.append(index.search(vectors[:256], 10)[1])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=f) for f in (writer, reader, reader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    assert seen
    everything = np.concatenate([np.arange(12_000), np.arange(100_000, 100_000 + 12 * 600)])
    for ids in seen:
        assert np.isin(ids[ids >= 0], everything).all()
    ids = index.ids()
    assert len(ids) == len(np.unique(ids)) == len(index)
    assert_same_answers(index, vectors[:300], 10)
