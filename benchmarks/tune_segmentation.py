"""Grid search for the segmentation defaults on the Wikipedia Choi-style samples only.

SOTU figures are printed beside each configuration but never used to choose: they show whether a
setting holds up on text it was not tuned on.

    .venv/bin/python benchmarks/tune_segmentation.py [--samples 300] [--top 15]
"""

from __future__ import annotations

import argparse
import itertools
from typing import Any

import numpy as np
from common import minilm_embeddings
from segmentation import choi_samples, emx, evaluate, sotu_sources, wiki_sources

from emx_mcp.segmentation import SegmentationConfig

GRID: dict[str, list[Any]] = {
    "gamma": [0.0, 0.25, 0.5, 0.75, 1.0, 1.5],
    "window": [8, 16, 32],
    "context": [1, 2, 3, 5],
    "min_sentences": [2, 3],
    "refinement": ["modularity", "conductance", "none"],
}


def vectors_for(samples: list[tuple[list[str], list[int]]]) -> list[np.ndarray]:
    unique = sorted({s for sentences, _ in samples for s in sentences})
    lookup = dict(zip(unique, minilm_embeddings(unique), strict=True))
    return [np.vstack([lookup[s] for s in sentences]) for sentences, _ in samples]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    wiki = choi_samples(wiki_sources(), args.samples, seed=1)
    sotu = choi_samples(sotu_sources(), args.samples, seed=2)
    wiki_vectors, sotu_vectors = vectors_for(wiki), vectors_for(sotu)
    rows = []
    keys = list(GRID)
    for values in itertools.product(*(GRID[k] for k in keys)):
        config = SegmentationConfig(**dict(zip(keys, values, strict=True)))
        w = evaluate(wiki, wiki_vectors, {"x": emx(config)})["results"]["x"]
        rows.append((w["pk"], config))
    rows.sort(key=lambda r: r[0])
    print("| wiki Pk | SOTU Pk | config |")
    for pk, config in rows[: args.top]:
        s = evaluate(sotu, sotu_vectors, {"x": emx(config)})["results"]["x"]
        print(f"| {pk} | {s['pk']} | {config} |", flush=True)


if __name__ == "__main__":
    main()
