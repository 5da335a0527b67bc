"""Two real `emx-mcp serve --transport http` replicas on one Milvus (Milvus Lite 2.5 over TCP).

Both replicas see every acknowledged event at once, concurrent writes to one session keep
positions unique, and a replica killed with SIGKILL mid-write loses nothing it acknowledged.
"""

from __future__ import annotations

import json
import random
import signal
import warnings
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from emx_mcp.config import Settings
from tests.e2e.servers import NetworkServer, network_server
from tests.milvus_server import empty

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

TRIALS = 10


@pytest.fixture
def shared(tmp_path: Path, milvus_uri: str) -> Iterator[dict[str, str]]:
    """The settings every replica gets: one Milvus, one collection."""
    env = {"EMX_STORE": "milvus", "EMX_MILVUS_URI": milvus_uri, "EMX_MILVUS_COLLECTION": "replicas"}
    settings = Settings(
        data_dir=tmp_path, store="milvus", milvus_uri=milvus_uri, milvus_collection="replicas"
    )
    empty(settings)
    yield env
    empty(settings)


def connect(server: NetworkServer) -> tuple[httpx2.AsyncClient, Client]:
    http = httpx2.AsyncClient(timeout=120)
    return http, Client(streamable_http_client(server.url, http_client=http), read_timeout_seconds=120)


async def call(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


async def recalled_first(client: Client, events: dict[str, str]) -> list[str]:
    """Ids among `events` that their own text does not find first."""
    missed = []
    items = list(events.items())
    for start in range(0, len(items), 64):
        chunk = items[start : start + 64]
        reply = await call(client, "recall_batch", queries=[t for _, t in chunk], k=3, contiguity=0)
        for (event_id, _), found in zip(chunk, reply["results"], strict=True):
            hits = found["results"]
            if not hits or hits[0]["id"] != event_id:
                missed.append(event_id)
    return missed


def positions(milvus_uri: str) -> list[tuple[str, int]]:
    from pymilvus import MilvusClient

    client = MilvusClient(uri=milvus_uri)
    rows = client.query(
        "replicas_events", filter="seq >= 0", output_fields=["session", "position"], limit=16_384
    )
    client.close()
    return [(r["session"], int(r["position"])) for r in rows]


VOCABULARY = [
    "harbour",
    "lantern",
    "orchard",
    "violin",
    "glacier",
    "pepper",
    "saddle",
    "compass",
    "thunder",
    "meadow",
    "biscuit",
    "canyon",
    "ribbon",
    "falcon",
    "quartz",
    "walnut",
    "tractor",
    "monsoon",
    "pillow",
    "jungle",
    "anchor",
    "velvet",
    "cactus",
    "marble",
    "rocket",
    "spinach",
    "tundra",
    "kettle",
    "parrot",
    "lagoon",
    "hammer",
    "sapphire",
    "bamboo",
    "circus",
    "ladder",
    "olive",
    "plaza",
]


def unique_text(rng: random.Random, label: str) -> str:
    """A sentence of its own: its words are unlikely to be near-identical to another's."""
    words = " ".join(rng.sample(VOCABULARY, 8))
    return f"{label}: {words}, reference {rng.randrange(10**9)}."


def stored_ids(milvus_uri: str, ids: list[str]) -> set[str]:
    from pymilvus import MilvusClient

    client = MilvusClient(uri=milvus_uri)
    found: set[str] = set()
    for start in range(0, len(ids), 500):
        rows = client.query(
            "replicas_events", filter=f"id in {json.dumps(ids[start : start + 500])}", output_fields=["id"]
        )
        found.update(r["id"] for r in rows)
    client.close()
    return found


async def test_two_replicas_share_one_store(tmp_path: Path, shared: dict[str, str], milvus_uri: str) -> None:
    models = tmp_path / "models-shared"  # one data dir: the ONNX export is made once
    with network_server(models, **shared) as a, network_server(models, **shared) as b:
        acknowledged: dict[str, str] = {}
        async with AsyncExitStack() as stack:
            clients = []
            for server in (a, b, a, b):
                http, client = connect(server)
                await stack.enter_async_context(http)
                clients.append(await stack.enter_async_context(client))

            async def writer(number: int, client: Client) -> None:
                rng = random.Random(number)
                for i in range(8):
                    text = unique_text(rng, f"writer {number} item {i}")
                    reply = await call(client, "remember", text=text, session="shared")
                    assert reply["stored"] == 1
                    acknowledged[reply["ids"][0]] = text

            async with anyio.create_task_group() as group:
                for number, client in enumerate(clients):
                    group.start_soon(writer, number, client)
            for client in clients[:2]:  # through each replica: everything, each found by its own text
                assert await recalled_first(client, acknowledged) == []
                health = await call(client, "index_health")
                assert health["store"] == "milvus" and health["events_in_log"] == len(acknowledged) == 32
        places = positions(milvus_uri)
        assert len(places) == len(set(places)) == 32, "two events share a (session, position)"
        # Positions are unique but not always contiguous: a writer can build on a row that its
        # writer then withdraws (it met a third writer there), leaving a gap (README, "Positions").
        # Seen once in six runs of this test: reported, not failed, until the protocol closes it.
        gaps = sorted(set(range(max(p for _, p in places) + 1)) - {p for _, p in places})
        if gaps:
            warnings.warn(f"positions with no event in the shared session: {gaps}", stacklevel=1)


async def test_sigkill_of_a_replica_mid_write_loses_no_acknowledged_event(
    tmp_path: Path, shared: dict[str, str], milvus_uri: str
) -> None:
    rng = random.Random(20261130)
    data = tmp_path / "replica-data"
    acknowledged: dict[str, str] = {}
    with network_server(data, **shared) as survivor:
        for trial in range(TRIALS):
            with network_server(data, **shared) as victim:
                http, client = connect(victim)
                async with http, client:
                    await call(client, "index_health")  # the model is loaded: kills land in writes
                    kill_at = anyio.current_time() + rng.uniform(0.2, 1.5)
                    i = 0
                    try:
                        while True:
                            text = unique_text(rng, f"trial {trial} write {i}")
                            if anyio.current_time() >= kill_at:
                                # Kill while this call is in flight.
                                async with anyio.create_task_group() as group:
                                    group.start_soon(
                                        client.call_tool, "remember", {"text": text, "session": "k"}
                                    )
                                    await anyio.sleep(rng.uniform(0.0, 0.05))
                                    victim.process.send_signal(signal.SIGKILL)
                                    group.cancel_scope.cancel()
                                break
                            reply = await call(client, "remember", text=text, session=f"kill-{trial % 3}")
                            acknowledged.update(zip(reply["ids"], [text], strict=True))
                            i += 1
                    except Exception:  # the connection died with the process
                        pass
                victim.process.wait(30)
                assert i > 0, f"trial {trial}: nothing was acknowledged before the kill"
        lost = set(acknowledged) - stored_ids(milvus_uri, list(acknowledged))
        assert not lost, f"{len(lost)} of {len(acknowledged)} acknowledged events lost"
        http, client = connect(survivor)
        async with http, client:
            assert await recalled_first(client, acknowledged) == []
    places = positions(milvus_uri)
    assert len(places) == len(set(places)), "two events share a (session, position)"
