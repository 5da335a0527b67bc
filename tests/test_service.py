from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from emx_mcp.config import Settings
from emx_mcp.embedding import HashingEncoder, Vectors
from emx_mcp.errors import CapacityExceeded, InvalidInput, NotFound, StoreMismatch
from emx_mcp.service import MemoryService
from emx_mcp.storage import ivf_batch, snapshots
from emx_mcp.storage.embedded import EmbeddedStore
from emx_mcp.storage.index import SMALL_BATCH
from tests.helpers import forget, health, open_with_store, recall, recall_batch, remember

pytestmark = pytest.mark.contract


class CountingEncoder(HashingEncoder):
    """Counts encoded texts, to prove that recovery never re-embeds."""

    def __init__(self) -> None:
        super().__init__(dim=64)
        self.encoded = 0

    def encode(self, texts: Sequence[str]) -> Vectors:
        self.encoded += len(texts)
        return super().encode(texts)


TEXTS = [f"note {i}: the {w} deployment used port {1000 + i}" for i, w in enumerate("abcdefghijklmnopqrst")]


def fill(service: MemoryService, texts: Sequence[str] = TEXTS, namespace: str = "default") -> list[str]:
    return [remember(service, t, session="s", namespace=namespace)[0].event.id for t in texts]


def test_remember_then_recall_finds_exact_text_first(service: MemoryService) -> None:
    ids = fill(service)
    for text, event_id in zip(TEXTS, ids, strict=True):
        hits = recall(service, text, k=3, contiguity=0)
        assert hits[0].event.id == event_id
        assert hits[0].score == pytest.approx(1.0, abs=1e-5)
        assert [h.via for h in hits] == ["similarity"] * 3
        assert hits[0].score >= hits[1].score >= hits[2].score


def test_remember_without_session_starts_a_new_one(service: MemoryService) -> None:
    a = remember(service, "first thing")[0].event
    b = remember(service, "second thing")[0].event
    assert a.session != b.session and a.position == b.position == 0
    c = remember(service, "third thing", session=a.session)[0].event
    assert c.session == a.session and c.position == 1


def test_timestamps_are_normalised_to_utc(service: MemoryService) -> None:
    given = remember(service, "x", timestamp="2026-03-01T10:00:00+02:00")[0].event
    assert given.timestamp == "2026-03-01T08:00:00.000000Z"
    naive = remember(service, "y", timestamp="2026-03-01 10:00")[0].event
    assert naive.timestamp == "2026-03-01T10:00:00.000000Z"
    default = remember(service, "z")[0].event
    assert default.timestamp.endswith("Z")


def test_session_filter_and_namespace_isolation(service: MemoryService) -> None:
    remember(service, "alpha release notes", session="one")
    remember(service, "alpha release plan", session="two")
    remember(service, "alpha release secret", session="one", namespace="other")
    hits = recall(service, "alpha release", k=10, session="two")
    assert [h.event.text for h in hits] == ["alpha release plan"]
    assert {h.event.namespace for h in recall(service, "alpha release", k=10)} == {"default"}
    assert [h.event.text for h in recall(service, "alpha", k=10, namespace="other")] == [
        "alpha release secret"
    ]
    assert recall(service, "alpha", namespace="empty-ns") == []
    assert recall(service, "alpha", session="no-such-session") == []


def reopen(settings: Settings, encoder: HashingEncoder | None = None) -> MemoryService:
    return open_with_store(settings, encoder)[0]


def crash(service: MemoryService, store: EmbeddedStore) -> None:
    """Stop as a crash would: the log closed under the service, no final snapshot written."""
    store.log.close()


@pytest.mark.embedded_only
def test_restart_without_snapshot_replays_the_log(settings: Settings) -> None:
    first, first_store = open_with_store(settings)
    ids = fill(first)
    # No close(): as after a crash, no snapshot was written (snapshot_every is 1000).
    assert not list(settings.index_dir.glob("*.emxidx"))
    crash(first, first_store)
    encoder = CountingEncoder()
    second, store = open_with_store(settings, encoder)
    assert len(store) == len(TEXTS)
    assert encoder.encoded == 0, "recovery must not re-embed"
    assert recall(second, TEXTS[7])[0].event.id == ids[7]
    second.close()


@pytest.mark.embedded_only
def test_snapshot_then_newer_events_are_replayed(settings: Settings) -> None:
    first, first_store = open_with_store(settings)
    fill(first, TEXTS[:10])
    first.snapshot()
    fill(first, TEXTS[10:])
    crash(first, first_store)  # after the snapshot: the last 10 exist only in the log
    second, store = open_with_store(settings)
    assert len(store) == 20
    assert recall(second, TEXTS[15])[0].event.text == TEXTS[15]
    second.close()


@pytest.mark.embedded_only
@pytest.mark.parametrize("damage", ["truncate", "garbage", "delete", "stale-and-foreign"])
def test_corrupt_or_missing_snapshot_is_rebuilt(settings: Settings, damage: str) -> None:
    first = reopen(settings)
    ids = fill(first)
    first.close()
    path = settings.index_dir / snapshots.file_name("default")
    assert path.exists()
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:100])
    elif damage == "garbage":
        path.write_bytes(b"\x00garbage" * 50)
    elif damage == "delete":
        path.unlink()
    else:
        # A sound snapshot that claims events the log does not hold.
        other = Settings(data_dir=settings.data_dir.parent / "other")
        foreign = reopen(other)
        fill(foreign, [*TEXTS, *TEXTS])
        foreign.close()
        path.write_bytes((other.index_dir / snapshots.file_name("default")).read_bytes())
    encoder = CountingEncoder()
    second, store = open_with_store(settings, encoder)
    assert len(store) == len(TEXTS)
    assert encoder.encoded == 0
    for text, event_id in zip(TEXTS, ids, strict=True):
        assert recall(second, text, k=1)[0].event.id == event_id
    second.close()


def test_snapshot_is_written_every_n_events(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, snapshot_every=5)
    svc, store = open_with_store(settings)
    fill(svc, TEXTS[:6])
    store.wait_for_snapshots()
    header = snapshots.header(settings.index_dir / snapshots.file_name("default"))
    assert header is not None and header["last_seq"] >= 5
    svc.close()


def test_another_model_is_refused(settings: Settings) -> None:
    reopen(settings).close()
    with pytest.raises(StoreMismatch, match="hashing-bow-64"):
        reopen(settings, HashingEncoder(dim=64, model_id="other-model"))


def test_events_written_by_another_process_are_found(settings: Settings) -> None:
    reader = reopen(settings)
    writer = reopen(settings)
    event = remember(writer, "written elsewhere about kubernetes")[0].event
    assert recall(reader, "kubernetes written elsewhere")[0].event.id == event.id
    writer.close()
    reader.close()


def test_bad_input_writes_nothing(service: MemoryService, store: EmbeddedStore) -> None:
    cases = [
        {"text": ""},
        {"text": "   \n\t"},
        {"text": "x" * (service.settings.max_text_chars + 1)},
        {"text": "bad \ud800 surrogate"},
        {"text": "ok", "timestamp": "yesterday"},
        {"text": "ok", "metadata": ["not", "an", "object"]},
        {"text": "ok", "metadata": {"n": float("nan")}},
        {"text": "ok", "session": 42},
        {"text": "ok", "session": ""},
        {"text": "ok", "namespace": "../etc"},
        {"text": 17},
    ]
    for case in cases:
        with pytest.raises(InvalidInput):
            remember(service, **case)
    assert service.count() == 0 and len(store) == 0
    for k in (0, 101, -1, True, "5"):
        with pytest.raises(InvalidInput, match="k must be"):
            recall(service, "q", k=k)


@pytest.mark.embedded_only
def test_vectors_are_unit_float32(service: MemoryService, store: EmbeddedStore) -> None:
    fill(service, TEXTS[:3])
    _, _, vectors = next(store.log.vectors_after(0, dim=64))
    assert vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


# -- forget, capacity, batches, health ----------------------------------------------------------


def test_forget_by_id_and_by_session(service: MemoryService, store: EmbeddedStore) -> None:
    ids = fill(service)
    other = remember(service, "a different session about gardening", session="g")[0].event
    assert sorted(forget(service, ids=ids[:3], confirm=True)) == sorted(ids[:3])
    assert service.count() == len(TEXTS) - 3 + 1 and len(store) == len(TEXTS) - 2
    assert all(h.event.id not in ids[:3] for h in recall(service, TEXTS[0], k=50))
    assert forget(service, session="g", confirm=True) == [other.id]
    assert recall(service, "gardening session", k=50, session="g") == []
    assert health(service).status == "ok"


def test_forget_refuses_without_confirmation_or_target(service: MemoryService) -> None:
    ids = fill(service, TEXTS[:2])
    with pytest.raises(InvalidInput, match="confirm=true"):
        forget(service, ids=ids)
    with pytest.raises(InvalidInput, match="either ids"):
        forget(service, confirm=True)
    with pytest.raises(InvalidInput, match="either ids"):
        forget(service, ids=ids, session="s", confirm=True)
    with pytest.raises(InvalidInput, match="ids must be a list of strings"):
        forget(service, ids="abc", confirm=True)
    assert service.count() == 2


def test_forget_with_an_unknown_id_removes_nothing(service: MemoryService, store: EmbeddedStore) -> None:
    ids = fill(service, TEXTS[:3])
    with pytest.raises(NotFound, match="no-such-id"):
        forget(service, ids=[ids[0], "no-such-id"], confirm=True)
    with pytest.raises(NotFound):
        forget(service, ids=[ids[0]], namespace="elsewhere", confirm=True)
    assert service.count() == 3 and len(store) == 3


@pytest.mark.embedded_only
def test_forgotten_events_stay_gone_after_restart(settings: Settings) -> None:
    first, first_store = open_with_store(settings)
    ids = fill(first)
    first.snapshot()  # the snapshot still holds the events forgotten below
    forget(first, ids=ids[:5], confirm=True)
    crash(first, first_store)  # no snapshot after the forget
    second, store = open_with_store(settings)
    assert len(store) == len(TEXTS) - 5
    assert all(h.event.id not in ids[:5] for h in recall(second, TEXTS[1], k=50))
    second.close()
    third, store = open_with_store(settings)  # and from the snapshot written on close
    assert len(store) == len(TEXTS) - 5
    third.close()


def test_forget_in_one_process_is_seen_by_another(settings: Settings) -> None:
    a, b = reopen(settings), reopen(settings)
    ids = fill(a, TEXTS[:4])
    assert recall(b, TEXTS[2], k=1)[0].event.id == ids[2]
    forget(a, ids=[ids[2]], confirm=True)
    assert all(h.event.id != ids[2] for h in recall(b, TEXTS[2], k=10))
    a.close()
    b.close()


def test_capacity_limit(tmp_path: Path) -> None:
    svc, store = open_with_store(Settings(data_dir=tmp_path, max_events=10))
    ids = fill(svc, TEXTS[:8])
    report = health(svc)
    assert report.status == "warning" and any("EMX_MAX_EVENTS" in r for r in report.reasons)
    fill(svc, TEXTS[8:10])
    with pytest.raises(CapacityExceeded, match="EMX_MAX_EVENTS is 10"):
        remember(svc, "one too many")
    assert svc.count() == 10 and store.total() == 10
    assert recall(svc, TEXTS[3], k=1)[0].event.id == ids[3]  # reads still work
    forget(svc, ids=ids[:1], confirm=True)
    remember(svc, "room again")  # forgetting frees capacity
    assert store.total() == 10
    svc.close()


def test_recall_batch_matches_single_recalls(service: MemoryService) -> None:
    fill(service)
    queries = [TEXTS[3], "deployment port", TEXTS[11]]
    batch = recall_batch(service, queries, k=4)
    assert len(batch) == 3
    for query, hits in zip(queries, batch, strict=True):
        assert [h.event.id for h in hits] == [h.event.id for h in recall(service, query, k=4)]


def test_recall_batch_on_a_trained_index_matches_single_recalls(tmp_path: Path) -> None:
    """At SMALL_BATCH queries or more, a trained index answers through ivf_batch's kernels."""
    assert ivf_batch.wait_ready(timeout=600), ivf_batch.unavailable_reason()
    svc, store = open_with_store(Settings(data_dir=tmp_path, index_train_at=200))
    rng = np.random.default_rng(3)
    texts = [" ".join(f"w{j}" for j in rng.choice(400, 8, replace=False)) for _ in range(300)]
    for t in texts:
        remember(svc, t, session="s")
    index = store.index("default")
    assert index is not None and index.wait_idle(60) and index.trained
    queries = texts[::7]
    assert len(queries) >= SMALL_BATCH
    batch = recall_batch(svc, queries, k=3)
    assert index.stats().batch_searches == 1
    for query, hits in zip(queries, batch, strict=True):
        assert hits[0].event.text == query
        # The hashing encoder's scores often tie exactly, and tied events may come in either
        # order; the scores of every item, neighbours included, must be the same.
        assert np.allclose([h.score for h in hits], [h.score for h in recall(svc, query, k=3)], atol=1e-6)
    svc.close()


def test_health_warns_when_the_batch_kernels_cannot_load(tmp_path: Path) -> None:
    broken = ivf_batch.KernelLoader(module="emx_mcp.storage.kernels_that_do_not_exist")
    with ivf_batch.use_loader(broken):
        assert not ivf_batch.wait_ready(timeout=60)
        svc, store = open_with_store(Settings(data_dir=tmp_path, index_train_at=200))
        for i in range(150):
            remember(svc, f"entry {i} of the first batch")
        assert health(svc).status == "ok"  # a flat index has no use for them
        for i in range(150):
            remember(svc, f"entry {i} of the second batch")
        index = store.index("default")
        assert index is not None and index.wait_idle(60) and index.trained
        report = health(svc)
        svc.close()
    assert report.status == "warning" and report.batch_kernels.startswith("unavailable")
    assert any("FAISS answers batches" in r and "kernels_that_do_not_exist" in r for r in report.reasons)


def test_recall_batch_limits(service: MemoryService) -> None:
    with pytest.raises(InvalidInput, match="1 to 256"):
        recall_batch(service, [])
    with pytest.raises(InvalidInput, match="1 to 256"):
        recall_batch(service, ["q"] * 257)
    with pytest.raises(InvalidInput, match="list of strings"):
        recall_batch(service, "just one string")
    with pytest.raises(InvalidInput, match=r"queries\[1\]"):
        recall_batch(service, ["fine", ""])
    assert recall_batch(service, ["q"] * 256, k=1) == [[] for _ in range(256)]


@pytest.mark.embedded_only
def test_health_reports_the_index(service: MemoryService) -> None:
    fill(service)
    report = health(service)
    assert report.kind == "flat" and report.vectors == report.events_in_log == len(TEXTS)
    assert report.buffered == len(TEXTS) and report.measured_recall_at_10 == 1.0
    assert report.status == "ok" and report.reasons == []
    assert report.bytes_on_disk.event_log > 0 and report.bytes_in_memory >= len(TEXTS) * 64 * 4
    assert health(service, "unused-namespace").vectors == 0


def test_service_trains_ivf_and_survives_restart(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, index_train_at=200)
    svc, store = open_with_store(settings)
    texts = [f"entry {i} about {w} and {v}" for i in range(260) for w, v in [(i % 17, i % 23)]]
    for t in texts:
        remember(svc, t, session="s")
    index = store.index("default")
    assert index is not None and index.wait_idle(60)
    assert health(svc).kind == "ivf"
    svc.close()
    again = reopen(settings)
    report = health(again)
    assert report.kind == "ivf" and report.vectors == 260 and report.status in {"ok", "warning"}
    hits = recall(again, texts[100], k=1)
    assert hits[0].event.text == texts[100]
    # A session filter on a trained index still finds every event of a small session, exactly.
    small = [
        remember(again, t, session="small")[0].event.id for t in ("entry alpha", "entry kappa", "entry gamma")
    ]
    hits = recall(again, "entry", k=10, session="small", min_score=0.0)
    assert {h.event.id for h in hits} == set(small)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    again.close()
