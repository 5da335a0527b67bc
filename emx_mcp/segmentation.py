"""Cut text into episodes where the topic shifts, after EM-LLM (Fountas et al., ICLR 2025).

EM-LLM marks a boundary where a token's surprise exceeds mean + gamma * std of the surprise over
a trailing window, then moves each boundary to where it best separates the similarity graph of
the two neighbouring segments (modularity, or conductance). A server sees no token
log-probabilities, so surprise here is measured in embedding space: one minus the cosine between
a sentence and what the recent context predicts (the normalised mean of the previous sentences).

Everything is vectorised: surprise from cumulative sums, thresholds from sliding windows, and
refinement from 2-D prefix sums of the similarity matrix of the two episodes around a boundary,
so each candidate split position is scored in O(1), and time and memory grow linearly with the
text (a similarity matrix is never larger than two episodes).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from emx_mcp.dialogue import Constraints, merge_small
from emx_mcp.embedding import Vectors, normalize

Refinement = Literal["modularity", "conductance", "none"]
Floats = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class SegmentationConfig:
    gamma: float = 0.75  # a boundary needs surprise above mean + gamma * std of the trailing window
    window: int = 16  # sentences in the trailing window of surprises
    context: int = 3  # previous sentences whose mean predicts the next one
    min_sentences: int = 2
    max_sentences: int = 24
    refinement: Refinement = "modularity"
    # After refinement a boundary survives only if splitting its two episodes has positive
    # modularity, at least `prune` times the median over the text's boundaries.
    prune: float = 0.15

    def __post_init__(self) -> None:
        if self.window < 2 or self.context < 1:
            raise ValueError("window must be at least 2 and context at least 1")
        if not 1 <= self.min_sentences <= self.max_sentences:
            raise ValueError("need 1 <= min_sentences <= max_sentences")
        if not 0.0 <= self.prune <= 1.0:
            raise ValueError("prune must be between 0 and 1")


@dataclass(frozen=True, slots=True)
class Segment:
    first: int  # index of its first sentence
    stop: int  # one past its last sentence
    surprise: float  # surprise of its first sentence (0.0 for the first segment)


SURPRISE_BLOCK = 2048


def surprise(vectors: Vectors, context: int) -> Floats:
    """Per sentence: 1 - cos(sentence, normalised mean of the `context` sentences before it).

    The first sentence has nothing before it and scores 0.
    """
    n = len(vectors)
    out = np.zeros(n, dtype=np.float64)
    # In blocks of sentences, each with the `context` before it: working memory stays a block's.
    for first in range(1, n, SURPRISE_BLOCK):
        stop = min(n, first + SURPRISE_BLOCK)
        base = max(0, first - context)
        part = vectors[base:stop]
        sums = np.vstack([np.zeros((1, part.shape[1])), np.cumsum(part, axis=0, dtype=np.float64)])
        idx = np.arange(first, stop) - base
        predicted = normalize((sums[idx] - sums[np.maximum(0, idx - context)]).astype(np.float32))
        out[first:stop] = 1.0 - np.einsum("ij,ij->i", predicted, vectors[first:stop])
    return out


# A sentence this close to its context (1 - cosine) never opens an episode, however quiet the
# window around it: text that repeats itself has surprise near zero, and its float noise must not
# read as topic shifts.
MIN_SURPRISE = 0.05
# Modularity gains this small are noise: a split of near-identical sentences gains nothing.
MIN_GAIN = 1e-6


def surprise_boundaries(scores: Floats, gamma: float, window: int) -> npt.NDArray[np.int64]:
    """Sentences whose surprise exceeds mean + gamma * std of the (up to) `window` scores before them.

    The first sentence's score (0 by construction) is left out of the statistics, and a sentence
    is judged only once at least two scores precede it. A surprise below MIN_SURPRISE never counts.
    """
    n = len(scores)
    if n < 4:
        return np.zeros(0, dtype=np.int64)
    sums = np.concatenate([[0.0], np.cumsum(scores)])
    squares = np.concatenate([[0.0], np.cumsum(scores * scores)])
    i = np.arange(3, n)
    lo = np.maximum(1, i - window)
    count = i - lo
    mean = (sums[i] - sums[lo]) / count
    std = np.sqrt(np.maximum((squares[i] - squares[lo]) / count - mean * mean, 0.0))
    passed = (scores[i] > mean + gamma * std) & (scores[i] > MIN_SURPRISE)
    chosen: npt.NDArray[np.int64] = i[passed].astype(np.int64)
    return chosen


def _prefix(adjacency: Floats) -> Floats:
    prefix = np.zeros((len(adjacency) + 1, len(adjacency) + 1), dtype=np.float64)
    prefix[1:, 1:] = adjacency.cumsum(0).cumsum(1)
    return prefix


def _block(prefix: Floats, r0: Any, r1: Any, c0: Any, c1: Any) -> Any:
    """Sum of prefix's underlying matrix over rows [r0, r1) and columns [c0, c1); scalars or arrays."""
    return prefix[r1, c1] - prefix[r0, c1] - prefix[r1, c0] + prefix[r0, c0]


def best_split(
    prefix: Floats,
    start: int,
    stop: int,
    lo: int,
    hi: int,
    metric: Refinement,
    allowed: npt.NDArray[np.bool_] | None = None,
) -> int:
    """The split b in [lo, hi] of sentences [start, stop) that best separates the two sides.

    With `allowed` (indexed like b), only positions it marks are considered (it must mark one).
    """
    b = np.arange(lo, hi + 1)
    if allowed is not None:
        b = b[allowed]
    total = _block(prefix, start, stop, start, stop)
    if total <= 0 or len(b) == 1:
        return int(b[0])
    k1 = _block(prefix, start, b, start, stop)
    k2 = total - k1
    if metric == "conductance":
        cut = _block(prefix, start, b, b, stop)
        score = -cut / np.maximum(np.minimum(k1, k2), 1e-12)
    else:
        inner = _block(prefix, start, b, start, b) + _block(prefix, b, stop, b, stop)
        score = (inner - (k1 * k1 + k2 * k2) / total) / total
    return int(b[int(np.argmax(score))])


def similarity_prefix(vectors: Vectors) -> Floats:
    """2-D prefix sums of the sentence-similarity graph (cosine, negatives clipped, no self-loops).

    Quadratic in the number of rows: callers pass a window of at most twice the largest episode.
    """
    sims = np.clip(vectors.astype(np.float64) @ vectors.T.astype(np.float64), 0.0, None)
    np.fill_diagonal(sims, 0.0)
    return _prefix(sims)


def refine(
    vectors: Vectors,
    bounds: list[int],
    min_size: int,
    max_size: int,
    metric: Refinement,
    rules: Constraints | None = None,
) -> list[int]:
    """Move each boundary within its neighbours' span to the best-separating position (Algorithm 1).

    A boundary moves only where both episodes it separates keep between min_size and max_size
    sentences, and, in a dialogue, only to a place `rules` allow; forced ones stay. Each move
    looks only at the two episodes around it, so memory stays linear in the text.
    """
    if metric == "none" or not bounds:
        return bounds
    edges = [0, *bounds, len(vectors)]
    for j in range(1, len(edges) - 1):
        if rules is not None and edges[j] in rules.forced:
            continue
        start, stop = edges[j - 1], edges[j + 1]
        lo, hi = max(start + min_size, stop - max_size), min(stop - min_size, start + max_size)
        mask = None if rules is None else rules.allowed[lo : hi + 1]
        if lo <= hi and (mask is None or mask.any()):
            prefix = similarity_prefix(vectors[start:stop])
            edges[j] = start + best_split(prefix, 0, stop - start, lo - start, hi - start, metric, mask)
    return edges[1:-1]


def split_gain(vectors: Vectors, a: int, b: int, c: int) -> float:
    """Modularity of splitting sentences [a, c) at b, on their own similarity graph."""
    prefix = similarity_prefix(vectors[a:c])
    total = _block(prefix, 0, c - a, 0, c - a)
    if total <= 0:
        return 0.0
    k1 = _block(prefix, 0, b - a, 0, c - a)
    k2 = total - k1
    inner = _block(prefix, 0, b - a, 0, b - a) + _block(prefix, b - a, c - a, b - a, c - a)
    return float((inner - (k1 * k1 + k2 * k2) / total) / total)


def prune(
    vectors: Vectors, bounds: list[int], ratio: float, max_size: int, keep: frozenset[int] = frozenset()
) -> list[int]:
    """Drop, weakest first, boundaries whose split gain is not positive or below ratio * median gain.

    The median makes the bar relative to the text: topics in one text may be far apart or close,
    and a spurious boundary is weak compared with the real ones of the same text. A boundary is
    dropped only where the merged episode stays within `max_size` (and never one in `keep`), so
    every gain is measured on a window of at most twice that: memory stays linear in the text.
    """
    edges = [0, *bounds, len(vectors)]
    gains = [split_gain(vectors, edges[j - 1], edges[j], edges[j + 1]) for j in range(1, len(edges) - 1)]
    while gains:
        bar = ratio * float(np.median(gains)) if len(gains) >= 2 else 0.0
        mergeable = [
            j for j in range(len(gains)) if edges[j + 2] - edges[j] <= max_size and edges[j + 1] not in keep
        ]
        if not mergeable:
            break
        weakest = min(mergeable, key=lambda j: gains[j])
        if gains[weakest] > max(bar, MIN_GAIN):
            break
        del edges[weakest + 1], gains[weakest]
        for j in (weakest - 1, weakest):  # the two boundaries around the merged episode
            if 0 <= j < len(gains):
                gains[j] = split_gain(vectors, edges[j], edges[j + 1], edges[j + 2])
    return edges[1:-1]


def segment(vectors: Vectors, config: SegmentationConfig, rules: Constraints | None = None) -> list[Segment]:
    """Episodes of a text whose sentences have the unit vectors (n, d), in order.

    `rules` (dialogue.py) say, for speaker-labelled text, where an episode may end and where one
    must begin. Time and memory grow linearly with the number of sentences.
    """
    n = len(vectors)
    if n == 0:
        return []
    scores = surprise(vectors, config.context)
    candidates = surprise_boundaries(scores, config.gamma, config.window)
    allowed = None
    if rules is not None:
        allowed = rules.allowed
        candidates = _snap(candidates, allowed)
    bounds = _enforce_sizes(candidates, scores, config, allowed)
    if rules is not None:
        bounds = sorted(set(bounds) | rules.forced)
    if config.refinement != "none" and bounds:
        bounds = refine(vectors, bounds, config.min_sentences, config.max_sentences, config.refinement, rules)
        keep = rules.forced if rules is not None else frozenset()
        bounds = prune(vectors, bounds, config.prune, config.max_sentences, keep)
    if rules is not None:
        bounds = merge_small(bounds, n, rules)
    edges = [0, *bounds, n]
    return [Segment(a, b, float(scores[a]) if a else 0.0) for a, b in pairwise(edges)]


def _snap(candidates: npt.NDArray[np.int64], allowed: npt.NDArray[np.bool_]) -> npt.NDArray[np.int64]:
    """Each candidate moved to the nearest place an episode may end (the earlier on a tie)."""
    places = np.flatnonzero(allowed[1:-1]) + 1
    if len(places) == 0 or len(candidates) == 0:
        return np.zeros(0, dtype=np.int64)
    right = np.clip(np.searchsorted(places, candidates), 0, len(places) - 1)
    left = np.clip(right - 1, 0, len(places) - 1)
    pick = np.where(np.abs(places[left] - candidates) <= np.abs(places[right] - candidates), left, right)
    return np.unique(places[pick]).astype(np.int64)


def _enforce_sizes(
    candidates: npt.NDArray[np.int64],
    scores: Floats,
    config: SegmentationConfig,
    allowed: npt.NDArray[np.bool_] | None = None,
) -> list[int]:
    """Keep the most surprising candidates that leave every episode within the size limits."""
    n, gap = len(scores), config.min_sentences
    blocked = np.zeros(n + 1, dtype=bool)  # positions too close to a chosen boundary or an end
    blocked[:gap] = blocked[n - gap + 1 :] = True
    if allowed is not None:
        blocked |= ~allowed
    chosen: list[int] = []
    for b in sorted(candidates.tolist(), key=lambda i: -scores[i]):
        if not blocked[b]:
            chosen.append(b)
            blocked[max(0, b - gap + 1) : b + gap] = True
    edges = [0, *sorted(chosen), n]
    result: list[int] = []
    for a, z in pairwise(edges):
        result.extend(_split_long(a, z, scores, config, allowed))
        result.append(z)
    return result[:-1]


def _split_long(
    a: int, z: int, scores: Floats, config: SegmentationConfig, allowed: npt.NDArray[np.bool_] | None = None
) -> list[int]:
    """Cuts that split [a, z) into the fewest episodes of at most max_sentences.

    Each cut falls at the most surprising sentence within half an episode of where an even split
    would put it; among equally surprising ones (text that repeats itself), the even position.
    """
    low, high = config.min_sentences, config.max_sentences
    length = z - a
    if length <= high:
        return []
    pieces = -(-length // high)
    cuts: list[int] = []
    previous = a
    for i in range(1, pieces):
        ideal = a + round(i * length / pieces)
        left = pieces - i  # episodes still to come after this cut
        lo = max(previous + low, ideal - high // 2, z - left * high)
        hi = min(previous + high, ideal + high // 2, z - left * low)
        if lo > hi:
            cut = min(max(ideal, previous + low), previous + high)
        else:
            candidates = [c for c in range(lo, hi + 1) if allowed is None or allowed[c]] or range(lo, hi + 1)
            cut = max(candidates, key=lambda c: (round(float(scores[c]), 4), -abs(c - ideal)))
        cuts.append(cut)
        previous = cut
    return cuts


def episode_vectors(vectors: Vectors, segments: list[Segment]) -> Vectors:
    """Each episode's vector: the normalised mean of its sentences' vectors, shape (episodes, d)."""
    sums = np.add.reduceat(vectors, [s.first for s in segments], axis=0)
    return normalize(sums)
