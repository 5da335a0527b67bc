"""Segmentation quality (Pk, WindowDiff) on Choi-style samples built from real text, and its speed.

Each sample joins 10 runs of 3 to 11 consecutive sentences, each run from a different source:
a Wikipedia article section (shared/data/wiki.jsonl, what the defaults were tuned on) or a State
of the Union address (shared/data/sotu.jsonl, text the defaults were not tuned on). Sentences come
from emx-mcp's own splitter and are embedded with all-MiniLM-L6-v2 (cached in benchmarks/cache).

Compared in one run, on the same samples and vectors:
- emx-mcp's segmenter (surprise + boundary refinement), and without refinement;
- fixed-size chunks of the mean true run length;
- a TextTiling-style depth-score segmenter (block cosine, depth = climb to both neighbouring peaks,
  cut where depth > mean - std / 2, as in Hearst 1997), with Hearst's settings and with the best
  of 40 settings (block 2-6, gap 2-3, cut-off mean - c * std for c in -0.5..1) picked on each
  corpus itself: the strongest this baseline gets, since it is tuned on the very samples scored.

Also timed: segmentation per 1,000 sentences (encoding excluded) and refinement of 128 sentences.

    .venv/bin/python benchmarks/segmentation.py [--samples 300] [--gamma G ...]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from common import DATA, minilm_embeddings, percentile, save

from emx_mcp.segmentation import SegmentationConfig, refine, segment, surprise, surprise_boundaries
from emx_mcp.sentences import split

RUNS, MIN_RUN, MAX_RUN = 10, 3, 11

Segmenter = Callable[
    [np.ndarray], list[int]
]  # vectors -> boundary indices (first sentence of each new segment)


def wiki_sources() -> list[list[str]]:
    sources = []
    for line in (DATA / "wiki.jsonl").open():
        for section in json.loads(line)["sections"]:
            sentences = split("\n\n".join(section["paragraphs"]))
            if len(sentences) >= MIN_RUN:
                sources.append(sentences)
    return sources


def sotu_sources() -> list[list[str]]:
    return [split(json.loads(line)["text"]) for line in (DATA / "sotu.jsonl").open()]


def choi_samples(sources: list[list[str]], count: int, seed: int) -> list[tuple[list[str], list[int]]]:
    """(sentences, true boundaries) per sample; runs of one sample come from distinct sources."""
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(count):
        picked = rng.choice(len(sources), size=RUNS * 3, replace=False)
        sentences: list[str] = []
        bounds: list[int] = []
        for idx in picked:
            src = sources[idx]
            length = int(rng.integers(MIN_RUN, MAX_RUN + 1))
            if len(src) < length:
                continue
            start = int(rng.integers(0, len(src) - length + 1))
            if sentences:
                bounds.append(len(sentences))
            sentences.extend(src[start : start + length])
            if len(bounds) == RUNS - 1:
                break
        samples.append((sentences, bounds))
    return samples


def labels(n: int, bounds: list[int]) -> np.ndarray:
    out = np.zeros(n, dtype=np.int64)
    for b in bounds:
        out[b:] += 1
    return out


def pk_windowdiff(n: int, truth: list[int], guess: list[int], k: int) -> tuple[float, float]:
    ref, hyp = labels(n, truth), labels(n, guess)
    i = np.arange(n - k)
    ref_same, hyp_same = ref[i] == ref[i + k], hyp[i] == hyp[i + k]
    pk = float(np.mean(ref_same != hyp_same))
    wd = float(np.mean((ref[i + k] - ref[i]) != (hyp[i + k] - hyp[i])))
    return pk, wd


def emx(config: SegmentationConfig) -> Segmenter:
    return lambda vectors: [s.first for s in segment(vectors, config)[1:]]


def fixed(size: int) -> Segmenter:
    return lambda vectors: list(range(size, len(vectors), size))


def texttiling(block: int = 3, min_gap: int = 2, cut_std: float = 0.5) -> Segmenter:
    def run(vectors: np.ndarray) -> list[int]:
        n = len(vectors)
        if n < 2 * min_gap:
            return []
        sums = np.vstack([np.zeros((1, vectors.shape[1])), np.cumsum(vectors, axis=0)])
        gaps = np.arange(1, n)
        left = sums[gaps] - sums[np.maximum(0, gaps - block)]
        right = sums[np.minimum(n, gaps + block)] - sums[gaps]
        cos = np.einsum("ij,ij->i", left, right) / (
            np.linalg.norm(left, axis=1) * np.linalg.norm(right, axis=1)
        )
        # Hearst: depth only at valleys (local minima of the block similarity).
        valley = np.ones(len(cos), dtype=bool)
        valley[1:] &= cos[1:] <= cos[:-1]
        valley[:-1] &= cos[:-1] <= cos[1:]
        depth = np.array(
            [(_peak(cos, g, -1) - cos[g]) + (_peak(cos, g, 1) - cos[g]) for g in range(len(cos))]
        )
        depth[~valley] = 0.0
        cutoff = depth[valley].mean() - cut_std * depth[valley].std()
        chosen: list[int] = []
        for g in np.argsort(-depth):
            if depth[g] <= cutoff or not valley[g]:
                break
            b = int(gaps[g])
            if b >= min_gap and n - b >= min_gap and all(abs(b - c) >= min_gap for c in chosen):
                chosen.append(b)
        return sorted(chosen)

    return run


def _peak(values: np.ndarray, g: int, step: int) -> float:
    """Climb from g in direction `step` while the values rise (Hearst's depth score)."""
    best, i = values[g], g
    while 0 <= i + step < len(values) and values[i + step] >= best:
        i += step
        best = values[i]
    return float(best)


def evaluate(
    samples: list[tuple[list[str], list[int]]], vectors: list[np.ndarray], segmenters: dict[str, Segmenter]
) -> dict[str, Any]:
    mean_len = np.mean([len(s) / (len(b) + 1) for s, b in samples])
    k = max(2, round(mean_len / 2))
    out = {}
    for name, seg in segmenters.items():
        scores = [pk_windowdiff(len(s), b, seg(v), k) for (s, b), v in zip(samples, vectors, strict=True)]
        out[name] = {
            "pk": round(float(np.mean([x[0] for x in scores])), 4),
            "windowdiff": round(float(np.mean([x[1] for x in scores])), 4),
        }
    return {"k": k, "mean_true_length": round(float(mean_len), 2), "results": out}


def timings(vectors: list[np.ndarray], config: SegmentationConfig) -> dict[str, float]:
    stacked = np.vstack(vectors)
    rows_1000 = stacked[:1000]
    segment(rows_1000, config)  # warm
    runs = []
    for _ in range(20):
        start = time.perf_counter()
        segment(rows_1000, config)
        runs.append(time.perf_counter() - start)
    per_1000_ms = percentile(runs, 50) * 1000
    refine_ms = []
    for start in range(0, min(len(stacked) - 128, 128 * 50), 128):
        block = stacked[start : start + 128]
        bounds = surprise_boundaries(surprise(block, config.context), config.gamma, config.window).tolist()
        bounds = [b for b in bounds if config.min_sentences <= b <= 128 - config.min_sentences]
        t = time.perf_counter()
        refine(block, bounds, config.min_sentences, config.max_sentences, config.refinement)
        refine_ms.append((time.perf_counter() - t) * 1000)
    return {
        "segment_per_1000_sentences_ms": round(per_1000_ms, 2),
        "refine_128_sentences_p50_ms": round(percentile(refine_ms, 50), 3),
        "refine_128_sentences_p95_ms": round(percentile(refine_ms, 95), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=300)
    args = parser.parse_args()
    default = SegmentationConfig()
    corpora = {
        "wiki": choi_samples(wiki_sources(), args.samples, seed=1),
        "sotu": choi_samples(sotu_sources(), args.samples, seed=2),
    }
    report: dict[str, Any] = {
        "config": {f: getattr(default, f) for f in default.__slots__},
        "samples": args.samples,
    }
    for name, samples in corpora.items():
        unique = sorted({s for sentences, _ in samples for s in sentences})
        lookup = dict(zip(unique, minilm_embeddings(unique), strict=True))
        vectors = [np.vstack([lookup[s] for s in sentences]) for sentences, _ in samples]
        mean_len = round(np.mean([len(s) / (len(b) + 1) for s, b in samples]))
        segmenters = {
            "emx defaults (surprise, refinement, pruning)": emx(default),
            "emx, refinement without pruning": emx(SegmentationConfig(**{**report["config"], "prune": 0.0})),
            "emx without refinement (surprise only)": emx(
                SegmentationConfig(**{**report["config"], "refinement": "none"})
            ),
            "TextTiling-style depth score": texttiling(),
            "fixed chunks of the mean true length": fixed(int(mean_len)),
        }
        sweep = {
            (b, g, c): texttiling(b, g, c)
            for b in (2, 3, 4, 5, 6)
            for g in (2, 3)
            for c in (-0.5, 0.0, 0.5, 1.0)
        }
        swept = evaluate(samples, vectors, {str(key): seg for key, seg in sweep.items()})["results"]
        best = min(sweep, key=lambda key: swept[str(key)]["pk"])
        segmenters["TextTiling-style, best of 40 settings on this corpus"] = sweep[best]
        segmenters = dict(sorted(segmenters.items(), key=lambda kv: "fixed" in kv[0]))
        report[name] = evaluate(samples, vectors, segmenters)
        report[name]["texttiling_best_setting"] = {"block": best[0], "gap": best[1], "cut_std": best[2]}
        if name == "wiki":
            report["timing"] = timings(vectors, default)
        print(name, report[name], flush=True)
    save("segmentation", report, table(report))


def table(r: dict[str, Any]) -> str:
    names = list(r["wiki"]["results"])
    lines = [
        "| segmenter | Pk wiki | WindowDiff wiki | Pk SOTU (not tuned on) | WindowDiff SOTU |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name in names:
        w, s = r["wiki"]["results"][name], r["sotu"]["results"][name]
        lines.append(f"| {name} | {w['pk']} | {w['windowdiff']} | {s['pk']} | {s['windowdiff']} |")
    t = r["timing"]
    lines.append("")
    lines.append(
        f"Segmentation of 1,000 sentences (encoding excluded): {t['segment_per_1000_sentences_ms']} ms; "
        f"refinement of a 128-sentence text: p50 {t['refine_128_sentences_p50_ms']} ms, "
        f"p95 {t['refine_128_sentences_p95_ms']} ms."
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
