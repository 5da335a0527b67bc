"""predict_next through the service and the in-memory MCP client."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from mcp import Client

from emx_mcp.errors import InvalidInput, NotFound, StoreMismatch
from emx_mcp.lvm import train
from emx_mcp.lvm.model import NextEpisodeGRU
from emx_mcp.lvm.predictor import checkpoint_path
from emx_mcp.service import MemoryService
from emx_mcp.storage.embedded import EmbeddedStore
from tests.helpers import predict_next, remember

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
        m: {"hit@1": 0.1, "hit@5": 0.2, "hit@10": 0.3, "mrr": 0.15, "in_batch_hit@5": 0.9}
        for m in ("copy_last", "analog", "lvm")
    }
    outcome = train.Outcome(method, weight, metrics, best_epoch=2)
    path = checkpoint_path(service.settings.data_dir, "default")
    path.parent.mkdir(parents=True, exist_ok=True)
    train.save(path, model, outcome, model_id or service.encoder.model_id, train.TrainConfig(context=4))


def test_the_checkpoints_choice_is_used_and_reported(service: MemoryService) -> None:
    remember_steps(service, "s", STEPS)
    save_checkpoint(service, "blend", 0.5)
    prediction = predict_next(service, session="s")
    assert prediction.method == "blend" and prediction.checkpoint is not None
    assert prediction.checkpoint.context == 4
    # An untrained residual model predicts the latest episode, so the blend equals copy-last here.
    save_checkpoint(service, "copy_last", None)
    copy = predict_next(service, session="s")
    save_checkpoint(service, "blend", 0.5)
    assert [h.event.id for h in predict_next(service, session="s").hits] == [h.event.id for h in copy.hits]
    save_checkpoint(service, "analog", None)
    assert predict_next(service, session="s").method == "analog"


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
    assert out["model"]["metrics"]["lvm"]["hit@5"] == 0.2
    bad = await client.call_tool("predict_next", {"after_event_id": "unknown"})
    assert bad.is_error and "no event with id" in bad.content[0].text  # type: ignore[union-attr]
    tools = {t.name: t for t in (await client.list_tools()).tools}
    assert tools["predict_next"].annotations is not None and tools["predict_next"].annotations.read_only_hint


def test_vectors_from_the_log_match_the_index(service: MemoryService, store: EmbeddedStore) -> None:
    remember_steps(service, "s", STEPS)
    ((name, seqs, vectors),) = store.sessions("default")
    assert name == "s" and len(seqs) == 5 and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
