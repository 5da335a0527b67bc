"""Episodes end to end at the service level: segmentation on remember, two-stage recall, filters."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emx_mcp.config import Settings
from emx_mcp.embedding import HashingEncoder
from emx_mcp.errors import InvalidInput
from emx_mcp.schemas import blank
from emx_mcp.service import MemoryService
from tests.helpers import open_service, recall, recall_batch, remember

TOPIC_A = (
    "The database migration failed on Monday. The database schema had a missing index. "
    "We rebuilt the database index."
)
TOPIC_B = (
    "Lunch options near the office include pizza. The pizza place closes early. "
    "Sushi is another lunch option."
)


def check_slices(text: str, episodes: list[str]) -> None:
    """Episodes are exact slices of `text`, in order, with only whitespace between and around them."""
    cursor = 0
    for episode in episodes:
        at = text.find(episode, cursor)
        assert at >= 0, f"episode {episode[:40]!r} is not a slice of the input at or after {cursor}"
        assert text[cursor:at].strip() == ""
        cursor = at + len(episode)
    assert text[cursor:].strip() == ""


PIECES = st.one_of(
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60),
    st.sampled_from(
        [TOPIC_A, TOPIC_B, "Dr. Who?", "x = 3.14.", "\n\n", "\n- item one", "```\ncode. here\n```"]
    ),
)


@pytest.fixture(scope="module")
def property_service(tmp_path_factory: pytest.TempPathFactory) -> MemoryService:
    settings_ = Settings(data_dir=tmp_path_factory.mktemp("prop"), segment_min_sentences=1)
    return open_service(settings_, HashingEncoder(dim=64))


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(PIECES, min_size=1, max_size=12).map(" ".join).filter(lambda t: not blank(t)))
def test_no_text_is_lost_or_altered(property_service: MemoryService, text: str) -> None:
    episodes = remember(property_service, text, session="prop")
    check_slices(text, [e.event.text for e in episodes])
    assert episodes[0].surprise is None and all(e.surprise is not None for e in episodes[1:])
    assert sum(e.sentences for e in episodes) >= len(episodes)


def test_short_text_stays_one_episode(service: MemoryService) -> None:
    (episode,) = remember(service, "Just one short note. With two sentences.")
    assert episode.sentences == 2 and episode.surprise is None


def test_long_text_is_cut_where_the_topic_shifts(service: MemoryService) -> None:
    text = " ".join([TOPIC_A, TOPIC_B, TOPIC_A.replace("Monday", "Tuesday")])
    episodes = remember(service, text, session="s")
    check_slices(text, [e.event.text for e in episodes])
    assert len(episodes) >= 2
    assert [e.event.position for e in episodes] == list(range(len(episodes)))
    assert all(e.event.timestamp == episodes[0].event.timestamp for e in episodes)


def store_session(service: MemoryService, texts: list[str], session: str = "s", **kw: object) -> list[str]:
    return [remember(service, t, session=session, **kw)[0].event.id for t in texts]  # type: ignore[arg-type]


STEPS = [
    "alpha kickoff meeting notes",
    "bravo design review of storage",
    "charlie index tuning results",
    "delta rollout to production",
    "echo retrospective and follow ups",
]


PLAN = [
    "charlie index tuning plan for the search cluster",
    "charlie index tuning results: recall went up",
    "lunch was pizza in the big room",
]


def test_a_neighbour_is_shown_on_its_own_merit(service: MemoryService) -> None:
    ids = store_session(service, PLAN)
    hits = recall(service, "charlie index tuning results", k=1, contiguity=1)
    assert [h.event.id for h in hits] == [ids[1], ids[0]], "the related neighbour, not the lunch note"
    assert [h.via for h in hits] == ["similarity", "contiguity"] and hits[1].neighbour_of == ids[1]
    # Its score is its own: what it scores as a match of the same query.
    alone = {h.event.id: h.score for h in recall(service, "charlie index tuning results", k=10, contiguity=0)}
    assert hits[1].score == pytest.approx(alone[ids[0]]) and hits[1].score < hits[0].score


def test_contiguity_never_repeats_an_event(service: MemoryService) -> None:
    ids = store_session(service, PLAN)
    hits = recall(service, "charlie index tuning plan results", k=2, contiguity=2)
    assert len({h.event.id for h in hits}) == len(hits)
    assert {h.event.id for h in hits} == set(ids[:2])
    assert all(h.via == "similarity" for h in hits), (
        "a neighbour that is itself a match keeps its match entry"
    )


def test_matches_are_the_same_with_or_without_neighbours(service: MemoryService) -> None:
    store_session(service, STEPS, session="a")
    store_session(service, [s.replace(" ", " and ") for s in STEPS], session="b")
    for query in ("storage design", "production rollout", "meeting notes"):
        two_stage = recall(service, query, k=3, contiguity=2)
        similarity = recall(service, query, k=3, contiguity=0)
        assert [h.event.id for h in two_stage if h.via == "similarity"] == [h.event.id for h in similarity]
        assert all(h.neighbour_of for h in two_stage if h.via == "contiguity")


def test_contiguity_stays_in_the_session_and_namespace(service: MemoryService) -> None:
    store_session(service, ["zulu one", "zulu two"], session="x")
    other = store_session(service, ["yankee one", "yankee two"], session="y")
    store_session(service, ["yankee zero"], session="y", namespace="elsewhere")
    hits = recall(service, "yankee one", k=1, contiguity=3)
    assert [h.event.id for h in hits] == other


def test_recall_batch_has_contiguity_too(service: MemoryService) -> None:
    ids = store_session(service, PLAN)
    batch = recall_batch(service, ["charlie index tuning results", "lunch was pizza"], k=1)
    assert [[h.event.id for h in hits] for hits in batch] == [[ids[1], ids[0]], [ids[2]]]


def test_time_filters(service: MemoryService) -> None:
    early = remember(service, "release notes v1", timestamp="2026-01-10T00:00:00Z")[0].event
    mid = remember(service, "release notes v2", timestamp="2026-02-10T00:00:00Z")[0].event
    late = remember(service, "release notes v3", timestamp="2026-03-10T09:30:00+01:00")[0].event

    def ids(**kw: object) -> set[str]:
        return {h.event.id for h in recall(service, "release notes", k=10, **kw)}  # type: ignore[arg-type]

    assert ids(since="2026-02-01") == {mid.id, late.id}
    assert ids(until="2026-02-10T00:00:00Z") == {early.id, mid.id}  # inclusive
    assert ids(since="2026-02-01", until="2026-03-01") == {mid.id}
    assert ids(since="2026-03-10T08:30:00Z") == {late.id}  # zones are compared in UTC
    assert ids(since="2027-01-01") == set()
    for bad in ("the week after the launch", "2026-13-01", ""):
        with pytest.raises(InvalidInput, match="since"):
            recall(service, "release notes", since=bad)
    with pytest.raises(InvalidInput, match="until"):
        recall(service, "release notes", until="soon")


def test_metadata_filters(service: MemoryService) -> None:
    a = remember(service, "deploy log one", metadata={"env": "prod", "attempt": 1, "ok": True})[0].event
    b = remember(service, "deploy log two", metadata={"env": "staging", "attempt": 2, "ok": False})[0].event
    c = remember(service, "deploy log three", metadata={"env": "prod", "attempt": "1", "owner": None})[
        0
    ].event

    def ids(md: dict[str, object]) -> set[str]:
        return {h.event.id for h in recall(service, "deploy log", k=10, metadata=md)}

    assert ids({"env": "prod"}) == {a.id, c.id}
    assert ids({"env": "prod", "attempt": 1}) == {a.id}  # 1 is not "1"
    assert ids({"attempt": "1"}) == {c.id}
    assert ids({"ok": True}) == {a.id}  # true is not 1
    assert ids({"ok": False}) == {b.id}
    assert ids({"owner": None}) == {c.id}  # null matches an explicit null, not a missing key
    assert ids({"env": "dev"}) == set()
    assert ids({"missing": "x"}) == set()
    with pytest.raises(InvalidInput, match="metadata"):
        recall(service, "deploy log", metadata=["env"])
    with pytest.raises(InvalidInput, match="quotes"):
        recall(service, "deploy log", metadata={'bad"key': 1})


def test_filters_apply_to_neighbours(service: MemoryService) -> None:
    ids = [
        remember(service, t, session="s", metadata={"tag": "keep" if i != 1 else "drop"})[0].event.id
        for i, t in enumerate(STEPS[:3])
    ]
    hits = recall(
        service,
        "alpha kickoff meeting notes, bravo design review",
        k=1,
        contiguity=1,
        metadata={"tag": "keep"},
    )
    assert [h.event.id for h in hits] == [ids[0]], "the neighbour tagged drop is left out"
    hits = recall(service, "alpha kickoff meeting notes, bravo design review", k=1, contiguity=1)
    assert [h.event.id for h in hits] == [ids[0], ids[1]]


def test_contiguity_bad_input(service: MemoryService) -> None:
    for value in (-1, 6, "1", 1.5, True):
        with pytest.raises(InvalidInput, match="contiguity"):
            recall(service, "x", contiguity=value)
