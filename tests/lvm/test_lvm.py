from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from emx_mcp.embedding import normalize
from emx_mcp.errors import InvalidInput, StoreMismatch
from emx_mcp.lvm import evaluate, train
from emx_mcp.lvm.data import Session, split_sessions, windows
from emx_mcp.lvm.model import NextEpisodeGRU

DIM = 16


def topics(n: int, seed: int = 0) -> np.ndarray:
    return normalize(np.random.default_rng(seed).standard_normal((n, DIM)))


def noisy(v: np.ndarray, rng: np.random.Generator, scale: float = 0.15) -> np.ndarray:
    return normalize(v + scale * rng.standard_normal(v.shape))


def second_order_sessions(count: int, length: int = 12, seed: int = 0) -> list[Session]:
    """Sessions where the next topic depends on the current AND the previous one.

    Copy-last is useless (the next topic differs from the current), and the analog baseline,
    which looks only at the current episode, is right about half the time: a GRU reading the
    context can do better.
    """
    rng = np.random.default_rng(seed)
    t = topics(8, seed=42)
    out, seq = [], 1
    for s in range(count):
        a, b = int(rng.integers(8)), int(rng.integers(8))
        order = [a, b]
        while len(order) < length:
            order.append((order[-1] * 3 + order[-2] * 5 + 1) % 8)
        vectors = noisy(t[order], rng)
        out.append(Session(f"s{s}", np.arange(seq, seq + length, dtype=np.int64), vectors))
        seq += length
    return out


def test_windows_stay_inside_sessions_and_pad_on_the_left() -> None:
    sessions = second_order_sessions(3, length=5)
    w = windows(sessions, context=3)
    assert len(w) == 3 * 4
    assert w.lengths.tolist() == [1, 2, 3, 3] * 3
    first = w.context_seqs[0]
    assert first.tolist() == [-1, -1, int(sessions[0].seqs[0])]
    assert np.all(w.contexts[0, :2] == 0)
    for i in range(len(w)):
        own = next(s for s in sessions if s.name == w.sessions[i])
        assert set(w.context_seqs[i][w.context_seqs[i] >= 0]) <= set(own.seqs.tolist())
        assert w.target_seqs[i] in own.seqs


def test_split_is_by_whole_sessions_and_stable() -> None:
    sessions = second_order_sessions(200, length=3)
    train_s, val_s = split_sessions(sessions, 0.2, seed=1)
    assert {s.name for s in train_s}.isdisjoint({s.name for s in val_s})
    assert len(train_s) + len(val_s) == 200 and 20 <= len(val_s) <= 60
    again = split_sessions(list(reversed(sessions)), 0.2, seed=1)[1]
    assert {s.name for s in again} == {s.name for s in val_s}
    # No leakage: no validation window's target or context comes from a training session.
    val_w = windows(val_s, 4)
    train_seqs = {int(x) for s in train_s for x in s.seqs}
    assert not train_seqs & set(val_w.target_seqs.tolist())
    assert not train_seqs & {int(x) for x in val_w.context_seqs.ravel() if x >= 0}


def test_untrained_model_is_copy_last_and_ignores_padding() -> None:
    model = NextEpisodeGRU(DIM, hidden=32)
    sessions = second_order_sessions(2, length=6)
    w = windows(sessions, context=4)
    pred = train.predict(model, w)
    assert np.allclose(pred, w.last, atol=1e-6)
    torch.manual_seed(0)
    torch.nn.init.normal_(model.out.weight, std=0.1)
    wide = windows(sessions, context=8)  # same histories, more padding
    short = train.predict(model, windows(sessions, context=6))
    assert np.allclose(train.predict(model, wide), short, atol=1e-5)


def test_rank_metrics_exclude_the_context() -> None:
    sessions = second_order_sessions(10, length=6)
    memory = evaluate.Memory.of(sessions)
    w = windows(sessions, context=3)
    perfect = evaluate.rank_metrics(w.targets, w, memory)
    assert perfect["hit@1"] == 1.0 and perfect["mrr"] == 1.0
    copy = evaluate.rank_metrics(evaluate.copy_last(w), w, memory)
    assert copy["hit@1"] < 0.5  # the current episode itself is excluded, and the next topic differs
    assert 0.0 <= copy["in_batch_hit@5"] <= 1.0


def test_analog_predicts_what_followed_the_most_similar_past_episode() -> None:
    t = topics(4, seed=3)
    order = [0, 1, 2, 3]
    sessions = [Session(f"s{i}", np.arange(i * 4 + 1, i * 4 + 5), t[order]) for i in range(5)]
    memory = evaluate.Memory.of(sessions)
    w = windows(sessions, context=2)
    index = {s.name: i for i, s in enumerate(sessions)}
    predicted = evaluate.analog(w, memory, index)
    assert np.allclose(predicted, w.targets, atol=1e-5)


def test_training_beats_both_baselines_on_a_learnable_pattern() -> None:
    sessions = second_order_sessions(300, length=12, seed=1)
    config = train.TrainConfig(context=4, epochs=25, patience=3, hidden=64)
    _, outcome = train.train(sessions, config)
    m = outcome.metrics
    assert outcome.method in ("lvm", "blend")
    chosen = "lvm" if outcome.method == "lvm" else f"blend_{outcome.blend_weight}"
    assert m[chosen]["hit@5"] > max(m["copy_last"]["hit@5"], m["analog"]["hit@5"])
    # Early stopping kept the epoch with the best validation Hit@5, and stopped within patience.
    epochs = outcome.history
    best = max(epochs, key=lambda e: e["hit@5"])
    assert outcome.best_epoch == best["epoch"]
    assert epochs[-1]["epoch"] <= max(outcome.best_epoch + config.patience, config.epochs)
    assert outcome.train_sessions + outcome.validation_sessions == 300


def test_falls_back_to_the_best_baseline_when_the_model_does_not_beat_both() -> None:
    # With no training the model is exactly copy-last, so it cannot beat the baselines strictly.
    sessions = second_order_sessions(120, length=8, seed=4)
    _, outcome = train.train(sessions, train.TrainConfig(context=4, epochs=0, hidden=32))
    m = outcome.metrics
    assert m["lvm"]["hit@5"] == m["copy_last"]["hit@5"]
    assert outcome.method == max(("copy_last", "analog"), key=lambda k: m[k]["hit@5"])
    assert outcome.blend_weight is None and outcome.best_epoch == 0


def test_too_little_data_is_refused_with_numbers() -> None:
    with pytest.raises(InvalidInput, match=r"too little data.*need at least 200"):
        train.train(second_order_sessions(5, length=4), train.TrainConfig())


def test_checkpoint_round_trip_and_model_mismatch(tmp_path: Path) -> None:
    sessions = second_order_sessions(60, length=8)
    config = train.TrainConfig(context=4, epochs=2, hidden=32)
    model, outcome = train.train(sessions, config)
    path = tmp_path / "ns.safetensors"
    train.save(path, model, outcome, "model-a", config)
    loaded, header = train.load(path, "model-a", DIM)
    w = windows(sessions, 4)
    assert np.allclose(train.predict(loaded, w), train.predict(model, w), atol=1e-6)
    assert header.context == 4 and header.config == config
    assert header.outcome.method == outcome.method and header.outcome.metrics == outcome.metrics
    assert path.with_suffix(".eval.json").exists()
    with pytest.raises(StoreMismatch, match="model-a"):
        train.load(path, "model-b", DIM)
    with pytest.raises(StoreMismatch):
        train.load(path, "model-a", DIM + 1)
    assert b"pickle" not in path.read_bytes()[:200]


@pytest.mark.parametrize("cap", [10_000, 7])
def test_infonce_ranks_against_the_training_memory_without_the_context(
    cap: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(train, "MAX_NEGATIVES", cap)  # 7: a sample of the memory plus the targets
    sessions = second_order_sessions(3, length=6)
    negatives = train.Negatives.of(sessions)
    w = windows(sessions, context=3)
    idx = np.arange(len(w))
    batch = negatives.batch(w, idx, np.random.default_rng(0))
    seqs = negatives.seqs[batch.columns.numpy()]
    # Each window's label is the column of its own target ...
    assert (seqs[batch.labels.numpy()] == w.target_seqs).all()
    for row in range(len(w)):
        context = {int(s) for s in w.context_seqs[row] if s >= 0}
        masked = {int(s) for s in seqs[batch.masked[row].numpy()]}
        # ... and exactly the context episodes present among the columns are masked.
        assert masked == context & set(seqs.tolist())
        assert int(w.target_seqs[row]) not in masked
    if cap == 7:
        assert len(seqs) < len(negatives.seqs)
        assert set(w.target_seqs.tolist()) <= set(seqs.tolist())
