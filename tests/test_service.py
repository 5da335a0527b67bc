from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from emx_mcp.config import Settings
from emx_mcp.embedding import HashingEncoder, Vectors
from emx_mcp.errors import InvalidInput, StoreMismatch
from emx_mcp.service import MemoryService


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
    return [service.remember(t, session="s", namespace=namespace)[0].id for t in texts]


def test_remember_then_recall_finds_exact_text_first(service: MemoryService) -> None:
    ids = fill(service)
    for text, event_id in zip(TEXTS, ids, strict=True):
        hits = service.recall(text, k=3)
        assert hits[0].event.id == event_id
        assert hits[0].score == pytest.approx(1.0, abs=1e-5)
        assert [h.via for h in hits] == ["similarity"] * 3
        assert hits[0].score >= hits[1].score >= hits[2].score


def test_remember_without_session_starts_a_new_one(service: MemoryService) -> None:
    a = service.remember("first thing")[0]
    b = service.remember("second thing")[0]
    assert a.session != b.session and a.position == b.position == 0
    c = service.remember("third thing", session=a.session)[0]
    assert c.session == a.session and c.position == 1


def test_timestamps_are_normalised_to_utc(service: MemoryService) -> None:
    given = service.remember("x", timestamp="2026-03-01T10:00:00+02:00")[0]
    assert given.timestamp == "2026-03-01T08:00:00.000000Z"
    naive = service.remember("y", timestamp="2026-03-01 10:00")[0]
    assert naive.timestamp == "2026-03-01T10:00:00.000000Z"
    default = service.remember("z")[0]
    assert default.timestamp.endswith("Z")


def test_session_filter_and_namespace_isolation(service: MemoryService) -> None:
    service.remember("alpha release notes", session="one")
    service.remember("alpha release plan", session="two")
    service.remember("alpha release secret", session="one", namespace="other")
    hits = service.recall("alpha release", k=10, session="two")
    assert [h.event.text for h in hits] == ["alpha release plan"]
    assert {h.event.namespace for h in service.recall("alpha release", k=10)} == {"default"}
    assert [h.event.text for h in service.recall("alpha", k=10, namespace="other")] == [
        "alpha release secret"
    ]
    assert service.recall("alpha", namespace="empty-ns") == []
    assert service.recall("alpha", session="no-such-session") == []


def reopen(settings: Settings, encoder: HashingEncoder | None = None) -> MemoryService:
    svc = MemoryService(settings, encoder or HashingEncoder(dim=64))
    svc.open()
    return svc


def test_restart_without_snapshot_replays_the_log(settings: Settings) -> None:
    first = reopen(settings)
    ids = fill(first)
    # No close(): as after a crash, no snapshot was written (snapshot_every is 1000).
    assert not list(settings.index_dir.glob("*.emxidx"))
    first.event_log.close()
    encoder = CountingEncoder()
    second = reopen(settings, encoder)
    assert len(second) == len(TEXTS)
    assert encoder.encoded == 0, "recovery must not re-embed"
    assert second.recall(TEXTS[7])[0].event.id == ids[7]
    second.close()


def test_snapshot_then_newer_events_are_replayed(settings: Settings) -> None:
    first = reopen(settings)
    fill(first, TEXTS[:10])
    first.snapshot()
    fill(first, TEXTS[10:])
    first.event_log.close()  # crash after the snapshot: the last 10 exist only in the log
    second = reopen(settings)
    assert len(second) == 20
    assert second.recall(TEXTS[15])[0].event.text == TEXTS[15]
    second.close()


@pytest.mark.parametrize("damage", ["truncate", "garbage", "delete", "stale-and-foreign"])
def test_corrupt_or_missing_snapshot_is_rebuilt(settings: Settings, damage: str) -> None:
    first = reopen(settings)
    ids = fill(first)
    first.close()
    path = settings.index_dir / "default.emxidx"
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
        path.write_bytes((other.index_dir / "default.emxidx").read_bytes())
    encoder = CountingEncoder()
    second = reopen(settings, encoder)
    assert len(second) == len(TEXTS)
    assert encoder.encoded == 0
    for text, event_id in zip(TEXTS, ids, strict=True):
        assert second.recall(text, k=1)[0].event.id == event_id
    second.close()


def test_snapshot_is_written_every_n_events(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, snapshot_every=5)
    svc = reopen(settings)
    fill(svc, TEXTS[:6])
    thread = svc._snapshot_thread
    assert thread is not None
    thread.join()
    from emx_mcp.storage.index import snapshot_last_seq

    assert (snapshot_last_seq(settings.index_dir / "default.emxidx") or 0) >= 5
    svc.close()


def test_another_model_is_refused(settings: Settings) -> None:
    reopen(settings).close()
    with pytest.raises(StoreMismatch, match="hashing-bow-64"):
        reopen(settings, HashingEncoder(dim=64, model_id="other-model"))


def test_events_written_by_another_process_are_found(settings: Settings) -> None:
    reader = reopen(settings)
    writer = reopen(settings)
    event = writer.remember("written elsewhere about kubernetes")[0]
    assert reader.recall("kubernetes written elsewhere")[0].event.id == event.id
    writer.close()
    reader.close()


def test_bad_input_writes_nothing(service: MemoryService) -> None:
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
            service.remember(**case)
    assert service.event_log.count() == 0 and len(service) == 0
    for k in (0, 101, -1, True, "5"):
        with pytest.raises(InvalidInput, match="k must be"):
            service.recall("q", k=k)


def test_vectors_are_unit_float32(service: MemoryService) -> None:
    fill(service, TEXTS[:3])
    _, _, vectors = next(service.event_log.vectors_after(0, dim=64))
    assert vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
