"""Derived files prove whose they are: what recall returns never depends on a file that is not this log's.

Each case stages what an operator or a file system can do to the index snapshots, restarts, and
asks through the real MCP server (the SDK's in-memory client).
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
import pytest
from mcp import Client

from emx_mcp.config import Settings
from emx_mcp.server import build_server
from emx_mcp.service import MemoryService
from emx_mcp.storage import snapshots
from emx_mcp.storage.embedded import EmbeddedStore
from tests.helpers import call, open_with_store, remember

pytestmark = pytest.mark.anyio

ALPHA = [f"alpha note {i} about the {w} pipeline" for i, w in enumerate("abcdefghijklmnopqrst")]
BETA = [f"beta private entry {i} on the {w} budget" for i, w in enumerate("abcdefghijklmnopqrst")]


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[tuple[Client, MemoryService, EmbeddedStore]]:
    service, store = open_with_store(settings)
    try:
        async with Client(build_server(service)) as client:
            yield client, service, store
    finally:
        service.close()


async def top(client: Client, query: str, namespace: str = "default") -> dict[str, object]:
    results = (await call(client, "recall", query=query, k=3, contiguity=0, namespace=namespace))["results"]
    assert results, f"nothing recalled for {query!r}"
    return dict(results[0])


def fill(settings: Settings, texts: list[str], namespace: str = "default") -> list[str]:
    service, _ = open_with_store(settings)
    ids = [remember(service, t, session="s", namespace=namespace)[0].event.id for t in texts]
    service.close()  # writes the snapshot
    return ids


async def test_another_stores_snapshot_of_the_same_size_is_not_used(tmp_path: Path) -> None:
    mine, theirs = Settings(data_dir=tmp_path / "mine"), Settings(data_dir=tmp_path / "theirs")
    ids = fill(mine, ALPHA)
    fill(theirs, BETA)  # the same number of events
    name = snapshots.file_name("default")
    shutil.copy(theirs.index_dir / name, mine.index_dir / name)
    async with serving(mine) as (client, _, store):
        hit = await top(client, ALPHA[7])
        assert hit["id"] == ids[7] and hit["text"] == ALPHA[7]
        assert store.replica.rebuilt == {"default"}
        health = await call(client, "index_health")
        assert health["status"] == "ok" and health["vectors"] == 20


async def test_a_swapped_namespace_snapshot_never_answers_for_another_namespace(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    service, _ = open_with_store(settings)
    alpha = [remember(service, t, session="s", namespace="alpha")[0].event.id for t in ALPHA]
    for t in BETA:
        remember(service, t, session="s", namespace="beta")
    service.close()
    a, b = settings.index_dir / snapshots.file_name("alpha"), settings.index_dir / snapshots.file_name("beta")
    a_bytes, b_bytes = a.read_bytes(), b.read_bytes()
    a.write_bytes(b_bytes)
    b.write_bytes(a_bytes)
    async with serving(settings) as (client, _, _store):
        for i in (0, 7, 19):
            hit = await top(client, ALPHA[i], namespace="alpha")
            assert hit["id"] == alpha[i]
        results = (await call(client, "recall", query=BETA[3], k=20, namespace="alpha"))["results"]
        assert all(not r["text"].startswith("beta") for r in results)


async def test_namespaces_that_differ_only_in_case_keep_their_own_memories(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    upper = fill(settings, ALPHA, namespace="Team")
    lower = fill(settings, BETA, namespace="team")
    names = {p.name.lower() for p in settings.index_dir.glob("*.emxidx")}
    assert len(names) == 2, "on a case-insensitive file system the two snapshots would be one file"
    async with serving(settings) as (client, _, _store):
        assert (await top(client, ALPHA[4], namespace="Team"))["id"] == upper[4]
        assert (await top(client, BETA[4], namespace="team"))["id"] == lower[4]


async def test_a_log_restored_from_a_backup_and_written_to_is_not_answered_from_the_newer_snapshot(
    tmp_path: Path,
) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    fill(settings, ALPHA[:10])
    backup = tmp_path / "backup.sqlite3"
    shutil.copy(settings.db_path, backup)  # closed cleanly: the WAL is checkpointed
    fill(settings, ALPHA[10:])  # the snapshot now covers 20 events
    snapshot = settings.index_dir / snapshots.file_name("default")
    newer_snapshot = snapshot.read_bytes()
    settings.db_path.unlink()
    for leftover in settings.data_dir.glob("events.sqlite3-*"):
        leftover.unlink()
    shutil.copy(backup, settings.db_path)
    service, store = open_with_store(settings)
    assert store.replica.rebuilt == {"default"}, "the snapshot covers events this log never had"
    store.wait_for_snapshots()
    head = snapshots.header(settings.index_dir / snapshots.file_name("default"))
    assert head is not None and head["last_seq"] == 10, "the rebuilt snapshot is written at once"
    new = [remember(service, t, session="after", namespace="default")[0].event.id for t in BETA[:10]]
    store.log.close()  # a crash: no snapshot written after the new events
    async with serving(settings) as (client, _, store):
        for i in (0, 5, 9):
            hit = await top(client, BETA[i])
            assert hit["id"] == new[i] and hit["text"] == BETA[i]
        assert (await call(client, "index_health"))["vectors"] == 20
    # The snapshot made before the restore: 20 events, as many as the log holds now, but not these.
    snapshot.write_bytes(newer_snapshot)
    async with serving(settings) as (client, _, store):
        assert store.replica.rebuilt == {"default"}
        for i in (0, 5, 9):
            assert (await top(client, BETA[i]))["id"] == new[i]


async def test_a_restart_after_forgetting_the_newest_event_loads_the_snapshot(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    ids = fill(settings, ALPHA)
    async with serving(settings) as (client, _, store):
        assert store.replica.rebuilt == set()
        await call(client, "forget", ids=[ids[-1]], confirm=True)
    async with serving(settings) as (client, _, store):
        assert store.replica.rebuilt == set(), "forgetting the newest event must not force a rebuild"
        assert all(
            r["id"] != ids[-1] for r in (await call(client, "recall", query=ALPHA[-1], k=20))["results"]
        )


async def test_hits_of_another_namespace_are_dropped_even_if_an_index_holds_them(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    async with serving(settings) as (client, service, store):
        for t in ALPHA[:5]:
            remember(service, t, namespace="alpha")
        secret = remember(service, "the beta launch code is 4711", namespace="beta")[0].event
        index = store.index("alpha")
        assert index is not None
        # As a wrong derived file would: beta's vector inside alpha's index.
        _, vectors = store.log.vectors_of(np.array([secret.seq]), store.dim)
        index.add(np.array([secret.seq]), vectors)
        results = (
            await call(client, "recall", query="beta launch code", k=10, namespace="alpha", min_score=0)
        )["results"]
        assert results and all(r["id"] != secret.id for r in results)
