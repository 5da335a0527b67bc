"""Sessions for the predictor benchmark: Wikipedia articles (paragraphs as episodes) and SOTU addresses.

Both are stored through MemoryService with the real model's vectors (sentences cached in
benchmarks/cache): each wiki paragraph is one episode (segmentation off); each address is
segmented by `remember` with the default settings.
"""

from __future__ import annotations

import json
from pathlib import Path

from common import DATA, CachedEncoder, open_service, open_with_store, remember

from emx_mcp.config import Settings
from emx_mcp.sentences import split
from emx_mcp.service import MemoryService
from emx_mcp.storage.embedded import EmbeddedStore


def wiki_articles() -> list[tuple[str, list[str]]]:
    out = []
    for line in (DATA / "wiki.jsonl").open():
        article = json.loads(line)
        paragraphs = [p for s in article["sections"] for p in s["paragraphs"] if p.strip()]
        out.append((f"wiki-{article['id']}", paragraphs))
    return out


def sotu_addresses() -> list[tuple[str, str]]:
    return [(f"sotu-{a['id']}", a["text"]) for a in map(json.loads, (DATA / "sotu.jsonl").open())]


def encoder() -> CachedEncoder:
    sentences = {s for _, paragraphs in wiki_articles() for p in paragraphs for s in split(p)}
    sentences |= {s for _, text in sotu_addresses() for s in split(text)}
    return CachedEncoder(sorted(sentences))


def build(data_dir: Path) -> tuple[MemoryService, EmbeddedStore]:
    """A store with namespace 'wiki' (94 sessions) and 'sotu' (233 sessions)."""
    enc = encoder()
    # One remember per paragraph with segmentation off: a paragraph is one episode.
    paragraphs = open_service(
        Settings(data_dir=data_dir, segment_min_sentences=1000, segment_max_sentences=1000), enc
    )
    for session, texts in wiki_articles():
        for text in texts:
            remember(paragraphs, text, session=session, namespace="wiki")
    paragraphs.close()
    # One address is 217,083 characters, above the default EMX_MAX_TEXT_CHARS.
    service, store = open_with_store(Settings(data_dir=data_dir, max_text_chars=300_000), enc)
    for session, text in sotu_addresses():
        remember(service, text, session=session, namespace="sotu")
    return service, store


if __name__ == "__main__":
    encoder()  # fills the cache
