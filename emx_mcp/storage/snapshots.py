"""Index snapshots on disk: the file format, the lock that serialises writers, and leftovers of crashes.

A snapshot is derived data that must prove whose it is. Its header names the store (the event
log's identity), the namespace, the log positions it covers and a fingerprint of the log there;
a SHA-256 covers the payload and another the header. A file that does not match the log it is
opened beside is rebuilt from the log, never trusted.

Layout, written in one pass and read back in bounded memory (the index is streamed through
FAISS's own reader and writer, never held twice):

    MAGIC | live FAISS index | delta FAISS index | probe ids | probe vectors | header JSON | u64 len | END
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import re
import struct
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import faiss
import numpy as np
import structlog

from emx_mcp.files import TEMP_SUFFIX, atomic_writer
from emx_mcp.storage.index import FrozenIndex, IndexParts, IndexState, VectorIndex
from emx_mcp.storage.policy import TrainingPolicy

log = structlog.get_logger(__name__)

MAGIC = b"EMXIDX4\n"
END = b"EMXEND4\n"
_LEN = struct.Struct("<Q")
SUFFIX = ".emxidx"
CHUNK = 8 << 20
_REQUIRED = {
    "store_id",
    "namespace",
    "dim",
    "last_seq",
    "last_forget",
    "fingerprint",
    "count",
    "trained",
    "kind",
    "state",
    "sections",
    "sha256",
    "header_sha256",
}


class CorruptSnapshot(Exception):
    """A snapshot file is truncated, altered, of another format, or not this store's; rebuild from the log."""


@dataclass(frozen=True, slots=True)
class Provenance:
    """Whose a snapshot is: the store, the namespace, and where in the log it stands."""

    store_id: str
    namespace: str
    last_seq: int
    last_forget: int
    fingerprint: str  # EventLog.fingerprint(last_seq, last_forget)


def file_name(namespace: str) -> str:
    """A file name that no other namespace maps to, even on a case-insensitive file system."""
    digest = hashlib.sha256(namespace.encode()).hexdigest()[:12]
    slug = re.sub(r"[^a-z0-9_.-]", "_", namespace.lower())[:40]
    return f"{slug}-{digest}{SUFFIX}"


# -- writing ----------------------------------------------------------------------------------


class _Sink:
    """Writes bytes to a file while hashing and counting them."""

    def __init__(self, fh: IO[bytes]) -> None:
        self.fh, self.hash, self.size = fh, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.fh.write(data)
        self.hash.update(data)
        self.size += len(data)
        return len(data)


def write(path: Path, view: FrozenIndex, dim: int, kind: str, provenance: Provenance) -> None:
    """Stream a frozen index to `path` atomically (temp file, fsync, rename, fsync the folder)."""
    with atomic_writer(path) as fh:
        fh.write(MAGIC)
        sink = _Sink(fh)
        sections = []
        writer = faiss.PyCallbackIOWriter(sink.write)  # type: ignore[attr-defined]
        faiss.write_index(view.live, writer)
        del writer  # flushes FAISS's buffer into the sink
        sections.append(sink.size)
        for blob in (view.delta, view.probe_ids.tobytes(), view.probes.tobytes()):
            sink.write(blob)
            sections.append(sink.size - sum(sections))
        header: dict[str, Any] = {
            **asdict(provenance),
            "dim": dim,
            "count": view.count,
            "trained": view.trained,
            "kind": kind,
            "state": asdict(view.state),
            "sections": sections,
            "sha256": sink.hash.hexdigest(),
        }
        header["header_sha256"] = _header_digest(header)
        head = json.dumps(header, sort_keys=True).encode()
        fh.write(head + _LEN.pack(len(head)) + END)


def _header_digest(header: dict[str, Any]) -> str:
    body = {k: v for k, v in header.items() if k != "header_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


# -- reading ----------------------------------------------------------------------------------


def header(path: Path) -> dict[str, Any] | None:
    """A snapshot's header (provenance, counts) without reading the payload; None if unreadable."""
    try:
        return _read_header(path)
    except (CorruptSnapshot, OSError):
        return None


def _read_header(path: Path) -> dict[str, Any]:
    with path.open("rb") as fh:
        if fh.read(len(MAGIC)) != MAGIC:
            raise CorruptSnapshot("not an emx-mcp index snapshot of this version")
        end = fh.seek(0, 2)
        if end < len(MAGIC) + _LEN.size + len(END):
            raise CorruptSnapshot("truncated")
        fh.seek(end - _LEN.size - len(END))
        (size,) = _LEN.unpack(fh.read(_LEN.size))
        if fh.read(len(END)) != END or size > min(end, 1 << 20):
            raise CorruptSnapshot("truncated or altered trailer")
        fh.seek(end - _LEN.size - len(END) - size)
        try:
            parsed = json.loads(fh.read(size))
        except ValueError as exc:
            raise CorruptSnapshot("unreadable header") from exc
    if not isinstance(parsed, dict) or not parsed.keys() >= _REQUIRED:
        raise CorruptSnapshot("incomplete header")
    if _header_digest(parsed) != parsed["header_sha256"]:
        raise CorruptSnapshot("header checksum mismatch")
    sections = parsed["sections"]
    if not (isinstance(sections, list) and len(sections) == 4 and all(isinstance(n, int) for n in sections)):
        raise CorruptSnapshot("bad section table")
    if len(MAGIC) + sum(sections) + size + _LEN.size + len(END) != end:
        raise CorruptSnapshot("sections do not fill the file")
    return parsed


def _bounded_reader(fh: IO[bytes], size: int) -> Callable[[int], bytes]:
    left = [size]

    def read(n: int) -> bytes:
        data = fh.read(min(n, left[0]))
        left[0] -= len(data)
        return data

    return read


def _payload_digest(fh: IO[bytes], size: int) -> str:
    digest = hashlib.sha256()
    read = _bounded_reader(fh, size)
    while chunk := read(CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def load(path: Path, policy: TrainingPolicy, expected: Provenance | None = None) -> VectorIndex:
    """Read a snapshot; refuse it (CorruptSnapshot) if damaged, or if not what `expected` describes."""
    try:
        head = _read_header(path)
        if expected is not None:
            _check_provenance(head, expected)
        if head["trained"] and head["kind"] != policy.kind:
            raise CorruptSnapshot(f"snapshot holds a {head['kind']} index; {policy.kind} is configured")
        with path.open("rb") as fh:
            fh.seek(len(MAGIC))
            if _payload_digest(fh, sum(head["sections"])) != head["sha256"]:
                raise CorruptSnapshot("checksum mismatch")
            fh.seek(len(MAGIC))
            index = _read_payload(fh, head, policy)
    except OSError as exc:
        raise CorruptSnapshot(f"cannot read {path}: {exc}") from exc
    index.last_seq, index.last_forget = int(head["last_seq"]), int(head["last_forget"])
    return index


def _check_provenance(head: dict[str, Any], expected: Provenance) -> None:
    for name, want in asdict(expected).items():
        if head[name] != want:
            raise CorruptSnapshot(f"{name} is {str(head[name])[:40]!r}, the log says {str(want)[:40]!r}")


def _read_payload(fh: IO[bytes], head: dict[str, Any], policy: TrainingPolicy) -> VectorIndex:
    dim = int(head["dim"])
    live_len, delta_len, ids_len, probes_len = head["sections"]
    try:
        reader = faiss.PyCallbackIOReader(_bounded_reader(fh, live_len))  # type: ignore[attr-defined]
        live = faiss.read_index(reader)
        delta = faiss.deserialize_index(np.frombuffer(fh.read(delta_len), dtype=np.uint8))
        probe_ids = np.frombuffer(fh.read(ids_len), dtype=np.int64).copy()
        probes = np.frombuffer(fh.read(probes_len), dtype=np.float32).reshape(-1, dim).copy()
    except (RuntimeError, ValueError) as exc:
        raise CorruptSnapshot(f"unreadable payload: {exc}") from exc
    consistent = live.d == dim == delta.d and live.ntotal + delta.ntotal == head["count"]
    if not consistent or len(probes) != len(probe_ids):
        raise CorruptSnapshot("header does not match the payload")
    return VectorIndex(dim, policy, IndexParts(live, delta, probe_ids, probes, IndexState(**head["state"])))


def save(path: Path, index: VectorIndex, provenance: Provenance) -> None:
    """Freeze `index` and write it; for callers that own the index outright (tools, tests)."""
    with index.frozen() as view:
        write(path, view, index.dim, index.policy.kind, provenance)


# -- the folder -------------------------------------------------------------------------------


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
