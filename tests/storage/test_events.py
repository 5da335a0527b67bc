from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from emx_mcp.errors import StoreMismatch
from emx_mcp.storage.events import EventLog
from emx_mcp.storage.records import NewEvent


def vecs(n: int, dim: int = 4) -> np.ndarray:
    return np.eye(dim, dtype=np.float32)[np.arange(n) % dim]


def item(text: str) -> NewEvent:
    return NewEvent(text=text, timestamp="2026-01-01T00:00:00.000000Z", metadata={"k": text})


def test_append_assigns_increasing_seq_and_positions(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "e.db")
    first, _ = log.append("default", "s1", [item("a"), item("b")], vecs(2))
    second, _ = log.append("default", "s1", [item("c")], vecs(1))
    other, _ = log.append("default", "s2", [item("d")], vecs(1))
    assert [e.position for e in first + second] == [0, 1, 2]
    assert other[0].position == 0
    seqs = [e.seq for e in first + second + other]
    assert seqs == sorted(seqs) and len(set(seqs)) == 4
    assert log.high_water() == seqs[-1]
    assert log.count() == 4 and log.count("default", up_to_seq=seqs[1]) == 2
    assert log.by_id(first[1].id) == first[1]
    log.close()


def test_committed_rows_are_visible_to_another_connection(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "e.db")
    log.append("ns", "s", [item("hello")], vecs(1))
    other = sqlite3.connect(tmp_path / "e.db")
    assert other.execute("SELECT text, metadata FROM events").fetchall() == [("hello", '{"k": "hello"}')]
    assert other.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    other.close()
    log.close()


def test_vectors_after_returns_embeddings_in_seq_order(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "e.db")
    stored, _ = log.append("a", "s", [item(str(i)) for i in range(5)], vecs(5))
    chunks = list(log.vectors_after(stored[1].seq, dim=4, batch=2))
    seqs = np.concatenate([c[0] for c in chunks])
    assert seqs.tolist() == [e.seq for e in stored[2:]]
    assert np.array_equal(np.concatenate([c[2] for c in chunks]), vecs(5)[2:])
    log.close()


def test_failed_append_writes_nothing(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "e.db")
    with pytest.raises(ValueError):
        log.append("a", "s", [item("x"), item("y")], vecs(1))
    with pytest.raises(TypeError):
        log.append("a", "s", [item("x"), NewEvent("y", "t", {"bad": object()})], vecs(2))
    assert log.count() == 0
    log.append("a", "s", [item("z")], vecs(1))
    assert log.count() == 1
    log.close()


def test_model_binding_refuses_another_model(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "e.db")
    log.bind_model("model-a", 384)
    log.bind_model("model-a", 384)
    with pytest.raises(StoreMismatch, match="model-a"):
        log.bind_model("model-b", 384)
    assert log.bound_model() == ("model-a", 384)
    log.close()


def test_wal_and_full_synchronous_are_set(tmp_path: Path) -> None:
    """The settings under which SQLite fsyncs the log at every commit; a power cut itself is not staged."""
    log = EventLog(tmp_path / "events.sqlite3")
    ((mode,),) = log.pragma("PRAGMA journal_mode")
    ((sync,),) = log.pragma("PRAGMA synchronous")
    assert mode == "wal" and sync == 2  # 2 = FULL: the WAL is fsynced at every commit
    log.close()


def test_insert_keeps_ids_and_places_and_refuses_a_taken_one(tmp_path: Path) -> None:
    """Import's store step: ids and positions as given; a collision (another writer got there
    between import's check and its store) raises PlaceTaken and writes nothing of the batch."""
    from emx_mcp.errors import PlaceTaken
    from emx_mcp.storage.records import Event

    log = EventLog(tmp_path / "e.db")
    (held,), _ = log.append("default", "s", [item("already here")], vecs(1))
    fresh = Event(0, "imported-1", "default", "s", 5, "2026-01-01T00:00:00.000000Z", "x", {})
    clash = Event(0, "imported-2", "default", "s", held.position, "2026-01-01T00:00:00.000000Z", "y", {})
    (stored,) = log.insert([fresh], vecs(1))
    assert (stored.id, stored.position) == ("imported-1", 5) and stored.seq > held.seq
    same_id = Event(0, "imported-1", "default", "s", 9, "2026-01-01T00:00:00.000000Z", "z", {})
    for batch in (
        [dataclasses.replace(fresh, id="imported-3", position=6), clash],
        [same_id],
    ):
        with pytest.raises(PlaceTaken, match="already taken"):
            log.insert(batch, vecs(len(batch)))
    assert log.count() == 2 and log.total() == 2 and log.by_id("imported-3") is None
    log.close()
