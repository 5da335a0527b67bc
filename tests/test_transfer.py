"""Export and import as JSON lines, through the service with the real SQLite and FAISS."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from emx_mcp.config import Settings
from emx_mcp.embedding import HashingEncoder, Vectors
from emx_mcp.errors import CapacityExceeded, StorageError
from emx_mcp.service import MemoryService
from emx_mcp.storage.embedded import EmbeddedStore
from emx_mcp.transfer import export_jsonl, import_jsonl
from tests.helpers import forget, health, open_with_store, recall, remember

NOTES = [
    "The staging database moved to db-7 after the disk filled up.",
    "Keys for the payment API rotate every ninety days.",
    "The design review for the search page is on Tuesday.",
    "Backups are verified by restoring one table every week.",
    "The mobile build needs Xcode 17 on the CI runners.",
    "Lunch on Fridays is pizza in the big meeting room.",
]


class CountingEncoder(HashingEncoder):
    def __init__(self, model_id: str = "hashing-bow") -> None:
        super().__init__(dim=64, model_id=model_id)
        self.encoded = 0

    def encode(self, texts: Sequence[str]) -> Vectors:
        self.encoded += len(texts)
        return super().encode(texts)


Opener = Callable[..., MemoryService]


@pytest.fixture
def open_store(tmp_path: Path) -> Iterator[Opener]:
    """Opens stores in folders of tmp_path by name; each is closed after the test, whatever happens."""
    opened: list[MemoryService] = []

    def open_(name: str, encoder: HashingEncoder | None = None, **settings: Any) -> MemoryService:
        service, store = open_with_store(Settings(data_dir=tmp_path / name, **settings), encoder)
        STORES[service] = store
        opened.append(service)
        return service

    yield open_
    for service in opened:
        service.close()
        STORES.pop(service)


# The store under each service the fixture opened, to count what its index holds.
STORES: dict[MemoryService, EmbeddedStore] = {}


def indexed(service: MemoryService) -> int:
    return len(STORES[service])


@pytest.fixture
def source(open_store: Opener) -> MemoryService:
    """Store "a": the notes in two sessions, and one event in namespace "other"."""
    service = open_store("a")
    for i, note in enumerate(NOTES):
        remember(
            service, note, session=f"s{i % 2}", metadata={"n": i}, timestamp=f"2026-0{1 + i}-01T10:00:00Z"
        )
    remember(service, NOTES[0] + " Another topic entirely.", namespace="other")
    return service


def recall_ids(service: MemoryService, namespace: str = "default") -> list[list[str]]:
    return [[h.event.id for h in recall(service, q, k=3, namespace=namespace)] for q in NOTES]


def test_export_then_import_into_an_empty_store_recalls_the_same(
    tmp_path: Path, source: MemoryService, open_store: Opener
) -> None:
    out = tmp_path / "memories.jsonl"
    assert export_jsonl(source, out) == len(NOTES) + 1
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert {line["namespace"] for line in lines} == {"default", "other"}
    assert set(lines[0]) == {
        "id",
        "namespace",
        "session",
        "position",
        "timestamp",
        "text",
        "metadata",
        "embedding",
    }
    assert lines[0]["embedding"]["model"] == "hashing-bow-64" and lines[0]["embedding"]["dim"] == 64

    encoder = CountingEncoder()
    target = open_store("b", encoder)
    report = import_jsonl(target, out)
    assert (report.imported, report.already_present, report.error_count) == (len(NOTES) + 1, 0, 0)
    assert encoder.encoded == 0, "embeddings of the same model are reused, not recomputed"
    assert recall_ids(target) == recall_ids(source)
    assert recall_ids(target, "other") == recall_ids(source, "other")
    for a, b in zip(recall(source, NOTES[2], k=6), recall(target, NOTES[2], k=6), strict=True):
        assert (a.event.id, a.event.text, a.event.session, a.event.position) == (
            b.event.id,
            b.event.text,
            b.event.session,
            b.event.position,
        )
        assert (a.event.timestamp, a.event.metadata, a.via) == (b.event.timestamp, b.event.metadata, b.via)
        assert a.score == pytest.approx(b.score, abs=1e-6)
    assert health(target).status == "ok"
    # Appending to an imported session continues after its last position.
    assert remember(target, "later note", session="s0").pop().event.position == 3


def test_import_is_idempotent_by_id(tmp_path: Path, source: MemoryService, open_store: Opener) -> None:
    out = tmp_path / "m.jsonl"
    export_jsonl(source, out)
    target = open_store("b")
    assert import_jsonl(target, out).imported == len(NOTES) + 1
    again = import_jsonl(target, out)
    assert (again.imported, again.already_present) == (0, len(NOTES) + 1)
    assert target.count() == len(NOTES) + 1 and indexed(target) == len(NOTES) + 1


def test_namespace_filter_and_export_without_embeddings(
    tmp_path: Path, source: MemoryService, open_store: Opener
) -> None:
    out = tmp_path / "m.jsonl"
    assert export_jsonl(source, out, namespace="other", embeddings=False) == 1
    (line,) = [json.loads(x) for x in out.read_text().splitlines()]
    assert line["namespace"] == "other" and "embedding" not in line
    encoder = CountingEncoder()
    target = open_store("b", encoder)
    report = import_jsonl(target, out)
    assert report.imported == report.reembedded == 1 and encoder.encoded == 2  # two sentences
    assert recall(target, line["text"], namespace="other")[0].event.id == line["id"]


def test_embeddings_of_another_model_are_recomputed(
    tmp_path: Path, source: MemoryService, open_store: Opener
) -> None:
    out = tmp_path / "m.jsonl"
    export_jsonl(source, out)
    encoder = CountingEncoder(model_id="another-model")
    target = open_store("b", encoder)
    report = import_jsonl(target, out)
    assert report.imported == report.reembedded == len(NOTES) + 1 and encoder.encoded >= len(NOTES) + 1
    # The vectors stored are the target model's, as `remember` would compute them.
    _, vectors = STORES[target].log.vectors_of(np.arange(1, 3), 64)
    expected = target.embed_episodes([NOTES[0], NOTES[1]])
    assert np.allclose(vectors, expected, atol=1e-6)


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def good_line(i: int, **changes: object) -> str:
    record = {
        "id": f"evt-{i}",
        "namespace": "default",
        "session": "imported",
        "position": i,
        "timestamp": "2026-03-01T10:00:00Z",
        "text": f"Imported note number {i} about topic {i * 7}.",
        "metadata": {"i": i},
        **changes,
    }
    return json.dumps(record)


MALFORMED = {
    3: "{not json",
    5: json.dumps({"id": "x"}),  # fields missing
    7: good_line(7, text=""),
    9: good_line(9, timestamp="yesterday"),
    11: good_line(11, position=-1),
    13: good_line(13, metadata=[1, 2]),
    15: good_line(15, namespace="a/b"),
    17: good_line(17, extra="field"),
    19: good_line(19, embedding={"model": "m", "dim": 4, "encoding": "f32le-base64", "data": "@@@"}),
    21: good_line(1),  # the id of line 2 again
}


def mixed_file(path: Path) -> Path:
    lines = [MALFORMED.get(n, good_line(n - 1)) for n in range(1, 24)]
    return write_lines(path, lines)


def test_malformed_lines_abort_everything_and_are_reported_by_line(
    tmp_path: Path, open_store: Opener
) -> None:
    target = open_store("b")
    report = import_jsonl(target, mixed_file(tmp_path / "bad.jsonl"))
    assert report.aborted and report.imported == 0
    assert [line for line, _ in report.errors] == sorted(MALFORMED)
    problems = dict(report.errors)
    assert "empty" in problems[7] and "ISO 8601" in problems[9] and "position" in problems[11]
    assert "namespace" in problems[15] and "extra" in problems[17] and "base64" in problems[19]
    assert "line 2" in problems[21]
    assert target.count() == 0 and indexed(target) == 0


def test_skip_imports_every_good_line(tmp_path: Path, open_store: Opener) -> None:
    target = open_store("b")
    report = import_jsonl(target, mixed_file(tmp_path / "bad.jsonl"), on_error="skip")
    assert not report.aborted and report.skipped == len(MALFORMED)
    assert report.imported == 23 - len(MALFORMED) == target.count() == indexed(target)
    assert recall(target, "Imported note number 1 about topic 7.", k=1)[0].event.id == "evt-1"


def test_non_utf8_line_is_reported(tmp_path: Path, open_store: Opener) -> None:
    path = tmp_path / "bin.jsonl"
    path.write_bytes(good_line(0).encode() + b"\n\xff\xfe broken\n" + good_line(1).encode() + b"\n\n")
    target = open_store("b")
    report = import_jsonl(target, path)
    assert report.aborted and report.errors == [(2, "not valid UTF-8")] and report.lines == 3


def test_a_place_held_by_another_event_is_an_error(tmp_path: Path, open_store: Opener) -> None:
    target = open_store("b")
    held = remember(target, "already here", session="imported").pop().event  # position 0
    report = import_jsonl(target, write_lines(tmp_path / "c.jsonl", [good_line(0), good_line(1)]))
    assert report.aborted and report.errors[0][0] == 1 and held.id in report.errors[0][1]
    assert target.count() == 1


def test_capacity_limit_applies_to_imports(tmp_path: Path, open_store: Opener) -> None:
    target = open_store("b", max_events=3)
    with pytest.raises(CapacityExceeded):
        import_jsonl(target, write_lines(tmp_path / "c.jsonl", [good_line(i) for i in range(5)]))
    assert target.count() == 0


def test_export_replaces_the_file_only_when_complete(tmp_path: Path, source: MemoryService) -> None:
    out = tmp_path / "m.jsonl"
    out.write_text("previous export\n")
    export_jsonl(source, out)
    assert len(out.read_text().splitlines()) == len(NOTES) + 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "m.jsonl"]


def test_an_export_that_fails_midway_leaves_the_previous_file_whole(
    tmp_path: Path, source: MemoryService, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "m.jsonl"
    out.write_text("previous export\n")
    real = source.export_events

    def fails_after_one_batch(namespace: str | None) -> Iterator[Any]:
        yield next(iter(real(namespace)))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(source, "export_events", fails_after_one_batch)
    with pytest.raises(OSError, match="No space left"):
        export_jsonl(source, out)
    assert out.read_text() == "previous export\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "m.jsonl"], "no partial file is left"


def test_an_interrupted_import_is_completed_by_running_it_again(tmp_path: Path, open_store: Opener) -> None:
    path = write_lines(tmp_path / "big.jsonl", [good_line(i) for i in range(1200)])  # three transactions
    target = open_store("b")
    commits = []

    def disk_fails_on_the_second_batch() -> None:
        commits.append(1)
        if len(commits) == 2:
            raise OSError(5, "Input/output error")

    STORES[target].log.before_commit = disk_fails_on_the_second_batch
    with pytest.raises(StorageError):
        import_jsonl(target, path)
    STORES[target].log.before_commit = None
    assert target.count() == 500, "the first batch was stored, the failing one not at all"
    report = import_jsonl(target, path)
    assert (report.imported, report.already_present) == (700, 500)
    assert target.count() == indexed(target) == 1200
    assert recall(target, "Imported note number 1199 about topic 8393.", k=1)[0].event.id == "evt-1199"


def test_importing_an_older_export_does_not_bring_back_what_was_forgotten(
    tmp_path: Path, source: MemoryService
) -> None:
    out = tmp_path / "m.jsonl"
    export_jsonl(source, out)
    gone = [h.event.id for h in recall(source, NOTES[2], k=2, contiguity=0)]
    forget(source, ids=gone, confirm=True)
    report = import_jsonl(source, out)
    assert (report.imported, report.forgotten, report.already_present) == (0, 2, len(NOTES) - 1)
    assert source.count() == len(NOTES) + 1 - 2
    assert all(h.event.id not in gone for h in recall(source, NOTES[2], k=10))
