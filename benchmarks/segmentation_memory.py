"""Memory of segmentation as texts grow, and one 200,000-character `remember` with the real model.

Segmentation once built an n x n similarity matrix (and its prefix sums) for an n-sentence text:
4,000 sentences took 405 MiB more. It now looks at two episodes at a time. Measured here:

- segmentation alone (encoding excluded) of n = 1,000 to 50,000 unit vectors of 384 dimensions:
  peak memory it allocates (tracemalloc, which sees numpy's buffers) and time, beside the
  2 x 8 x n^2 bytes the quadratic matrices would need;
- `remember` of a 200,000-character text of short sentences through the service with the real
  model: wall time and the peak resident memory above the process before the call.

    .venv/bin/python benchmarks/segmentation_memory.py

Writes results/segmentation_memory.{json,md}.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
from common import open_service, remember, save
from snapshots import peak_rss

from emx_mcp.config import Settings
from emx_mcp.embedding import SentenceTransformerEncoder, normalize
from emx_mcp.segmentation import SegmentationConfig, segment
from emx_mcp.sentences import split

SIZES = (1_000, 4_000, 11_000, 50_000)


def topic_runs(n: int, dim: int = 384, seed: int = 0) -> np.ndarray:
    """Sentence vectors in runs of 3-11 around random topics, as a long document has."""
    rng = np.random.default_rng(seed)
    rows, total = [], 0
    while total < n:
        size = int(rng.integers(3, 12))
        centre = rng.standard_normal(dim)
        rows.append(centre + 0.8 * rng.standard_normal((size, dim)))
        total += size
    return normalize(np.vstack(rows)[:n])


def segmentation_alone(n: int) -> dict[str, Any]:
    vectors = topic_runs(n)
    tracemalloc.start()
    start = time.perf_counter()
    segments = segment(vectors, SegmentationConfig())
    seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "sentences": n,
        "episodes": len(segments),
        "seconds": round(seconds, 3),
        "peak_mib": round(peak / 2**20, 1),
        "vectors_mib": round(vectors.nbytes / 2**20, 1),
        "quadratic_mib": round(2 * 8 * n * n / 2**20, 1),
    }


def short_sentences(chars: int) -> str:
    rng = np.random.default_rng(1)
    words = ["build", "deploy", "cache", "index", "router", "queue", "backup", "report", "check", "merge"]
    parts, size = [], 0
    i = 0
    while size < chars:
        sentence = f"Step {i} {rng.choice(words)} {rng.choice(words)} done."
        parts.append(sentence)
        size += len(sentence) + 1
        i += 1
    return " ".join(parts)[:chars].rsplit(" ", 1)[0] + "."


def one_large_remember(chars: int) -> dict[str, Any]:
    text = short_sentences(chars)
    work = Path(tempfile.mkdtemp(prefix="emx-segmem-"))
    try:
        service = open_service(Settings(data_dir=work, max_text_chars=chars), SentenceTransformerEncoder())
        remember(service, "warm-up: the model loads before the measurement.")
        with peak_rss() as memory:
            start = time.perf_counter()
            episodes = remember(service, text)
            seconds = time.perf_counter() - start
        service.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {
        "characters": len(text),
        "sentences": len(split(text)),
        "episodes": len(episodes),
        "seconds": round(seconds, 1),
        "peak_rss_above_before_mib": round((memory["peak"] - memory["before"]) / 2**20, 1),
    }


def main() -> None:
    rows = [segmentation_alone(n) for n in SIZES]
    large = one_large_remember(200_000)
    save("segmentation_memory", {"segmentation": rows, "remember_200k": large}, table(rows, large))


def table(rows: list[dict[str, Any]], large: dict[str, Any]) -> str:
    lines = [
        "| sentences | episodes | segmentation time (s) | peak memory it allocates (MiB) | the vectors (MiB) "
        "| an n x n matrix and its prefix sums (MiB) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['sentences']:,} | {r['episodes']:,} | {r['seconds']} | {r['peak_mib']} | "
            f"{r['vectors_mib']} | {r['quadratic_mib']:,} |"
        )
    lines += [
        "",
        f"`remember` of {large['characters']:,} characters ({large['sentences']:,} short sentences, "
        f"{large['episodes']:,} episodes) with the real model: {large['seconds']} s, peak resident memory "
        f"{large['peak_rss_above_before_mib']} MiB above the process before the call.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
