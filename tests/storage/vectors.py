"""Vectors for the storage tests: unit vectors, uniform or around a few centres as real embeddings are."""

from __future__ import annotations

import numpy as np

from emx_mcp.embedding import normalize


def random_unit(n: int, dim: int, seed: int = 0) -> np.ndarray:
    return normalize(np.random.default_rng(seed).standard_normal((n, dim)))


def clustered(n: int, dim: int, seed: int = 0, centres: int = 40) -> np.ndarray:
    """Unit vectors around a few random centres: the shape real embeddings have, unlike uniform noise."""
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((centres, dim))
    return normalize(means[rng.integers(0, centres, n)] + 0.35 * rng.standard_normal((n, dim)))
