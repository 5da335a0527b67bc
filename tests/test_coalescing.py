"""Coalesced encoding: shared batches, each request's own rows, failures and cancellations kept apart."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anyio
import numpy as np
import pytest
from mcp import Client

from emx_mcp.coalescing import MAX_TEXTS, WORKERS, Cancelled, CoalescingEncoder
from emx_mcp.config import Settings
from emx_mcp.embedding import HashingEncoder, Vectors
from emx_mcp.server import build_server
from tests.helpers import call, open_service

WORDS = [
    "billing",
    "search",
    "mail",
    "auth",
    "cache",
    "queue",
    "gateway",
    "ledger",
    "photos",
    "maps",
    "chat",
    "video",
]


class SlowEncoder(HashingEncoder):
    """A hashing encoder that takes a while per call (as a model does) and records its batches."""

    def __init__(self, delay: float = 0.02, fail_on: str | None = None) -> None:
        super().__init__(dim=32)
        self.delay, self.fail_on = delay, fail_on
        self.batches: list[int] = []
        self.started = 0  # calls begun

    def encode(self, texts: Sequence[str]) -> Vectors:
        self.started += 1
        time.sleep(self.delay)
        self.batches.append(len(texts))
        if self.fail_on is not None and self.fail_on in texts:
            raise RuntimeError(f"cannot encode {self.fail_on!r}")
        return super().encode(texts)


def test_concurrent_requests_share_batches_and_get_their_own_rows() -> None:
    inner = SlowEncoder()
    encoder = CoalescingEncoder(inner)
    requests = [[f"query {i} word{j}" for j in range(i % 5 + 1)] for i in range(48)]
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(encoder.encode, requests))
    direct = HashingEncoder(dim=32)
    for texts, rows in zip(requests, results, strict=True):
        assert np.allclose(rows, direct.encode(texts)), texts
    assert len(inner.batches) < len(requests) and max(inner.batches) <= MAX_TEXTS
    assert encoder.stats().mean_batch > 1


def test_a_lone_request_is_encoded_at_once_in_its_own_thread() -> None:
    threads: list[str] = []

    class Where(HashingEncoder):
        def encode(self, texts: Sequence[str]) -> Vectors:
            threads.append(threading.current_thread().name)
            return super().encode(texts)

    encoder = CoalescingEncoder(Where(dim=32))
    for i in range(5):
        encoder.encode([f"question {i}"])
    assert threads == [threading.current_thread().name] * 5, "a lone request waited for a worker"
    assert encoder.stats().batches == 5


def test_a_long_text_does_not_starve_short_ones() -> None:
    inner = SlowEncoder(delay=0.01)
    encoder = CoalescingEncoder(inner)
    long_request = encoder.submit([f"sentence {i} of a long remember" for i in range(10 * MAX_TEXTS)])
    time.sleep(0.005)
    short = encoder.submit(["where is the staging database?"])
    assert short.done.wait(5)
    assert not long_request.done.is_set(), "the short request was answered within the long one's batches"
    assert long_request.done.wait(30) and long_request.rows is not None


def test_an_encoder_error_fails_only_its_batch_and_the_worker_goes_on() -> None:
    inner = SlowEncoder(delay=0.0, fail_on="poison")
    encoder = CoalescingEncoder(inner)
    with pytest.raises(RuntimeError, match="poison"):
        encoder.encode(["poison"])
    assert np.allclose(encoder.encode(["fine"]), HashingEncoder(dim=32).encode(["fine"]))


def test_a_cancelled_request_leaves_the_others_whole() -> None:
    inner = SlowEncoder(delay=0.2)
    encoder = CoalescingEncoder(inner)
    gates = []
    for worker in range(WORKERS):  # every worker busy before the request to cancel arrives
        gates.append(encoder.submit([f"keep worker {worker} busy"]))
        while inner.started <= worker:
            time.sleep(0.001)
    cancelled = encoder.submit([f"abandoned {i}" for i in range(30)])
    kept = encoder.submit(["kept one", "kept two"])
    cancelled.cancel()
    assert all(gate.done.wait(5) for gate in gates) and kept.done.wait(5)
    assert kept.error is None and kept.rows is not None
    assert np.allclose(kept.rows, HashingEncoder(dim=32).encode(["kept one", "kept two"]))
    assert isinstance(cancelled.error, Cancelled)
    assert all(n <= 2 for n in inner.batches), "the cancelled texts were encoded"


def test_many_threads_many_distinct_queries_each_get_their_own_answer() -> None:
    encoder = CoalescingEncoder(SlowEncoder(delay=0.001))
    errors: list[BaseException] = []
    direct = HashingEncoder(dim=32)

    def ask(i: int) -> None:
        try:
            for j in range(20):
                text = f"client {i} asks question {j}"
                assert np.allclose(encoder.encode([text]), direct.encode([text]))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors


# Through the tools: concurrent calls on one server share the encoder and keep their own answers.


class RecordingEncoder(SlowEncoder):
    """A slow hashing encoder that records every text it was asked to encode."""

    def __init__(self, delay: float) -> None:
        super().__init__(delay=delay)
        self.seen: list[str] = []

    def encode(self, texts: Sequence[str]) -> Vectors:
        self.seen.extend(texts)
        return super().encode(texts)


@pytest.mark.anyio
async def test_concurrent_recalls_through_the_tools_each_get_their_own_top_hit(settings: Settings) -> None:
    inner = RecordingEncoder(delay=0.01)
    encoder = CoalescingEncoder(inner)
    service = open_service(settings, encoder)
    facts = [f"Fact {i}: the {w} service runs on host {w}-{i * 7}." for i, w in enumerate(WORDS)]
    async with Client(build_server(service)) as client:
        stored = {}
        for fact in facts:
            stored[fact] = (await call(client, "remember", text=fact))["ids"][0]
        before = encoder.stats()
        found: dict[str, str] = {}

        async def ask(fact: str) -> None:
            result = await call(client, "recall", query=fact, k=1, contiguity=0)
            found[fact] = result["results"][0]["id"]

        async with anyio.create_task_group() as group:
            for fact in facts:
                group.start_soon(ask, fact)
    assert found == stored
    after = encoder.stats()
    assert after.batches - before.batches < len(facts), "concurrent recalls did not share encoder calls"
    service.close()


@pytest.mark.anyio
async def test_a_cancelled_tool_call_is_not_encoded_and_the_others_are_answered(settings: Settings) -> None:
    inner = RecordingEncoder(delay=0.3)
    service = open_service(settings, CoalescingEncoder(inner))
    async with Client(build_server(service)) as client:
        await call(client, "remember", text="The staging database lives on db-7.")
        answers: dict[str, Any] = {}

        async def busy(worker: int) -> None:  # keeps an encoder worker busy for 0.3 s
            answers[f"busy {worker}"] = await call(client, "recall", query=f"keep worker {worker} busy")

        async def abandoned() -> None:
            with anyio.move_on_after(0.1):
                answers["abandoned"] = await client.call_tool(
                    "remember", {"text": "a note the agent gave up on"}
                )

        async def kept() -> None:
            answers["kept"] = await call(client, "recall", query="The staging database lives on db-7.")

        async with anyio.create_task_group() as group:
            for worker in range(WORKERS):
                group.start_soon(busy, worker)
            await anyio.sleep(0.03)
            group.start_soon(abandoned)
            group.start_soon(kept)
        assert "abandoned" not in answers or answers["abandoned"].is_error
        assert answers["kept"]["results"][0]["text"] == "The staging database lives on db-7."
        assert "a note the agent gave up on" not in inner.seen, "the cancelled call's text was encoded"
        found = await call(client, "recall", query="a note the agent gave up on", k=5)
        assert all("gave up" not in r["text"] for r in found["results"]), "a cancelled remember was stored"
        assert (await call(client, "index_health"))["events_in_log"] == 1
    service.close()
