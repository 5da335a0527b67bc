"""Hybrid recall: words and meaning together, filters everywhere, near-duplicates, the reading budget."""

from __future__ import annotations

import itertools

import pytest

from emx_mcp import retrieval
from emx_mcp.errors import InvalidInput
from emx_mcp.service import MemoryService
from emx_mcp.storage.embedded import EmbeddedStore
from tests.helpers import forget, recall, remember

pytestmark = pytest.mark.contract

NOTES = [
    "The staging database moved to db-7 after the disk filled up on Monday.",
    "Keys for the payment API rotate every ninety days, next in March.",
    "The design review for the search page is on Tuesday afternoon.",
    "Backups are verified by restoring one table every week.",
    "Build 4711 failed with error E1234 in the linker step.",
    "Lunch on Fridays is pizza in the big meeting room.",
]


def fill(service: MemoryService, texts: list[str] = NOTES, **arguments: object) -> list[str]:
    return [remember(service, t, **arguments)[0].event.id for t in texts]  # type: ignore[arg-type]


def test_a_rare_word_or_number_is_found_by_its_letters(service: MemoryService) -> None:
    """A hashing encoder knows no meaning, and an error code means little to any embedding: BM25 finds it."""
    ids = fill(service)
    assert recall(service, "E1234", k=1)[0].event.id == ids[4]
    assert recall(service, "what happened to 4711?", k=1)[0].event.id == ids[4]
    lexical = recall(service, "E1234", k=3, mode="lexical")
    assert [h.event.id for h in lexical] == [ids[4]], "lexical mode returns only what matches by words"


def test_stemming_and_diacritics_fold_words_together(service: MemoryService) -> None:
    ids = fill(service, ["We restored the café's backup tables.", "Unrelated note about pizza."])
    assert recall(service, "restoring cafe backups", k=1, mode="lexical")[0].event.id == ids[0]


def test_a_short_reply_is_found_by_the_question_it_answers(service: MemoryService) -> None:
    """The episode before it in its session counts as its context for the words."""
    ids = fill(
        service,
        ["Ana: Where did you go hiking last weekend?", "Ben: Up to the lake, it was beautiful!"],
        session="chat",
    )
    found = recall(service, "Where did Ben go hiking?", k=2, mode="lexical")
    assert ids[1] in [h.event.id for h in found]


def test_lexical_search_honours_every_filter(service: MemoryService) -> None:
    remember(
        service,
        "deploy E1234 on prod",
        session="a",
        metadata={"env": "prod"},
        timestamp="2026-01-05T00:00:00Z",
    )
    staging = remember(
        service,
        "deploy E1234 on staging",
        session="b",
        metadata={"env": "staging"},
        timestamp="2026-03-05T00:00:00Z",
    )[0].event
    remember(service, "deploy E1234 elsewhere", namespace="other")
    for arguments in ({"session": "b"}, {"metadata": {"env": "staging"}}, {"since": "2026-02-01"}):
        hits = recall(service, "E1234", k=10, mode="lexical", **arguments)  # type: ignore[arg-type]
        assert [h.event.id for h in hits] == [staging.id], arguments
    assert {h.event.namespace for h in recall(service, "E1234", k=10, mode="lexical")} == {"default"}


def test_forgotten_text_is_no_longer_found_by_its_words(service: MemoryService) -> None:
    ids = fill(
        service,
        ["The vault code is 9931.", "Thanks, noted.", "Anything else for today?"],
        session="s",
    )
    forget(service, ids=[ids[0]], confirm=True)
    assert recall(service, "vault code 9931", k=5, mode="lexical") == []
    forget(service, session="s", confirm=True)
    assert recall(service, "noted", k=5, mode="lexical") == []


def test_min_score_leaves_out_what_is_not_related(service: MemoryService) -> None:
    fill(service)
    assert recall(service, "quantum chromodynamics lecture", k=5) == []
    assert len(recall(service, "quantum chromodynamics lecture", k=5, min_score=0.0, mode="semantic")) == 5
    with pytest.raises(InvalidInput, match="min_score"):
        recall(service, "x", min_score=1.5)


def test_near_duplicates_come_back_as_one_item_the_newest(service: MemoryService) -> None:
    first = remember(service, "The staging database moved to db-7.", timestamp="2026-01-01T00:00:00Z")[0]
    again = remember(service, "The staging database moved to db-7.", timestamp="2026-02-01T00:00:00Z")[0]
    assert first.duplicate_of is None
    assert again.duplicate_of is not None and again.duplicate_of[0] == first.event.id
    hits = recall(service, "staging database", k=5)
    assert len(hits) == 1 and hits[0].event.id == again.event.id and hits[0].duplicates == 1


def test_the_reading_budget_keeps_the_best_and_counts_the_rest(service: MemoryService) -> None:
    fill(service, [f"Deploy note {i}: the pipeline ran for {i} minutes on runner r{i}." for i in range(20)])
    request_budget = 200
    from emx_mcp.schemas import RecallRequest, parse

    found = service.recall(
        parse(RecallRequest, {"query": "deploy pipeline runner", "k": 20, "max_chars": request_budget})
    )
    assert sum(len(h.event.text) for h in found.hits) <= request_budget
    assert found.hits and found.omitted > 0 and len(found.hits) + found.omitted == 20
    # Best first, except that of two close competitors on the same subject the newer comes first.
    for above, below in itertools.pairwise(found.hits):
        if above.score < below.score:
            assert below.score - above.score <= retrieval.RECENCY_MARGIN + 1e-9
            assert above.event.timestamp >= below.event.timestamp


def test_an_episode_longer_than_the_budget_is_cut_not_dropped(
    service: MemoryService, store: EmbeddedStore
) -> None:
    long = " ".join(f"Sentence {i} of the incident report about the outage." for i in range(3))
    remember(service, long)
    (hit,) = recall(service, "incident report outage", k=1, max_chars=100)
    assert hit.truncated and len(hit.event.text) == 100 and store.count("default") == 1


def test_the_recency_prior_moves_an_episode_only_past_close_competitors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """0.80 (middle age), 0.76 (oldest), 0.72 (newest), one subject: the newest passes the 0.76 it is
    within RECENCY_MARGIN of; from there, with chains, the 0.80 too (a run of close competitors is
    led by its newest); without chains never the 0.80 it did not come within the margin of."""
    import numpy as np

    from emx_mcp.storage.records import Event

    def order(chains: bool) -> list[str]:
        monkeypatch.setattr(retrieval, "RECENCY_CHAINS", chains)
        vector = np.ones(4, dtype=np.float32) / 2
        stamps = [
            (0.80, "2026-11-10T00:00:00Z"),
            (0.76, "2026-11-01T00:00:00Z"),
            (0.72, "2026-11-20T00:00:00Z"),
        ]
        scored = [
            retrieval._Scored(Event(i, f"e{i}", "default", "s", i, stamp, f"t{i}", {}), vector, rank, rank)
            for i, (rank, stamp) in enumerate(stamps)
        ]
        retrieval.prefer(scored, "newer")
        return [s.event.id for s in scored]

    assert order(chains=False) == ["e0", "e2", "e1"]
    assert order(chains=True) == ["e2", "e0", "e1"]
