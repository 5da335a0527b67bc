from __future__ import annotations

import numpy as np
import pytest

from emx_mcp.embedding import normalize
from emx_mcp.segmentation import (
    SegmentationConfig,
    _prefix,
    best_split,
    episode_vectors,
    prune,
    refine,
    segment,
    split_gain,
    surprise,
    surprise_boundaries,
)


def topics(sizes: list[int], dim: int = 32, noise: float = 0.3, seed: int = 0) -> np.ndarray:
    """Sentence vectors in runs: each run scattered around its own random topic direction."""
    rng = np.random.default_rng(seed)
    rows = []
    for size in sizes:
        centre = rng.standard_normal(dim)
        rows.append(centre + noise * np.linalg.norm(centre) * rng.standard_normal((size, dim)) / np.sqrt(dim))
    return normalize(np.vstack(rows))


def test_surprise_is_zero_first_and_high_at_a_topic_change() -> None:
    vectors = topics([6, 6])
    s = surprise(vectors, context=3)
    assert s[0] == 0.0
    assert int(np.argmax(s)) == 6
    brute = [1 - float(normalize(vectors[max(0, i - 3) : i].mean(0))[0] @ vectors[i]) for i in range(1, 12)]
    assert np.allclose(s[1:], brute, atol=1e-5)


def test_threshold_uses_only_the_trailing_window() -> None:
    scores = np.array([0, 0.1, 0.12, 0.1, 0.9, 0.1, 0.11, 0.1, 0.1, 0.8, 0.1])
    assert surprise_boundaries(scores, gamma=1.0, window=4).tolist() == [4, 9]
    # The 0.9 at index 4 has left the 4-wide window by index 9, so 0.8 stands out; with a wide
    # window it raises the bar for everything after it.
    assert surprise_boundaries(scores, gamma=2.5, window=10).tolist() == [4]


def test_best_split_finds_the_planted_boundary_with_both_metrics() -> None:
    vectors = topics([5, 9])
    sims = np.clip(vectors @ vectors.T, 0, None)
    np.fill_diagonal(sims, 0)
    prefix = _prefix(sims.astype(np.float64))
    for metric in ("modularity", "conductance"):
        assert best_split(prefix, 0, 14, 1, 13, metric) == 5


def test_refinement_moves_a_misplaced_boundary() -> None:
    vectors = topics([7, 7, 7])
    assert refine(vectors, [5, 14], min_size=2, max_size=24, metric="modularity") == [7, 14]
    assert refine(vectors, [5, 14], min_size=2, max_size=24, metric="conductance") == [7, 14]
    assert refine(vectors, [5, 16], min_size=2, max_size=24, metric="modularity") == [7, 14]
    assert refine(vectors, [5, 16], min_size=2, max_size=24, metric="none") == [5, 16]
    # The maximum size binds too: with max 6 the first boundary cannot move past 6.
    assert refine(vectors, [5, 11], min_size=2, max_size=6, metric="modularity")[0] <= 6


def test_segment_recovers_planted_topics() -> None:
    sizes = [4, 9, 3, 11, 6, 7]
    vectors = topics(sizes, seed=3)
    segments = segment(vectors, SegmentationConfig())
    truth = np.cumsum(sizes)[:-1].tolist()
    assert [s.first for s in segments[1:]] == truth
    assert segments[0].first == 0 and segments[-1].stop == sum(sizes)
    assert all(s.surprise > 0 for s in segments[1:])


def test_sizes_are_enforced() -> None:
    vectors = topics([60], noise=2.0)  # one long run of noise
    config = SegmentationConfig(min_sentences=3, max_sentences=10)
    segments = segment(vectors, config)
    assert all(3 <= s.stop - s.first <= 10 for s in segments)
    assert [s.first for s in segments] == sorted({s.first for s in segments})
    assert sum(s.stop - s.first for s in segments) == 60


@pytest.mark.parametrize("n", [0, 1, 2, 3])
def test_tiny_inputs(n: int) -> None:
    segments = segment(topics([n]) if n else np.zeros((0, 32), np.float32), SegmentationConfig())
    assert sum(s.stop - s.first for s in segments) == n
    assert len(segments) == (1 if n else 0)


def test_episode_vector_is_the_normalised_mean() -> None:
    vectors = topics([3, 4])
    segments = segment(vectors, SegmentationConfig(min_sentences=1))
    got = episode_vectors(vectors, segments)
    for row, s in zip(got, segments, strict=True):
        assert np.allclose(row, normalize(vectors[s.first : s.stop].mean(0))[0], atol=1e-5)


def test_split_gains_match_a_direct_modularity_computation() -> None:
    vectors = topics([5, 6, 4], seed=4)
    gains = [split_gain(vectors, 0, 5, 11), split_gain(vectors, 5, 11, 15)]
    sims = np.clip(vectors.astype(np.float64) @ vectors.T, 0, None)
    np.fill_diagonal(sims, 0)

    def direct(a: int, b: int, c: int) -> float:
        block = sims[a:c, a:c]
        labels = np.array([0] * (b - a) + [1] * (c - b))
        degree = block.sum(1)
        m2 = block.sum()
        same = labels[:, None] == labels[None, :]
        return float(((block - np.outer(degree, degree) / m2) * same).sum() / m2)

    assert gains == pytest.approx([direct(0, 5, 11), direct(5, 11, 15)], rel=1e-9)


def test_prune_drops_a_boundary_inside_one_topic_and_keeps_real_ones() -> None:
    vectors = topics([6, 8, 6], seed=8)
    assert prune(vectors, [6, 10, 14], ratio=0.15, max_size=24) == [6, 14]
    assert prune(vectors, [6, 14], ratio=0.15, max_size=24) == [6, 14]
    single = topics([12], seed=2)
    assert prune(single, [6], ratio=0.0, max_size=24) == []
    assert prune(single, [6], ratio=0.0, max_size=10) == [6], "a merge past the largest episode is not made"


def test_prune_ratio_is_relative_to_the_median() -> None:
    vectors = topics([6, 6, 6, 6], seed=6)
    kept = prune(vectors, [6, 12, 18], ratio=0.15, max_size=24)
    assert kept == [6, 12, 18]
    assert prune(vectors, [6, 12, 18], ratio=1.0, max_size=24) != [
        6,
        12,
        18,
    ]  # a bar at the median removes some


def test_text_that_repeats_itself_makes_even_episodes_of_the_largest_size() -> None:
    """2,500 copies of one sentence: no recursion, no two-sentence episodes from float noise."""
    rng = np.random.default_rng(1)
    one = normalize(rng.standard_normal((1, 32)))
    vectors = normalize(np.repeat(one, 2500, axis=0) + 1e-7 * rng.standard_normal((2500, 32)))
    config = SegmentationConfig()
    segments = segment(vectors, config)
    sizes = [s.stop - s.first for s in segments]
    assert sum(sizes) == 2500 and len(segments) == -(-2500 // config.max_sentences)
    assert max(sizes) - min(sizes) <= 1


def test_memory_grows_linearly_with_the_number_of_sentences() -> None:
    """A 4,000-sentence text once took a 4,000 x 4,000 similarity matrix (+405 MiB)."""
    import tracemalloc

    vectors = topics([8] * 500, dim=64, seed=9)
    tracemalloc.start()
    segment(vectors, SegmentationConfig())
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 20 * vectors.nbytes, (
        f"peak {peak / 2**20:.1f} MiB for {vectors.nbytes / 2**20:.1f} MiB of vectors"
    )
