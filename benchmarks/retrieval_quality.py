"""Does recall find the right passage of real Wikipedia articles?

Each article of shared/data/wiki.jsonl is stored as one session through MemoryService.remember
(sections joined by blank lines). Every section is then queried as "<article title>: <section
title>"; a result is relevant if its text overlaps that section. Compared in one run, on the same
sentence embeddings (all-MiniLM-L6-v2), with a reading budget of 6,000 characters per query:

- recall with the default settings (hybrid, k=5, contiguity 1): scored on all items it returns,
  and on its first 5 items only;
- semantic-only recall (cosine, k=5, contiguity 0, no minimum score): how recall ranked before;
- lexical-only recall (BM25, k=5, contiguity 0);
- fixed-size chunks of the mean episode length (no segmentation), semantic-only, k=5.

Reports hit@5 (a relevant item among those scored) and MRR (by position in the returned list).

    .venv/bin/python benchmarks/retrieval_quality.py
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from common import DATA, CachedEncoder, open_service, open_with_store, recall_batch, remember, save

from emx_mcp.config import Settings
from emx_mcp.retrieval import Hit
from emx_mcp.sentences import split, split_spans
from emx_mcp.service import MemoryService

K = 5


def articles() -> list[dict[str, Any]]:
    out = []
    for line in (DATA / "wiki.jsonl").open():
        article = json.loads(line)
        text, ranges = "", []
        for section in article["sections"]:
            body = "\n\n".join(section["paragraphs"]).strip()
            if not body:
                continue
            if text:
                text += "\n\n"
            ranges.append((section["title"], len(text), len(text) + len(body)))
            text += body
        out.append({"id": article["id"], "title": article["title"], "text": text, "sections": ranges})
    return out


def locate(text: str, pieces: list[str]) -> list[tuple[int, int]]:
    spans, cursor = [], 0
    for piece in pieces:
        at = text.index(piece, cursor)
        spans.append((at, at + len(piece)))
        cursor = at + len(piece)
    return spans


def store(service: MemoryService, docs: list[dict[str, Any]], chunk: int | None) -> dict[str, set[str]]:
    """Remember every article; return, per event id, the "<article id>/<section title>" it overlaps."""
    sections_of: dict[str, set[str]] = {}
    for doc in docs:
        if chunk is None:
            episodes = remember(service, doc["text"], session=doc["id"])
            events = [e.event for e in episodes]
        else:
            spans = split_spans(doc["text"])
            events = []
            for start in range(0, len(spans), chunk):
                piece = doc["text"][spans[start][0] : spans[min(len(spans), start + chunk) - 1][1]]
                events += [e.event for e in remember(service, piece, session=doc["id"])]
        for event, (a, b) in zip(events, locate(doc["text"], [e.text for e in events]), strict=True):
            sections_of[event.id] = {f"{doc['id']}/{t}" for t, s, e in doc["sections"] if s < b and a < e}
    return sections_of


def score(
    results: list[list[Hit]], wanted: list[str], sections_of: dict[str, set[str]], first: int | None
) -> dict[str, float]:
    hits, rr, returned = 0, 0.0, 0
    for items, section in zip(results, wanted, strict=True):
        items = items[:first] if first else items
        returned += len(items)
        ranks = [i for i, h in enumerate(items) if section in sections_of.get(h.event.id, set())]
        hits += bool(ranks)
        rr += 1 / (ranks[0] + 1) if ranks else 0.0
    n = len(wanted)
    return {
        "hit_at_5": round(hits / n, 4),
        "mrr": round(rr / n, 4),
        "items_per_query": round(returned / n, 2),
    }


def evaluate(backend: str = "torch") -> dict[str, Any]:
    """The report (every method) with the model run by `backend` (see common.make_encoder)."""
    docs = articles()
    all_sentences = sorted({s for d in docs for s in split(d["text"])})
    encoder = CachedEncoder(all_sentences, backend)
    # Section titles repeat across articles ("History"), so a target names its article too.
    queries = [f"{d['title']}: {title}" for d in docs for title, _, _ in d["sections"]]
    targets = [f"{d['id']}/{title}" for d in docs for title, _, _ in d["sections"]]
    work = Path(tempfile.mkdtemp(prefix="emx-retrieval-"))
    try:
        episodic, episodic_store = open_with_store(Settings(data_dir=work / "episodes"), encoder)
        sections_of = store(episodic, docs, chunk=None)
        events = [e for batch, _ in episodic_store.export_batches(None) for e in batch]
        lengths = [len(split(e.text)) for e in events]
        mean_len = max(1, round(float(np.mean(lengths))))
        two_stage = batched(episodic, queries)
        similarity = batched(episodic, queries, contiguity=0, mode="semantic", min_score=0.0)
        words = batched(episodic, queries, contiguity=0, mode="lexical", min_score=0.0)
        wide = batched(episodic, queries, contiguity=0, max_chars=50_000, batch=4)
        wide_semantic = batched(
            episodic, queries, contiguity=0, mode="semantic", min_score=0.0, max_chars=50_000, batch=4
        )
        chunked = open_service(
            Settings(data_dir=work / "chunks", segment_min_sentences=1000, segment_max_sentences=1000),
            encoder,
        )
        chunk_sections = store(chunked, docs, chunk=mean_len)
        fixed = batched(chunked, queries, contiguity=0, mode="semantic", min_score=0.0)
        results = {
            "recall, default settings (all items returned)": score(two_stage, targets, sections_of, None),
            "recall, default settings (first 5 items)": score(two_stage, targets, sections_of, K),
            "semantic-only recall (as before hybrid)": score(similarity, targets, sections_of, None),
            "lexical-only recall": score(words, targets, sections_of, None),
            "default ranking, contiguity 0, no budget (5 items)": score(wide, targets, sections_of, None),
            "semantic-only, no budget (5 items, as the earlier table)": score(
                wide_semantic, targets, sections_of, None
            ),
            f"fixed chunks of {mean_len} sentences, semantic-only": score(
                fixed, targets, chunk_sections, None
            ),
        }
        report = {
            "articles": len(docs),
            "queries": len(queries),
            "episodes": len(lengths),
            "mean_episode_sentences": round(float(np.mean(lengths)), 2),
            "chunks": chunked.count(),
            "results": results,
        }
        episodic.close()
        chunked.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return report


def main() -> None:
    report = evaluate()
    save("retrieval_quality", report, table(report))


def table(report: dict[str, Any]) -> str:
    lines = [
        "| method | hit (a relevant item among the items scored) | MRR | items scored per query |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, r in report["results"].items():
        lines.append(f"| {name} | {r['hit_at_5']} | {r['mrr']} | {r['items_per_query']} |")
    lines.append("")
    lines.append(
        f"{report['articles']} articles, {report['queries']} section queries, {report['episodes']} episodes "
        f"(mean {report['mean_episode_sentences']} sentences), {report['chunks']} fixed chunks. Rows that "
        "score 5 items give hit@5; the first row scores everything recall returns (the 5 matches and the "
        "neighbours it shows), so its hit is over more items."
    )
    return "\n".join(lines)


def batched(service: MemoryService, queries: list[str], batch: int = 32, **options: Any) -> list[list[Hit]]:
    """recall_batch in calls of `batch` queries, each with recall's default budget unless told otherwise."""
    options.setdefault("max_chars", 6_000)
    out: list[list[Hit]] = []
    for start in range(0, len(queries), batch):
        out += recall_batch(service, queries[start : start + batch], k=K, **options)
    return out


if __name__ == "__main__":
    main()
