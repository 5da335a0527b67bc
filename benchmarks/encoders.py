"""Which backend should run the embedding model? torch, ONNX Runtime, ONNX Runtime with int8 weights.

The same packaged all-MiniLM-L6-v2 three ways, as the server runs them (EMX_ENCODER_BACKEND),
measured in one run: sentence-transformers on torch (`torch`); ONNX Runtime on the model exported
from the installed weights (`onnx`); and that export with ONNX Runtime's dynamic int8
quantization, weights one scale per output channel, each text run alone (`onnx-int8`).

- speed: sentences per second encoding 2,000 real sentences in one call (batched), 300 one
  sentence per call (as a lone recall does), and 1,200 in calls of 6 from two threads at once
  (as a loaded server calls it: what two cores can encode);
- agreement: the cosine of each backend's vector to torch's, over those sentences;
- retrieval quality: benchmarks/retrieval_quality.py (hit@5 and MRR of default recall on the
  Wikipedia sections) and benchmarks/conversation_recall.py (evidence any@5 on the LoCoMo
  conversations, one remember per session and per turn), each with that backend's vectors.

A backend may be the default only if it is faster and its quality is within 0.005 of torch's.

    .venv/bin/python benchmarks/encoders.py [--speed-only]
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from common import make_encoder, save, sentences

BACKENDS = ["torch", "onnx", "onnx-int8"]
TOLERANCE = 0.005


def speed(backend: str, texts: list[str], singles: list[str]) -> tuple[dict[str, float], np.ndarray]:
    encoder = make_encoder(backend)
    encoder.encode(texts[:64])  # load, export if need be, warm up
    start = time.perf_counter()
    vectors = encoder.encode(texts)
    batched = len(texts) / (time.perf_counter() - start)
    start = time.perf_counter()
    for text in singles:
        encoder.encode([text])
    single = len(singles) / (time.perf_counter() - start)
    calls = [texts[i : i + 6] for i in range(0, 1_200, 6)]
    start = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(encoder.encode, calls))
    two = 1_200 / (time.perf_counter() - start)
    figures = {
        "batched_per_s": round(batched, 1),
        "single_per_s": round(single, 1),
        "two_callers_per_s": round(two, 1),
    }
    return figures, vectors


def quality(backend: str) -> dict[str, float]:
    import conversation_recall
    import retrieval_quality

    wiki = retrieval_quality.evaluate(backend)["results"]
    default = wiki["recall, default settings (first 5 items)"]
    out = {"wiki_hit_at_5": default["hit_at_5"], "wiki_mrr": default["mrr"]}
    conversations = conversation_recall.evaluate_with(
        conversation_recall.load(conversation_recall.DATA), backend
    )
    for per in conversation_recall.INGESTS:
        rows = conversations[f"{per}/default"]["rows"]
        out[f"locomo_{per}_any_at_5"] = round(next(r for r in rows if r["k"] == 5)["method"]["any"], 4)
    return out


def table(results: dict[str, Any]) -> str:
    quality_keys = [
        k
        for k in next(iter(results.values()))
        if k not in ("batched_per_s", "single_per_s", "two_callers_per_s", "cosine_to_torch")
    ]
    head = [
        "backend",
        "batched sentences/s",
        "one per call /s",
        "two callers, 6 per call /s",
        "cosine to torch (min / mean)",
        *quality_keys,
    ]
    lines = ["| " + " | ".join(head) + " |", "| --- |" + " ---: |" * (len(head) - 1)]
    torch = results["torch"]
    for backend, r in results.items():
        cells = [backend, f"{r['batched_per_s']}", f"{r['single_per_s']}", f"{r['two_callers_per_s']}"]
        cells.append(f"{r['cosine_to_torch'][0]:.4f} / {r['cosine_to_torch'][1]:.4f}")
        for key in quality_keys:
            delta = r[key] - torch[key]
            cells.append(f"{r[key]:.4f}" + ("" if backend == "torch" else f" ({delta:+.4f})"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--speed-only", action="store_true", help="skip the retrieval-quality runs")
    args = parser.parse_args()
    texts = sentences(2_300)
    batch, singles = texts[:2_000], texts[2_000:]
    results: dict[str, Any] = {}
    reference = None
    for backend in BACKENDS:
        figures, vectors = speed(backend, batch, singles)
        if reference is None:
            reference = vectors
        cosines = (vectors * reference).sum(1)
        figures["cosine_to_torch"] = [round(float(cosines.min()), 4), round(float(cosines.mean()), 4)]
        results[backend] = figures
        print(backend, figures, flush=True)
    if not args.speed_only:
        for backend in BACKENDS:
            results[backend].update(quality(backend))
            print(backend, results[backend], flush=True)
    save("encoders", results, table(results))


if __name__ == "__main__":
    main()
