"""The real model: what folds is the same memory, never a different fact; an exact text finds its own
episode under two writers; a changed fact's newer statement comes first; a transcript keeps its exchanges."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from mcp import Client

from emx_mcp import dialogue
from emx_mcp.config import Settings
from emx_mcp.embedding import SentenceTransformerEncoder
from emx_mcp.schemas import SupersedeRequest
from emx_mcp.server import build_server
from tests.helpers import call, open_service, recall, remember

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@pytest.fixture(scope="module")
def model() -> SentenceTransformerEncoder:
    return SentenceTransformerEncoder()


async def test_near_identical_identifiers_are_two_memories(
    tmp_path: Path, model: SentenceTransformerEncoder
) -> None:
    service = open_service(Settings(data_dir=tmp_path), model)
    try:
        async with Client(build_server(service)) as client:
            first = await call(client, "remember", text="Deploy ticket OPS-4411 was approved by Dana.")
            second = await call(client, "remember", text="Deploy ticket OPS-4412 was approved by Dana.")
            assert second["episodes"][0]["duplicate_of"] is None  # the same words, another ticket
            for ticket, stored in (("OPS-4411", first), ("OPS-4412", second)):
                found = await call(client, "recall", query=ticket)
                top = found["results"][0]
                assert top["id"] == stored["ids"][0] and ticket in top["text"] and top["duplicates"] == 0
    finally:
        service.close()


async def test_an_exact_duplicate_folds_into_its_newest_copy_whatever_k(
    tmp_path: Path, model: SentenceTransformerEncoder
) -> None:
    service = open_service(Settings(data_dir=tmp_path), model)
    try:
        async with Client(build_server(service)) as client:
            text = "The staging database password rotates every 30 days."
            await call(client, "remember", text=text, timestamp="2026-11-06T11:30:00Z")
            newest = await call(client, "remember", text=text, timestamp="2026-11-12T16:10:00Z")
            await call(client, "remember", text="The production password rotates every 90 days.")
            for k in (1, 2, 5):
                top = (
                    await call(client, "recall", query="How often does the staging password change?", k=k)
                )["results"][0]
                assert top["id"] == newest["ids"][0] and top["duplicates"] == 1, k
    finally:
        service.close()


def test_exact_text_finds_its_own_episode_under_two_writers(
    tmp_path: Path, model: SentenceTransformerEncoder
) -> None:
    """Two services on one data directory write 30 near-identical notes at once; each note's text finds it."""
    settings = Settings(data_dir=tmp_path)
    writers = [open_service(settings, model), open_service(settings, model)]
    owner: dict[str, str] = {}
    lock = threading.Lock()

    def write(service: object, first: int) -> None:
        for n in range(first, first + 15):
            text = f"Build {1000 + n} of the payments service passed on runner {n % 3}."
            (episode,) = remember(service, text, session=f"writer-{first}")  # type: ignore[arg-type]
            with lock:
                owner[text] = episode.event.id

    try:
        threads = [threading.Thread(target=write, args=(w, i * 15)) for i, w in enumerate(writers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wrong = [
            text for text, event_id in owner.items() if recall(writers[0], text, k=3)[0].event.id != event_id
        ]
        assert len(owner) == 30 and not wrong, wrong
    finally:
        for w in writers:
            w.close()


def test_the_newer_of_two_statements_of_a_fact_comes_first(
    tmp_path: Path, model: SentenceTransformerEncoder
) -> None:
    """The issue's example: without a link the recency prior decides close competitors; a question
    whose words match the older text much better ("Where does Maria live now?" against "Maria lives
    in ...") is out of its reach, and there `supersedes` decides."""
    service = open_service(Settings(data_dir=tmp_path), model)
    try:
        older = remember(
            service, "Maria lives in Berlin, near the Tiergarten.", timestamp="2026-11-16T09:00:00Z"
        )
        newer = remember(
            service, "Maria mentioned she has moved from Berlin to Lisbon.", timestamp="2026-11-30T09:00:00Z"
        )[0].event
        remember(service, "Maria prefers short meetings in the morning.", timestamp="2026-11-17T09:00:00Z")
        for question in ("Where does the user live now?", "Where is Maria based now?"):
            assert recall(service, question, now="2026-12-01T09:00:00Z")[0].event.id == newer.id, question
        service.supersede(SupersedeRequest(ids=[older[0].event.id], by=newer.id))
        hits = recall(service, "Where does Maria live now?", now="2026-12-01T09:00:00Z")
        assert hits[0].event.id == newer.id
        assert older[0].event.id not in {hit.event.id for hit in hits}
    finally:
        service.close()


MEETING = """Priya: Morning all. Three things today: the billing bug, API versioning and the offsite.
Jonas: Morning.
Priya: First, the billing bug. Jonas, where are we?
Jonas: The invoices for annual plans were prorated twice. I have a fix in review.
Priya: Does it need a data migration?
Jonas: Yes, a small one: about 340 invoices need a credit note. I will run it on Thursday night.
Priya: Good. Jonas, you raised this.
Jonas: Yes.
Priya: Next topic, API versioning. We keep breaking the mobile app when the invoice object changes.
Mei: I would put the version in the URL. Clients see it in their logs and it is easy to test.
Jonas: Headers are cleaner, but I agree the URL is easier for everyone.
Priya: Then /v2 for new work, and /v1 stays frozen for six months.
Mei: I will write the deprecation notice.
Priya: Last, the offsite. Mei, did you find a place?
Mei: Two options near Porto, both with rooms for twelve. I prefer the one by the river.
Priya: Book the river one for the second week of March.
Mei: Will do."""


def test_a_transcript_keeps_its_exchanges_whole(tmp_path: Path, model: SentenceTransformerEncoder) -> None:
    service = open_service(Settings(data_dir=tmp_path), model)
    try:
        episodes = [e.event.text for e in remember(service, MEETING, session="meeting")]
    finally:
        service.close()
    assert all(len(text) >= dialogue.MIN_EPISODE_CHARS for text in episodes), episodes
    for opener in ("Priya: Next topic, API versioning.", "Priya: Last, the offsite."):
        assert any(text.startswith(opener) for text in episodes), (opener, episodes)
    for question in ("Jonas, where are we?", "Does it need a data migration?", "Mei, did you find a place?"):
        assert not any(text.endswith(question) for text in episodes), (question, episodes)
    for text in episodes:  # every episode starts at a turn
        assert text.split(":", 1)[0] in ("Priya", "Jonas", "Mei"), text
