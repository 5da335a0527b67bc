"""What only the Milvus store has to prove: replicas sharing a collection, long texts, shared files."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from emx_mcp.config import Settings
from emx_mcp.embedding import HashingEncoder
from emx_mcp.errors import StoreMismatch
from emx_mcp.service import MemoryService
from emx_mcp.storage.milvus import TEXT_BYTES, MilvusStore
from emx_mcp.storage.records import NewEvent
from tests.helpers import forget, health, open_service, recall, remember
from tests.milvus_server import empty


@pytest.fixture
def milvus(tmp_path: Path, milvus_uri: str) -> Iterator[Settings]:
    settings = Settings(
        data_dir=tmp_path / "data", store="milvus", milvus_uri=milvus_uri, milvus_collection="single"
    )
    empty(settings)
    yield settings
    empty(settings)


def replicas(settings: Settings, count: int) -> list[MemoryService]:
    """Services over one collection, each with its own data directory, as on separate machines."""
    return [
        open_service(settings.model_copy(update={"data_dir": settings.data_dir / f"replica-{i}"}))
        for i in range(count)
    ]


def test_replicas_writing_one_session_at_once_keep_positions_unique_and_in_order(milvus: Settings) -> None:
    a, b = replicas(milvus, 2)
    written: dict[str, list[str]] = {"a": [], "b": []}

    def write(name: str, service: MemoryService) -> None:
        for i in range(15):
            text = f"replica {name} wrote note number {i} about topic {name}{i}"
            written[name] += [e.event.id for e in remember(service, text, session="shared")]

    threads = [threading.Thread(target=write, args=(n, s)) for n, s in (("a", a), ("b", b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stored = a.export_events(None)
    events = [e for batch, _ in stored for e in batch]
    positions = [e.position for e in events]
    assert len(events) == 30 and len(set(positions)) == 30, "two events share a position"
    assert sorted(positions) == list(range(30)), "positions are contiguous when nothing was forgotten"
    for name in ("a", "b"):  # each writer's own events keep the order it wrote them in
        by_id = {e.id: e.position for e in events}
        mine = [by_id[i] for i in written[name]]
        assert mine == sorted(mine)
    for service in (a, b):  # both replicas see everything at once
        assert service.count() == 30
    a.close()
    b.close()


def test_a_text_longer_than_a_milvus_field_comes_back_whole(milvus: Settings) -> None:
    service = open_service(milvus)
    store = service._store
    text = "kilimanjaro zanzibar " + "café au lait " * (TEXT_BYTES // 6)
    assert len(text.encode()) > 2 * TEXT_BYTES  # three pieces
    vector = service.embed_episodes([text])
    (event,), _ = store.append("default", "s", [NewEvent(text, "2026-11-30T00:00:00Z", {})], vector)
    assert store.events("default", [event.id])[0].text == text
    (hit,) = recall(service, "kilimanjaro zanzibar", k=1, max_chars=50_000)
    # Longer than the budget: shown as its best passage, a slice of the whole text.
    assert hit.event.id == event.id and hit.span is not None
    assert text[hit.span[0] : hit.span[1]] == hit.event.text
    (exported,) = [e for batch, _ in service.export_events(None) for e in batch]
    assert exported.text == text
    service.close()


def test_health_reports_milvus_and_calibrates_nprobe_once_for_every_replica(milvus: Settings) -> None:
    a, b = replicas(milvus, 2)
    for i in range(60):
        remember(a, f"entry {i}: {' '.join(f'w{(i * j) % 97}' for j in range(12))}", session=f"s{i % 3}")
    report = health(b)
    assert report.store == "milvus" and report.vectors == 60 and "IVF_FLAT" in report.index_type
    # Below the calibration size Milvus searches exactly (no IVF index on small segments yet).
    assert report.kind == "flat" and report.measured_recall_at_10 == 1.0
    store_a = a._store
    assert isinstance(store_a, MilvusStore)
    result = store_a.calibrate()
    # Against exact answers computed from the stored vectors; what Milvus Lite reaches is measured.
    assert 1 <= result["nprobe"] <= milvus.milvus_nlist and 0.0 < result["measured_recall_at_10"] <= 1.0
    report = health(b)  # the other replica reads the shared calibration
    assert (
        report.nprobe == result["nprobe"] and report.measured_recall_at_10 == result["measured_recall_at_10"]
    )
    a.close()
    b.close()


def test_a_store_of_another_model_is_refused(milvus: Settings) -> None:
    open_service(milvus).close()
    with pytest.raises(StoreMismatch, match="EMX_MILVUS_COLLECTION"):
        open_service(milvus, HashingEncoder(dim=64, model_id="other-model"))


def test_a_receipt_outlives_forgetting_its_events(milvus: Settings) -> None:
    service = open_service(milvus)
    first = remember(service, "deploy the api on friday", idempotency_key="k-1")
    forget(service, ids=[e.event.id for e in first], confirm=True)
    again = remember(service, "deploy the api on friday", idempotency_key="k-1")
    assert again == [] and service.count() == 0, "a retry after a forget must not store again"
    assert service.forgotten([e.event.id for e in first]) == {e.event.id for e in first}
    service.close()


def test_a_checkpoint_trained_on_one_replica_is_used_by_another(milvus: Settings) -> None:
    a, b = replicas(milvus, 2)
    store_a = a._store
    assert isinstance(store_a, MilvusStore)
    data = bytes(range(256)) * 1000  # several meta rows
    store_a.publish("lvm/default", data)
    assert b._store.fetch("lvm/default", None) == data
    import hashlib

    assert b._store.fetch("lvm/default", hashlib.sha256(data).hexdigest()) is None  # unchanged: not sent
    a.close()
    b.close()


@pytest.mark.parametrize(
    ("env", "mentions"),
    [
        ({"store": "milvus"}, "needs EMX_MILVUS_URI"),
        ({"store": "milvus", "milvus_uri": "milvus"}, "must end in .db"),
        ({"store": "milvus", "milvus_uri": "./m.db", "milvus_token": "root:Milvus"}, "takes no token"),
        ({"milvus_uri": "http://localhost:19530"}, "EMX_STORE is 'embedded'"),
    ],
)
def test_impossible_store_settings_are_refused_in_a_sentence(
    tmp_path: Path, env: dict[str, str], mentions: str
) -> None:
    with pytest.raises(ValueError, match=mentions):
        Settings(data_dir=tmp_path, **env)  # type: ignore[arg-type]
