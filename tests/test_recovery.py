"""Starting again after things went wrong on disk.

The snapshot cases (truncated, garbage, deleted, foreign, older than the log, older than a
forget) are in test_service.py; these are the remaining ones of DESIGN invariant 1 and 6.
"""

from __future__ import annotations

import sqlite3

import pytest

from emx_mcp.config import Settings
from emx_mcp.errors import StorageError
from emx_mcp.service import MemoryService
from emx_mcp.storage import snapshots
from emx_mcp.storage.embedded import EmbeddedStore
from tests.helpers import health, open_with_store, recall, remember

NOTES = [f"entry {i} about subject {i % 7} and place {i % 11}" for i in range(300)]


def open_store(settings: Settings) -> tuple[MemoryService, EmbeddedStore]:
    return open_with_store(settings)


def test_leftover_temp_file_of_an_interrupted_snapshot_is_removed(settings: Settings) -> None:
    first, _ = open_store(settings)
    ids = [remember(first, n, session="s").pop().event.id for n in NOTES[:20]]
    first.close()
    # As if a process died in the middle of writing a newer snapshot: half a file beside the
    # real one, under the name write_atomic uses.
    real = settings.index_dir / snapshots.file_name("default")
    leftover = settings.index_dir / f".{real.name}.4242.1234.tmp"
    leftover.write_bytes(real.read_bytes()[:100])
    again, store = open_store(settings)
    assert not leftover.exists()
    assert len(store) == 20 and recall(again, NOTES[5], k=1)[0].event.id == ids[5]
    again.close()


def test_integrity_check_runs_in_the_background_and_reports_damage(settings: Settings) -> None:
    first, _ = open_store(settings)
    for note in NOTES:
        remember(first, note, session="s", timestamp="2026-05-01T00:00:00Z")
    assert first.wait_for_integrity_check(60) == "ok"
    assert health(first).integrity == "ok"
    first.close()
    # Damage the index that enforces unique ids: opening and recall do not read it, quick_check does.
    with sqlite3.connect(settings.db_path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        indexes = conn.execute("SELECT name, rootpage FROM sqlite_master WHERE type = 'index'").fetchall()
        (root,) = [
            r for name, r in indexes if [c[2] for c in conn.execute(f"PRAGMA index_info('{name}')")] == ["id"]
        ]
        (page_size,) = conn.execute("PRAGMA page_size").fetchone()
    with settings.db_path.open("r+b") as fh:
        fh.seek((root - 1) * page_size + 8)
        fh.write(b"\xa5" * (page_size - 8))
    damaged, _ = open_store(settings)  # opening does not wait for the check
    verdict = damaged.wait_for_integrity_check(60)
    assert verdict.startswith("failed: ")
    report = health(damaged)
    assert report.status == "degraded" and report.integrity == verdict
    assert any("integrity check failed" in r for r in report.reasons)
    assert recall(damaged, NOTES[3], k=1)[0].event.text == NOTES[3]  # what can still be read, is
    with pytest.raises(StorageError, match="malformed"):  # writing through the damage is refused
        remember(damaged, "one more entry")
    damaged.close()


def test_a_process_never_replaces_a_newer_snapshot_with_an_older_one(settings: Settings) -> None:
    (behind, behind_store), (ahead, _) = open_store(settings), open_store(settings)
    for note in NOTES[:10]:
        remember(behind, note, session="s")
    for note in NOTES[10:30]:
        remember(ahead, note, session="t")
    ahead.snapshot()  # it has caught up with everything: cursors at 30
    path = settings.index_dir / snapshots.file_name("default")
    newest = path.read_bytes()
    assert (snapshots.header(path) or {})["last_seq"] == 30
    # `behind` has seen only its own 10 events; its snapshot would be older.
    index = behind_store.index("default")
    assert index is not None and index.last_seq == 10
    behind_store.snapshot(every_namespace=True)
    assert path.read_bytes() == newest
    ahead.close()
    behind.close()
    assert (snapshots.header(path) or {})["last_seq"] >= 30
    reopened, store = open_store(settings)
    assert len(store) == 30
    reopened.close()
