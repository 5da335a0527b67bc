"""Two real servers (stdio, real model) on one data directory, as two agents on one machine run them.

Each writes 300 events while the other writes too; afterwards both see all 600 and find each one.
Snapshots are written every 50 changes, so both processes also write snapshots throughout, under
the data directory's lock.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import anyio
import pytest
from mcp import Client

from tests.e2e.servers import stdio_params

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

DATA = Path(__file__).resolve().parents[1] / "data" / "wiki_paragraphs.jsonl"
PER_PROCESS = 300


def texts_for(agent: str, rng: random.Random, words: list[str]) -> list[str]:
    return [f"Agent {agent} note {i}: {' '.join(rng.sample(words, 6))}." for i in range(PER_PROCESS)]


async def test_two_servers_share_one_data_directory(tmp_path: Path) -> None:
    text = " ".join(json.loads(line)["text"] for line in DATA.read_text().splitlines())
    words = sorted({w.lower() for w in re.findall(r"[A-Za-z]{5,}", text)})
    rng = random.Random(11)
    texts = {agent: texts_for(agent, rng, words) for agent in "AB"}
    params = stdio_params(tmp_path / "data", EMX_SNAPSHOT_EVERY="50")
    acknowledged: dict[str, str] = {}  # event id -> text

    async def write(client: Client, agent: str) -> None:
        for note in texts[agent]:
            result = await client.call_tool("remember", {"text": note, "session": f"agent-{agent}"})
            assert not result.is_error, result.content
            assert result.structured_content is not None
            (event_id,) = result.structured_content["ids"]
            acknowledged[event_id] = note

    async with (
        Client(params, read_timeout_seconds=180) as a,
        Client(params, read_timeout_seconds=180) as b,
    ):
        async with anyio.create_task_group() as group:
            group.start_soon(write, a, "A")
            group.start_soon(write, b, "B")
        assert len(acknowledged) == 2 * PER_PROCESS
        by_text = {note: event_id for event_id, note in acknowledged.items()}
        queries = list(by_text)
        for client in (a, b):
            health = await client.call_tool("index_health", {})
            assert health.structured_content is not None
            assert health.structured_content["events_in_log"] == 2 * PER_PROCESS
            assert health.structured_content["vectors"] == 2 * PER_PROCESS
            assert health.structured_content["status"] == "ok", health.structured_content["reasons"]
            for start in range(0, len(queries), 200):
                chunk = queries[start : start + 200]
                found = await client.call_tool("recall_batch", {"queries": chunk, "k": 1, "contiguity": 0})
                assert found.structured_content is not None
                for query, results in zip(chunk, found.structured_content["results"], strict=True):
                    assert results["results"][0]["id"] == by_text[query], query
    # A third process, started afterwards from the snapshots the two wrote, sees everything too.
    async with Client(params, read_timeout_seconds=180) as c:
        health = await c.call_tool("index_health", {})
        assert health.structured_content is not None
        assert health.structured_content["vectors"] == health.structured_content["events_in_log"] == 600
