"""Index snapshots on disk: the file format, the lock that serialises writers, and leftovers of crashes.

A snapshot is one file: a magic line, a JSON header (dimension, cursors into the event log,
counts, the index's measurements, section lengths and a SHA-256 of the payload), then the
payload: the live FAISS index, the delta, and the recall probes. It is derived data: any file
that does not check out is rebuilt from the event log.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import struct
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import structlog

from emx_mcp.files import TEMP_SUFFIX, write_atomic
from emx_mcp.storage.index import IndexParts, IndexState, VectorIndex
from emx_mcp.storage.policy import TrainingPolicy

log = structlog.get_logger(__name__)

MAGIC = b"EMXIDX3\n"
_HEADER_LEN = struct.Struct("<Q")
SUFFIX = ".emxidx"
_REQUIRED = {"dim", "last_seq", "last_forget", "count", "trained", "kind", "state", "sections", "sha256"}


class CorruptSnapshot(Exception):
    """A snapshot file is truncated, altered or of another format; rebuild from the log."""


def to_bytes(index: VectorIndex) -> bytes:
    """Serialise the index, its measurements and its cursors as one self-checking blob."""
    with index.reading() as parts:
        sections = [
            faiss.serialize_index(parts.live).tobytes(),
            faiss.serialize_index(parts.delta).tobytes(),
            parts.probe_ids.tobytes(),
            parts.probes.tobytes(),
        ]
        header: dict[str, Any] = {
            "dim": index.dim,
            "last_seq": index.last_seq,
            "last_forget": index.last_forget,
            "count": len(index),
            "trained": index.trained,
            "kind": index.policy.kind,
            "state": asdict(parts.state),
            "sections": [len(s) for s in sections],
        }
    payload = b"".join(sections)
    header["sha256"] = hashlib.sha256(payload).hexdigest()
    head = json.dumps(header, sort_keys=True).encode()
    return MAGIC + _HEADER_LEN.pack(len(head)) + head + payload


def from_bytes(blob: bytes, policy: TrainingPolicy | None = None) -> VectorIndex:
    header, payload = _split(blob)
    if hashlib.sha256(payload).hexdigest() != header["sha256"]:
        raise CorruptSnapshot("checksum mismatch")
    lengths = header["sections"]
    if not isinstance(lengths, list) or len(lengths) != 4 or sum(lengths) != len(payload):
        raise CorruptSnapshot("section lengths do not match the payload")
    a, b, c = np.cumsum(lengths[:3]).tolist()
    dim = int(header["dim"])
    try:
        live = faiss.deserialize_index(np.frombuffer(payload[:a], dtype=np.uint8))
        delta = faiss.deserialize_index(np.frombuffer(payload[a:b], dtype=np.uint8))
        probe_ids = np.frombuffer(payload[b:c], dtype=np.int64).copy()
        probes = np.frombuffer(payload[c:], dtype=np.float32).reshape(-1, dim).copy()
    except (RuntimeError, ValueError) as exc:
        raise CorruptSnapshot(f"unreadable payload: {exc}") from exc
    consistent = (
        live.d == dim == delta.d
        and live.ntotal + delta.ntotal == header["count"]
        and len(probes) == len(probe_ids)
    )
    if not consistent:
        raise CorruptSnapshot("header does not match the payload")
    policy = policy or TrainingPolicy()
    if header["trained"] and header["kind"] != policy.kind:
        raise CorruptSnapshot(f"snapshot holds a {header['kind']} index; {policy.kind} is configured")
    index = VectorIndex(
        dim, policy, IndexParts(live, delta, probe_ids, probes, IndexState(**header["state"]))
    )
    index.last_seq, index.last_forget = int(header["last_seq"]), int(header["last_forget"])
    return index


def write(path: Path, blob: bytes) -> None:
    """Put a serialised snapshot on disk atomically: temp file, fsync, rename, fsync the folder."""
    write_atomic(path, blob)


def save(path: Path, index: VectorIndex) -> None:
    write(path, to_bytes(index))


def load(path: Path, policy: TrainingPolicy | None = None) -> VectorIndex:
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise CorruptSnapshot(f"cannot read {path}: {exc}") from exc
    return from_bytes(blob, policy)


def header(path: Path) -> dict[str, Any] | None:
    """A snapshot's header (cursors, counts) without reading the payload; None if unreadable."""
    try:
        with path.open("rb") as fh:
            start = fh.read(len(MAGIC) + _HEADER_LEN.size)
            if len(start) < len(MAGIC) + _HEADER_LEN.size or not start.startswith(MAGIC):
                return None
            (size,) = _HEADER_LEN.unpack(start[len(MAGIC) :])
            parsed = json.loads(fh.read(min(size, 1 << 20)))
        return parsed if isinstance(parsed, dict) else None
    except (OSError, ValueError):
        return None


def _split(blob: bytes) -> tuple[dict[str, Any], bytes]:
    if not blob.startswith(MAGIC) or len(blob) < len(MAGIC) + _HEADER_LEN.size:
        raise CorruptSnapshot("not an emx-mcp index snapshot")
    (size,) = _HEADER_LEN.unpack_from(blob, len(MAGIC))
    start = len(MAGIC) + _HEADER_LEN.size
    if size > len(blob) - start:
        raise CorruptSnapshot("truncated header")
    try:
        parsed = json.loads(blob[start : start + size])
    except ValueError as exc:
        raise CorruptSnapshot("unreadable header") from exc
    if not isinstance(parsed, dict) or not parsed.keys() >= _REQUIRED:
        raise CorruptSnapshot("incomplete header")
    return parsed, blob[start + size :]


@contextlib.contextmanager
def file_lock(folder: Path) -> Iterator[None]:
    """Serialise snapshot writers across processes sharing the data directory."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / ".lock").open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def remove_leftovers(folder: Path) -> None:
    """Delete temporary files of snapshot writes that a crash interrupted.

    Snapshots are written under the folder's file lock, so a temporary file seen while holding
    it belongs to no write in progress.
    """
    if not folder.is_dir():
        return
    with file_lock(folder):
        for leftover in folder.glob(f".*{TEMP_SUFFIX}"):
            leftover.unlink(missing_ok=True)
            log.info("removed the temporary file of an interrupted snapshot", path=str(leftover))
