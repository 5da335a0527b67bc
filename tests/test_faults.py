"""Write failures: a full disk, a read-only log, a snapshot that cannot be written.

The faults are SQLite's own: `PRAGMA max_page_count` capped at the current size makes SQLite
fail exactly as on a full disk ("database or disk is full"), and `PRAGMA query_only` as on a
read-only file. Each time the tool says what happened and what to do, nothing of the failed call
is visible, and once the fault clears the server works and nothing earlier is lost.
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from emx_mcp import service as service_module
from emx_mcp.config import Settings
from emx_mcp.embedding import HashingEncoder
from emx_mcp.errors import StorageError
from emx_mcp.server import build_server
from emx_mcp.service import MemoryService
from tests.helpers import call, error_text

pytestmark = pytest.mark.anyio

NOTES = [f"note {i}: the {w} service runs on host {i}" for i, w in enumerate("abcdefgh")]
LONG = (
    "The database migration failed on Monday. The database schema had a missing index. "
    "We rebuilt the database index overnight. Lunch options near the office include pizza. "
    "The pizza place closes early on Fridays. Sushi is another lunch option nearby."
)


def fill(service: MemoryService) -> list[str]:
    return [service.remember(n, session="s").pop().event.id for n in NOTES]


def assert_everything_there(service: MemoryService, ids: list[str]) -> None:
    assert service.event_log.count() == len(service) == len(ids)
    for note, event_id in zip(NOTES, ids, strict=True):
        assert service.recall(note, k=1, contiguity=0)[0].event.id == event_id


async def test_full_disk(service: MemoryService, client: Client) -> None:
    ids = fill(service)
    conn = service.event_log._conn
    (pages,) = conn.execute("PRAGMA page_count").fetchone()
    conn.execute(f"PRAGMA max_page_count = {pages}")
    big = LONG * 40  # needs new pages; several episodes in one transaction
    message = await error_text(client, "remember", text=big, session="s")
    assert "database or disk is full" in message and "nothing was stored" in message
    assert "free some disk space" in message
    with pytest.raises(StorageError):
        service.remember(big)
    assert_everything_there(service, ids)  # no partial episode, count and index unchanged
    assert service.event_log.total() == len(ids)
    assert (await call(client, "recall", query="anything"))["results"]  # reads still work
    conn.execute("PRAGMA max_page_count = 1073741823")  # the disk has room again
    stored = (await call(client, "remember", text=big, session="s"))["events"]
    assert len(stored) >= 2 and service.event_log.count() == len(ids) + len(stored)
    assert service.health()["status"] == "ok"


async def test_read_only_event_log(service: MemoryService, client: Client) -> None:
    ids = fill(service)
    service.event_log._conn.execute("PRAGMA query_only = ON")
    message = await error_text(client, "remember", text="one more")
    assert "readonly" in message and "writable" in message and "nothing was stored" in message
    message = await error_text(client, "forget", ids=[ids[0]], confirm=True)
    assert "readonly" in message
    assert_everything_there(service, ids)
    service.event_log._conn.execute("PRAGMA query_only = OFF")
    assert (await call(client, "forget", ids=[ids[0]], confirm=True))["removed"] == 1
    assert (await call(client, "remember", text="one more"))["events"]


def test_a_failure_inside_a_multi_episode_remember_leaves_nothing(
    service: MemoryService, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = fill(service)
    log = service.event_log
    real_insert = log._insert

    def fail_after_first_row(events: Any, vectors: Any) -> Any:
        real_insert(events[:1], vectors[:1])  # the first episode's row is written ...
        raise OSError(errno.EIO, "Input/output error")  # ... then the disk fails

    monkeypatch.setattr(log, "_insert", fail_after_first_row)
    with pytest.raises(StorageError, match=r"Input/output error.*nothing was stored"):
        service.remember(LONG, session="s")
    monkeypatch.undo()
    assert_everything_there(service, ids)
    assert service.event_log.total() == len(ids)
    assert len(service.remember(LONG, session="s")) >= 2


def test_snapshot_that_cannot_be_written(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    service = MemoryService(settings, HashingEncoder(dim=64))
    service.open()
    ids = fill(service)

    def disk_full(path: Path, data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(service_module, "write_atomic", disk_full)
    with pytest.raises(OSError):
        service.snapshot()
    health = service.health()
    assert health["status"] == "warning"
    assert any("snapshot could not be written" in r and "No space left" in r for r in health["reasons"])
    service.remember("remembered while snapshots fail")  # the log is the truth: writes go on
    service.close()  # a failing final snapshot does not stop the close
    assert not list(settings.index_dir.glob("*.emxidx"))
    monkeypatch.undo()
    again = MemoryService(settings, HashingEncoder(dim=64))
    again.open()  # rebuilt from the log
    assert len(again) == len(ids) + 1
    again.snapshot()
    assert again.health()["status"] == "ok" and list(settings.index_dir.glob("*.emxidx"))
    again.close()


async def test_storage_errors_reach_the_client_through_the_real_server(tmp_path: Path) -> None:
    service = MemoryService(Settings(data_dir=tmp_path), HashingEncoder(dim=64))
    service.open()
    service.event_log._conn.execute("PRAGMA query_only = ON")
    async with Client(build_server(service)) as client:
        message = await error_text(client, "remember", text="x")
    assert message.startswith("Error executing tool remember: the event log ")
    service.event_log._conn.execute("PRAGMA query_only = OFF")
    service.close()
