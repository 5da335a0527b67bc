"""predict_next through the service and the in-memory MCP client."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mcp import Client

from emx_mcp.config import Settings
from emx_mcp.errors import InvalidInput, NotFound, StoreMismatch
from emx_mcp.lvm import train
from emx_mcp.lvm.model import NextEpisodeGRU
from emx_mcp.lvm.predictor import checkpoint_path
from emx_mcp.service import MemoryService
from emx_mcp.storage.embedded import EmbeddedStore
from tests.helpers import open_service, predict_next, remember
from tests.lvm.test_lvm import second_order_sessions

pytestmark = pytest.mark.contract

STEPS = ["install the database", "run the migrations", "seed test data", "start the api", "check the logs"]


def remember_steps(service: MemoryService, session: str, texts: list[str]) -> list[str]:
    return [remember(service, t, session=session)[0].event.id for t in texts]


def test_without_a_checkpoint_copy_last_is_used(service: MemoryService) -> None:
    first = remember_steps(service, "old", STEPS)
    current = remember_steps(service, "now", STEPS[:2])
    prediction = predict_next(service, session="now", k=3)
    assert prediction.method == "copy_last" and prediction.checkpoint is None
    ids = [h.event.id for h in prediction.hits]
    assert not set(current) & set(ids), "context episodes are never predicted"
    assert ids[0] == first[1]  # most like the latest episode of the context
    assert all(h.via == "prediction" for h in prediction.hits)


def test_after_event_id_sets_the_context(service: MemoryService) -> None:
    ids = remember_steps(service, "s", STEPS)
    prediction = predict_next(service, after_event_id=ids[2], k=5)
    got = [h.event.id for h in prediction.hits]
    assert not set(ids[:3]) & set(got)
    assert set(ids[3:]) <= set(got)


def test_default_is_the_most_recent_session(service: MemoryService) -> None:
    remember_steps(service, "a", STEPS)
    latest = remember_steps(service, "b", ["check the logs", "restart the api"])
    got = {h.event.id for h in predict_next(service, k=10).hits}
    assert not set(latest) & got


def test_bad_input(service: MemoryService) -> None:
    ids = remember_steps(service, "s", STEPS[:2])
    remember_steps(service, "t", STEPS[2:])
    with pytest.raises(NotFound, match="no event with id"):
        predict_next(service, after_event_id="nope")
    with pytest.raises(NotFound):
        predict_next(service, after_event_id=ids[0], namespace="other")
    with pytest.raises(InvalidInput, match="belongs to session 's'"):
        predict_next(service, session="t", after_event_id=ids[0])
    with pytest.raises(NotFound, match="no episodes"):
        predict_next(service, session="missing")
    with pytest.raises(InvalidInput, match="k must be"):
        predict_next(service, k=0)
    empty = predict_next(service, namespace="empty")
    assert empty.method == "copy_last" and empty.hits == []


def save_checkpoint(
    service: MemoryService, method: str, weight: float | None, model_id: str | None = None
) -> None:
    model = NextEpisodeGRU(service.encoder.dim, hidden=16)
    metrics = {
        m: {"hit@1": 0.1, "hit@5": hit5, "hit@10": 0.3, "mrr": 0.15, "in_batch_hit@5": 0.9}
        for m, hit5 in (("copy_last", 0.2), ("analog", 0.3), ("lvm", 0.4), ("blend_0.75", 0.5))
    }
    outcome = train.Outcome(method, weight, metrics, best_epoch=2)
    path = checkpoint_path(service.settings.data_dir, "default")
    path.parent.mkdir(parents=True, exist_ok=True)
    train.save(path, model, outcome, model_id or service.encoder.model_id, train.TrainConfig(context=4))


class TableEncoder:
    """Texts "e<n>" to given vectors: stores the test_lvm sessions through the real service."""

    def __init__(self, vectors: np.ndarray) -> None:
        self.vectors = vectors

    @property
    def model_id(self) -> str:
        return "table"

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return np.ascontiguousarray(self.vectors[[int(t.removeprefix("e")) for t in texts]])


def test_a_trained_predictor_is_used_where_it_beat_the_baselines(tmp_path: Path) -> None:
    """Sessions whose next topic depends on the last two: the GRU learns it, the baselines cannot."""
    sessions = second_order_sessions(300, length=12, seed=1)
    vectors = np.vstack([s.vectors for s in sessions])
    service = open_service(Settings(data_dir=tmp_path), TableEncoder(vectors))
    row = 0
    for session in sessions:
        for _ in session.seqs:
            remember(service, f"e{row}", session=session.name)
            row += 1
    config = train.TrainConfig(context=4, epochs=25, patience=3, hidden=64)
    outcome, path = service.train_predictor("default", config)
    m = outcome.metrics
    assert outcome.method in ("lvm", "blend") and path.exists()
    chosen = "lvm" if outcome.method == "lvm" else f"blend_{outcome.blend_weight}"
    assert m[chosen]["hit@5"] > max(m["copy_last"]["hit@5"], m["analog"]["hit@5"])
    # predict_next uses that checkpoint and reports its own validation figures.
    last = sessions[-1]
    prediction = predict_next(service, session=last.name, k=5)
    assert prediction.method == outcome.method and prediction.checkpoint is not None
    assert prediction.checkpoint.header.outcome.metrics == m
    service.close()


def test_analog_predicts_what_followed_the_most_similar_past_episode(service: MemoryService) -> None:
    past = remember_steps(service, "past", ["design the schema", "write the migration", "deploy to staging"])
    remember_steps(service, "unrelated", ["water the plants", "feed the cat"])
    now = remember_steps(service, "now", ["design the schema again"])
    save_checkpoint(service, "analog", None)
    prediction = predict_next(service, session="now", k=2)
    assert prediction.method == "analog"
    # The current episode is most like "design the schema"; what followed it there comes first.
    assert prediction.hits[0].event.id == past[1]
    assert now[0] not in [h.event.id for h in prediction.hits]
    copy_last = predict_next(service, session="now", k=1)  # without a checkpoint: copy-last
    checkpoint_path(service.settings.data_dir, "default").unlink()
    assert predict_next(service, session="now", k=1).hits[0].event.id == past[0] != copy_last.hits[0].event.id


def test_a_checkpoint_of_another_model_is_refused(service: MemoryService) -> None:
    remember_steps(service, "s", STEPS)
    save_checkpoint(service, "lvm", 1.0, model_id="some-other-model")
    with pytest.raises(StoreMismatch, match="some-other-model"):
        predict_next(service, session="s")


@pytest.mark.anyio
async def test_predict_next_tool(client: Client, service: MemoryService) -> None:
    for t in STEPS:
        await client.call_tool("remember", {"text": t, "session": "s"})
    result = await client.call_tool("predict_next", {"session": "s", "k": 2})
    assert not result.is_error and result.structured_content is not None
    out: dict[str, Any] = result.structured_content
    assert out["method"] == "copy_last" and out["model"] is None
    save_checkpoint(service, "blend", 0.75)
    out = (await client.call_tool("predict_next", {"session": "s", "k": 2})).structured_content or {}
    assert out["method"] == "blend" and out["model"]["blend_weight"] == 0.75
    # Only the chosen method's figures and the better baseline's Hit@5, not every method's block.
    assert out["model"]["validation"] == {"hit@1": 0.1, "hit@5": 0.5, "hit@10": 0.3, "mrr": 0.15}
    assert out["model"]["baseline_hit_at_5"] == 0.3 and "metrics" not in out["model"]
    bad = await client.call_tool("predict_next", {"after_event_id": "unknown"})
    assert bad.is_error and "no event with id" in bad.content[0].text  # type: ignore[union-attr]
    tools = {t.name: t for t in (await client.list_tools()).tools}
    assert tools["predict_next"].annotations is not None and tools["predict_next"].annotations.read_only_hint


def test_vectors_from_the_log_match_the_index(service: MemoryService, store: EmbeddedStore) -> None:
    remember_steps(service, "s", STEPS)
    ((name, seqs, vectors),) = store.sessions("default")
    assert name == "s" and len(seqs) == 5 and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
