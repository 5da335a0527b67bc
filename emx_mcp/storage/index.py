"""The FAISS vector index: derived data, rebuilt from the event log whenever it is in doubt.

Ids are event seqs (int64). Scores are inner products of unit vectors (cosine similarity).
A snapshot on disk records the last seq it contains, so a restart only replays newer events.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import threading
from pathlib import Path

import faiss
import numpy as np
import numpy.typing as npt

from emx_mcp.embedding import Vectors

Ids = npt.NDArray[np.int64]
Scores = npt.NDArray[np.float32]

_MAGIC = b"EMXIDX1\n"
_HEADER_LEN = struct.Struct("<Q")


class CorruptSnapshot(Exception):
    """A snapshot file is truncated, altered or of another format; rebuild from the log."""


class VectorIndex:
    """Exact inner-product search over (id, vector) pairs, safe to use from several threads."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.last_seq = 0
        self._index: faiss.Index = faiss.IndexIDMap(faiss.IndexFlatIP(dim))
        self._lock = threading.RLock()

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def add(self, ids: Ids, vectors: Vectors) -> None:
        """Add `vectors` (n, dim) under `ids` (n,). The caller guarantees ids are new."""
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim or len(ids) != len(vectors):
            raise ValueError(
                f"expected ids (n,) and vectors (n, {self.dim}); got {ids.shape} and {vectors.shape}"
            )
        if len(ids) == 0:
            return
        with self._lock:
            self._index.add_with_ids(vectors, ids)
            self.last_seq = max(self.last_seq, int(ids.max()))

    def search(self, queries: Vectors, k: int, allowed: Ids | None = None) -> tuple[Scores, Ids]:
        """Top-k by inner product for queries (m, dim): scores (m, k) and ids (m, k), -1 where fewer.

        `allowed` restricts the search to those ids (an exact filter, not a post-filter).
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"expected queries (m, {self.dim}); got {queries.shape}")
        params = None
        if allowed is not None:
            allowed = np.ascontiguousarray(allowed, dtype=np.int64)
            if len(allowed) == 0:
                m = len(queries)
                return np.full((m, k), -np.inf, dtype=np.float32), np.full((m, k), -1, dtype=np.int64)
            params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(allowed))  # type: ignore[call-arg]
        with self._lock:
            scores, ids = self._index.search(queries, k, params=params)
        return scores, ids

    # -- snapshots ----------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """Serialise the index and its last seq as one self-checking blob."""
        with self._lock:
            payload = faiss.serialize_index(self._index).tobytes()
            header = {
                "dim": self.dim,
                "last_seq": self.last_seq,
                "count": len(self),
                "sha256": hashlib.sha256(payload).hexdigest(),
            }
        head = json.dumps(header, sort_keys=True).encode()
        return _MAGIC + _HEADER_LEN.pack(len(head)) + head + payload

    @classmethod
    def from_bytes(cls, blob: bytes) -> VectorIndex:
        header, payload = _split(blob)
        if hashlib.sha256(payload).hexdigest() != header.get("sha256"):
            raise CorruptSnapshot("checksum mismatch")
        try:
            inner = faiss.deserialize_index(np.frombuffer(payload, dtype=np.uint8))
        except RuntimeError as exc:
            raise CorruptSnapshot(f"FAISS could not read the payload: {exc}") from exc
        if inner.d != header["dim"] or inner.ntotal != header["count"]:
            raise CorruptSnapshot("header does not match the payload")
        index = cls(int(header["dim"]))
        index._index = inner
        index.last_seq = int(header["last_seq"])
        return index

    def save(self, path: Path) -> None:
        """Write a snapshot atomically: temp file, fsync, rename, fsync the folder."""
        write_atomic(path, self.to_bytes())

    @classmethod
    def load(cls, path: Path) -> VectorIndex:
        try:
            blob = path.read_bytes()
        except OSError as exc:
            raise CorruptSnapshot(f"cannot read {path}: {exc}") from exc
        return cls.from_bytes(blob)


def snapshot_last_seq(path: Path) -> int | None:
    """The last seq recorded in a snapshot's header, or None if absent or unreadable."""
    try:
        with path.open("rb") as fh:
            start = fh.read(len(_MAGIC) + _HEADER_LEN.size)
            if len(start) < len(_MAGIC) + _HEADER_LEN.size or not start.startswith(_MAGIC):
                return None
            (size,) = _HEADER_LEN.unpack(start[len(_MAGIC) :])
            header = json.loads(fh.read(min(size, 1 << 16)))
        return int(header["last_seq"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _split(blob: bytes) -> tuple[dict[str, int | str], bytes]:
    if not blob.startswith(_MAGIC) or len(blob) < len(_MAGIC) + _HEADER_LEN.size:
        raise CorruptSnapshot("not an emx-mcp index snapshot")
    (size,) = _HEADER_LEN.unpack_from(blob, len(_MAGIC))
    start = len(_MAGIC) + _HEADER_LEN.size
    if size > len(blob) - start:
        raise CorruptSnapshot("truncated header")
    try:
        header = json.loads(blob[start : start + size])
    except ValueError as exc:
        raise CorruptSnapshot("unreadable header") from exc
    if not isinstance(header, dict) or not {"dim", "last_seq", "count", "sha256"} <= header.keys():
        raise CorruptSnapshot("incomplete header")
    return header, blob[start + size :]


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that a crash leaves either the old or the new file, whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with tmp.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
