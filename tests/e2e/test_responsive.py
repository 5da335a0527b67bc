"""A long `remember` does not stall the server: a `recall` sent meanwhile comes back first.

Real model, real store, the SDK's in-memory client. Encoding 100,000 characters takes seconds on
this machine; every tool runs in a worker thread, so the event loop keeps answering.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import anyio
import pytest
from mcp import Client

from emx_mcp.app import build_service
from emx_mcp.config import Settings
from emx_mcp.embedding import SentenceTransformerEncoder
from emx_mcp.server import build_server

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

DATA = Path(__file__).resolve().parents[1] / "data" / "wiki_paragraphs.jsonl"


def long_text(chars: int) -> str:
    paragraphs = [json.loads(line)["text"] for line in DATA.read_text().splitlines()]
    out, i = [], 0
    while sum(len(p) + 2 for p in out) < chars:
        out.append(f"Part {i}. {paragraphs[i % len(paragraphs)]}")
        i += 1
    return "\n\n".join(out)[:chars]


async def test_recall_returns_while_a_long_remember_is_in_progress(tmp_path: Path) -> None:
    service = build_service(Settings(data_dir=tmp_path), SentenceTransformerEncoder())
    service.warm_up()  # the model is loaded: what follows is encoding, not loading
    text = long_text(100_000)
    assert len(text) == 100_000
    done: dict[str, float] = {}
    async with Client(build_server(service), read_timeout_seconds=300) as client:
        await client.call_tool("remember", {"text": "The nightly backup runs at two in the morning."})

        async def remember_long() -> None:
            result = await client.call_tool("remember", {"text": text})
            assert not result.is_error, result.content
            done["remember"] = time.monotonic()

        async with anyio.create_task_group() as group:
            group.start_soon(remember_long)
            await anyio.sleep(1.0)  # the remember is encoding its sentences by now
            assert "remember" not in done, "the remember finished too fast to test anything"
            sent = time.monotonic()
            result = await client.call_tool("recall", {"query": "when does the backup run?", "k": 1})
            done["recall"] = time.monotonic()
            assert result.structured_content is not None
            assert result.structured_content["results"][0]["text"].startswith("The nightly backup")
    assert done["recall"] < done["remember"]
    print(
        f"recall took {done['recall'] - sent:.2f} s; the remember finished "
        f"{done['remember'] - done['recall']:.2f} s after it"
    )
    service.close()
