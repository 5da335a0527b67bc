"""Write failures: a full disk, a read-only log, a snapshot that cannot be written.

The faults are SQLite's own: `PRAGMA max_page_count` capped at the current size makes SQLite
fail exactly as on a full disk ("database or disk is full"), and `PRAGMA query_only` as on a
read-only file. Each time the tool says what happened and what to do, nothing of the failed call
is visible, and once the fault clears the server works and nothing earlier is lost.
"""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from mcp import Client

from emx_mcp.config import Settings
from emx_mcp.errors import StorageError
from emx_mcp.server import build_server
from emx_mcp.service import MemoryService
from emx_mcp.storage import snapshots
from emx_mcp.storage.embedded import EmbeddedStore
from tests.helpers import call, error_text, health, open_with_store, recall, remember

pytestmark = pytest.mark.anyio

NOTES = [f"note {i}: the {w} service runs on host {i}" for i, w in enumerate("abcdefgh")]
LONG = (
    "The database migration failed on Monday. The database schema had a missing index. "
    "We rebuilt the database index overnight. Lunch options near the office include pizza. "
    "The pizza place closes early on Fridays. Sushi is another lunch option nearby."
)


def fill(service: MemoryService) -> list[str]:
    return [remember(service, n, session="s").pop().event.id for n in NOTES]


def assert_everything_there(service: MemoryService, store: EmbeddedStore, ids: list[str]) -> None:
    assert service.count() == len(store) == len(ids)
    for note, event_id in zip(NOTES, ids, strict=True):
        assert recall(service, note, k=1, contiguity=0)[0].event.id == event_id


async def test_full_disk(service: MemoryService, store: EmbeddedStore, client: Client) -> None:
    ids = fill(service)
    ((pages,),) = store.log.pragma("PRAGMA page_count")
    store.log.pragma(f"PRAGMA max_page_count = {pages}")
    big = LONG * 40  # needs new pages; several episodes in one transaction
    message = await error_text(client, "remember", text=big, session="s")
    assert "database or disk is full" in message and "nothing was stored" in message
    assert "free some disk space" in message
    with pytest.raises(StorageError):
        remember(service, big)
    assert_everything_there(service, store, ids)  # no partial episode, count and index unchanged
    assert store.total() == len(ids)
    assert (await call(client, "recall", query="anything"))["results"]  # reads still work
    store.log.pragma("PRAGMA max_page_count = 1073741823")  # the disk has room again
    stored = (await call(client, "remember", text=big, session="s"))["stored"]
    assert stored >= 2 and service.count() == len(ids) + stored
    assert health(service).status == "ok"


async def test_read_only_event_log(service: MemoryService, store: EmbeddedStore, client: Client) -> None:
    ids = fill(service)
    store.log.pragma("PRAGMA query_only = ON")
    message = await error_text(client, "remember", text="one more")
    assert "readonly" in message and "writable" in message and "nothing was stored" in message
    message = await error_text(client, "forget", ids=[ids[0]], confirm=True)
    assert "readonly" in message
    assert_everything_there(service, store, ids)
    store.log.pragma("PRAGMA query_only = OFF")
    assert (await call(client, "forget", ids=[ids[0]], confirm=True))["removed"] == 1
    assert (await call(client, "remember", text="one more"))["stored"] == 1


def test_a_failure_inside_a_multi_episode_remember_leaves_nothing(
    service: MemoryService, store: EmbeddedStore
) -> None:
    ids = fill(service)
    rows_before_failure: list[int] = []

    def disk_fails_before_commit() -> None:
        # Inside the transaction every episode's row is written; then the disk fails.
        rows_before_failure.append(store.log.count())
        raise OSError(errno.EIO, "Input/output error")

    store.log.before_commit = disk_fails_before_commit
    with pytest.raises(StorageError, match=r"Input/output error.*nothing was stored"):
        remember(service, LONG, session="s")
    store.log.before_commit = None
    assert rows_before_failure[0] >= len(ids) + 2, "the failure came after the episodes' rows"
    assert_everything_there(service, store, ids)
    assert store.total() == len(ids)
    assert len(remember(service, LONG, session="s")) >= 2


def test_snapshot_that_cannot_be_written(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    service, _ = open_with_store(settings)
    ids = fill(service)

    def disk_full(path: Path, *rest: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(snapshots, "write", disk_full)
    with pytest.raises(OSError):
        service.snapshot()
    report = health(service)
    assert report.status == "warning"
    assert any("snapshot could not be written" in r and "No space left" in r for r in report.reasons)
    remember(service, "remembered while snapshots fail")  # the log is the truth: writes go on
    service.close()  # a failing final snapshot does not stop the close
    assert not list(settings.index_dir.glob("*.emxidx"))
    monkeypatch.undo()
    again, store = open_with_store(settings)  # rebuilt from the log
    assert len(store) == len(ids) + 1
    again.snapshot()
    assert health(again).status == "ok" and list(settings.index_dir.glob("*.emxidx"))
    again.close()


async def test_storage_errors_reach_the_client_through_the_real_server(tmp_path: Path) -> None:
    service, store = open_with_store(Settings(data_dir=tmp_path))
    store.log.pragma("PRAGMA query_only = ON")
    async with Client(build_server(service)) as client:
        message = await error_text(client, "remember", text="x")
    assert message.startswith("Error executing tool remember: the event log ")
    store.log.pragma("PRAGMA query_only = OFF")
    service.close()
