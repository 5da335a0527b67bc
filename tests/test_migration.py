"""Moving a memory between stores: embedded -> Milvus -> embedded, with real text (tests/data).

Everything moves (ids, sessions, positions, timestamps, metadata, vectors), a second import
changes nothing, and 1,000 queries get the same first answer from every copy.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from emx_mcp.config import Settings
from emx_mcp.embedding import HashingEncoder
from emx_mcp.sentences import split_spans
from emx_mcp.service import MemoryService
from emx_mcp.transfer import export_jsonl, import_jsonl
from tests.helpers import open_service, recall_batch, remember
from tests.milvus_server import empty

DATA = Path(__file__).with_name("data")
QUERIES = 1000


def paragraphs() -> list[dict[str, str]]:
    return [json.loads(line) for line in (DATA / "wiki_paragraph_sample.jsonl").read_text().splitlines()]


def queries() -> list[str]:
    """1,000 questions about the paragraphs: their sentences, then the last ten words of each."""
    out = []
    for p in paragraphs():
        out += [p["text"][a:b] for a, b in split_spans(p["text"]) if b - a >= 20]
    out += [" ".join(p["text"].split()[-10:]) for p in paragraphs()]
    out += [" ".join(p["text"].split()[:8]) for p in paragraphs()]
    assert len(out) >= QUERIES
    return out[:QUERIES]


def first_answers(service: MemoryService, mode: str) -> list[tuple[str, str] | None]:
    answers: list[tuple[str, str] | None] = []
    qs = queries()
    for start in range(0, len(qs), 250):
        for hits in recall_batch(service, qs[start : start + 250], k=1, contiguity=0, mode=mode):
            answers.append((hits[0].event.id, hits[0].event.text) if hits else None)
    return answers


def everything(service: MemoryService) -> list[tuple[object, ...]]:
    return sorted(
        (
            e.id,
            e.namespace,
            e.session,
            e.position,
            e.timestamp,
            e.text,
            json.dumps(e.metadata, sort_keys=True),
        )
        for batch, _ in service.export_events(None)
        for e in batch
    )


@pytest.mark.slow
def test_embedded_to_milvus_and_back_moves_everything_and_answers_the_same(
    tmp_path: Path, milvus_uri: str
) -> None:
    encoder = HashingEncoder(dim=128)
    embedded = open_service(Settings(data_dir=tmp_path / "embedded"), encoder)
    for i, p in enumerate(paragraphs()):
        remember(
            embedded,
            p["text"],
            session=p["title"],
            namespace="other" if i % 10 == 0 else "default",
            metadata={"section": p["section"]},
            timestamp=f"2026-{1 + i % 12:02d}-{1 + i % 28:02d}T08:00:00Z",
        )
    milvus_settings = Settings(
        data_dir=tmp_path / "milvus-data",
        store="milvus",
        milvus_uri=milvus_uri,
        milvus_collection="migration",
    )
    empty(milvus_settings)
    milvus = open_service(milvus_settings, encoder)
    back = open_service(Settings(data_dir=tmp_path / "back"), encoder)
    try:
        out = tmp_path / "embedded.jsonl"
        exported = export_jsonl(embedded, out)
        report = import_jsonl(milvus, out)
        assert report.imported == exported == embedded.count() and report.error_count == 0
        assert import_jsonl(milvus, out).already_present == exported, "a second import changes nothing"

        returned = tmp_path / "milvus.jsonl"
        assert export_jsonl(milvus, returned) == exported
        assert import_jsonl(back, returned).imported == exported

        assert everything(milvus) == everything(embedded) == everything(back)
        source = first_answers(embedded, "semantic")
        assert first_answers(milvus, "semantic") == source, "Milvus answers differently"
        assert first_answers(back, "semantic") == source, "the copy brought back answers differently"
        # Hybrid ranking adds BM25, which each store computes with its own engine (FTS5 with the
        # Porter stemmer; Milvus's english analyzer): close, not identical.
        source = first_answers(embedded, "hybrid")
        assert first_answers(back, "hybrid") == source, "the copy brought back answers differently"
        same = sum(a == b for a, b in zip(first_answers(milvus, "hybrid"), source, strict=True))
        print(f"hybrid top-1 agreement embedded vs Milvus: {same}/{len(source)}")
        assert same >= 0.9 * len(source)
    finally:
        for service in (embedded, milvus, back):
            service.close()
        empty(milvus_settings)
