"""Export and import of memories as JSON lines: one event per line, nothing executable.

A line:

    {"id": "...", "namespace": "default", "session": "...", "position": 0,
     "timestamp": "2026-11-21T13:47:13.150668Z", "text": "...", "metadata": {},
     "embedding": {"model": "sentence-transformers/all-MiniLM-L6-v2", "dim": 384,
                   "encoding": "f32le-base64", "data": "..."}}

`supersedes` (optional) lists the ids of the episodes this one replaced (see the `supersede`
tool); import restores those links. `embedding` is optional. On import it is used only if it
comes from the model this store was
built with; otherwise the text is embedded again. Import is idempotent by id, reads the file
twice (first to check every line, then to store) and never holds the whole file in memory. An
event forgotten in this store is not brought back by importing an older export: the log keeps
the ids of forgotten events (tombstones), and the import report counts them.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from emx_mcp.embedding import Vectors
from emx_mcp.errors import InvalidInput
from emx_mcp.files import atomic_writer
from emx_mcp.schemas import EventId, Metadata, Namespace, SessionId, Text, Timestamp, parse
from emx_mcp.service import MemoryService
from emx_mcp.storage.records import Event

ENCODING = "f32le-base64"
BATCH = 500
MAX_REPORTED_ERRORS = 20
OnError = Literal["abort", "skip"]
Progress = Callable[[int], None]  # called with the bytes (import) or events (export) just handled


class EmbeddingRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: StrictStr
    dim: StrictInt
    encoding: Literal["f32le-base64"]
    data: StrictStr


class EventRecord(BaseModel):
    """One line of an export file, every value held to the rules `remember` applies."""

    model_config = ConfigDict(extra="forbid", strict=True)

    id: EventId
    namespace: Namespace
    session: SessionId
    position: Annotated[int, Field(ge=0)]
    timestamp: Timestamp
    text: Text
    metadata: Metadata = {}
    embedding: EmbeddingRecord | None = None
    supersedes: list[EventId] = []

    def event(self) -> Event:
        return Event(
            0, self.id, self.namespace, self.session, self.position, self.timestamp, self.text, self.metadata
        )


def _encode_vector(model_id: str, vector: Vectors) -> dict[str, Any]:
    data = base64.b64encode(np.ascontiguousarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return {"model": model_id, "dim": int(vector.shape[0]), "encoding": ENCODING, "data": data}


def _decode_vector(embedding: EmbeddingRecord) -> Vectors:
    try:
        raw = base64.b64decode(embedding.data, validate=True)
    except binascii.Error as exc:
        raise InvalidInput(f"embedding.data is not base64: {exc}") from None
    if len(raw) != 4 * embedding.dim:
        raise InvalidInput(
            f"embedding.data holds {len(raw)} bytes; dim {embedding.dim} needs {4 * embedding.dim}"
        )
    vector = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    norm = float(np.linalg.norm(vector))
    if not np.isfinite(vector).all() or norm == 0.0:
        raise InvalidInput("embedding.data is not a finite, non-zero vector")
    return vector / norm


@dataclass(frozen=True, slots=True)
class Line:
    event: Event
    embedding: EmbeddingRecord | None
    supersedes: tuple[str, ...]


def _parse(line: str, max_text_chars: int) -> Line:
    try:
        raw = json.loads(line)
    except ValueError as exc:
        raise InvalidInput(f"not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise InvalidInput("a line must be a JSON object")
    record = parse(EventRecord, raw, max_text_chars)
    if record.embedding is not None:
        _decode_vector(record.embedding)  # check it now, so that storing cannot fail on it
    if record.id in record.supersedes:
        raise InvalidInput(f"an episode cannot supersede itself ({record.id})")
    return Line(record.event(), record.embedding, tuple(dict.fromkeys(record.supersedes)))


# -- export -----------------------------------------------------------------------------------


def export_jsonl(
    service: MemoryService,
    out: Path,
    namespace: str | None = None,
    embeddings: bool = True,
    progress: Progress | None = None,
) -> int:
    """Write every event (of `namespace`, or all) to `out`, in the order they were stored.

    The file appears whole or not at all: it is written beside `out` and renamed when complete.
    """
    model_id = service.model_id
    count = 0
    with atomic_writer(out, "w") as fh:
        for events, vectors in service.export_events(namespace):
            replaced = _replaced(service, events)
            for event, vector in zip(events, vectors, strict=True):
                line: dict[str, Any] = {
                    "id": event.id,
                    "namespace": event.namespace,
                    "session": event.session,
                    "position": event.position,
                    "timestamp": event.timestamp,
                    "text": event.text,
                    "metadata": event.metadata,
                }
                if event.id in replaced:
                    line["supersedes"] = replaced[event.id]
                if embeddings:
                    line["embedding"] = _encode_vector(model_id, vector)
                fh.write(json.dumps(line, ensure_ascii=False) + "\n")
            count += len(events)
            if progress:
                progress(len(events))
    return count


def _replaced(service: MemoryService, events: list[Event]) -> dict[str, list[str]]:
    """new id -> the ids it superseded, for the events of one batch."""
    out: dict[str, list[str]] = {}
    by_namespace: dict[str, list[str]] = {}
    for event in events:
        by_namespace.setdefault(event.namespace, []).append(event.id)
    for namespace, ids in by_namespace.items():
        wanted = set(ids)
        for old, new in service.links(namespace, ids):
            if new in wanted:
                out.setdefault(new, []).append(old)
    return out


# -- import -----------------------------------------------------------------------------------


@dataclass(slots=True)
class ImportReport:
    lines: int = 0  # non-blank lines read
    imported: int = 0
    already_present: int = 0  # same id already in the store: skipped (import is idempotent)
    forgotten: int = 0  # forgotten in this store since: not brought back (the log keeps tombstones)
    reembedded: int = 0  # no embedding, or one from another model: embedded again here
    skipped: int = 0  # malformed lines left out (on_error="skip")
    errors: list[tuple[int, str]] = field(default_factory=list)  # (line number, problem), first ones
    error_count: int = 0
    aborted: bool = False

    def add_error(self, line: int, problem: str) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append((line, problem))


def _lines(path: Path) -> Iterator[tuple[int, str | None, int]]:
    """(line number, text or None if not UTF-8, size in bytes) of each non-blank line."""
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]  # a UTF-8 byte order mark, as some editors write: not part of the JSON
            try:
                yield number, raw.decode("utf-8"), len(raw)
            except UnicodeDecodeError:
                yield number, None, len(raw)


def _check_file(
    service: MemoryService, path: Path, report: ImportReport, progress: Progress | None
) -> set[int]:
    """First pass: every problem a line has, against the file and the store. Returns the bad line numbers."""
    bad: set[int] = set()
    first_line_of_id: dict[str, int] = {}
    holder_of_place: dict[tuple[str, str, int], str] = {}
    pending: list[tuple[int, Event]] = []

    def check_against_store() -> None:
        present, taken = service.existing(
            [e.id for _, e in pending], [(e.namespace, e.session, e.position) for _, e in pending]
        )
        for number, event in pending:
            place = (event.namespace, event.session, event.position)
            holder = taken.get(place)
            if event.id not in present and holder is not None and holder != event.id:
                bad.add(number)
                report.add_error(
                    number,
                    f"position {event.position} of session {event.session!r} is held by another event "
                    f"({holder})",
                )
        pending.clear()

    for number, line, size in _lines(path):
        report.lines += 1
        try:
            if line is None:
                raise InvalidInput("not valid UTF-8")
            event = _parse(line, service.settings.max_text_chars).event
            place = (event.namespace, event.session, event.position)
            if event.id in first_line_of_id:
                raise InvalidInput(f"id {event.id} appears already on line {first_line_of_id[event.id]}")
            if holder_of_place.get(place, event.id) != event.id:
                raise InvalidInput(
                    f"position {event.position} of session {event.session!r} is also given to another id "
                    "earlier in the file"
                )
            first_line_of_id[event.id] = number
            holder_of_place[place] = event.id
            pending.append((number, event))
            if len(pending) >= BATCH:
                check_against_store()
        except (InvalidInput, ValueError) as exc:
            bad.add(number)
            report.add_error(number, str(exc))
        if progress:
            progress(size)
    check_against_store()
    return bad


def import_jsonl(
    service: MemoryService, path: Path, on_error: OnError = "abort", progress: Progress | None = None
) -> ImportReport:
    """Import an export file. With on_error="abort", any malformed line means nothing is written.

    Stored in transactions of up to 500 events; an interrupted import is completed by running it again.
    """
    report = ImportReport()
    bad = _check_file(service, path, report, progress)
    if bad and on_error == "abort":
        report.aborted = True
        return report
    report.skipped = len(bad)
    batch: list[Line] = []
    for number, line, _ in _lines(path):
        if number in bad or line is None:
            continue
        batch.append(_parse(line, service.settings.max_text_chars))
        if len(batch) >= BATCH:
            _store(service, batch, report)
            batch = []
    if batch:
        _store(service, batch, report)
    return report


def _store(service: MemoryService, batch: list[Line], report: ImportReport) -> None:
    ids = [line.event.id for line in batch]
    present, _ = service.existing(ids, [])
    forgotten = service.forgotten(ids)
    new = [line for line in batch if line.event.id not in present and line.event.id not in forgotten]
    report.already_present += len(present)
    report.forgotten += len(forgotten - present)
    if not new:
        return
    model_id, dim = service.model_id, service.dim
    reuse = [
        line.embedding is not None and line.embedding.model == model_id and line.embedding.dim == dim
        for line in new
    ]
    vectors = np.zeros((len(new), dim), dtype=np.float32)
    for row, (line, ok) in enumerate(zip(new, reuse, strict=True)):
        if ok:
            assert line.embedding is not None
            vectors[row] = _decode_vector(line.embedding)
    again = [row for row, ok in enumerate(reuse) if not ok]
    if again:
        vectors[again] = service.embed_episodes([new[row].event.text for row in again])
    links = [(line.event.id, old) for line in new for old in line.supersedes]
    service.import_events([line.event for line in new], vectors, links)
    report.imported += len(new)
    report.reembedded += len(again)
