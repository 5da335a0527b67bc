"""Train the next-episode GRU, choose the method on validation sessions, save a checkpoint.

Lessons others paid for, applied here: predictions and targets are L2-normalised before every
loss and metric; the loss is MSE + 0.5 * (1 - cos) + alpha * InfoNCE (tau 0.07); model selection
and early stopping use validation Hit@5 against the whole memory, never the loss; the split is by
whole sessions; a checkpoint records the embedding model and is refused with another one.

The InfoNCE term ranks each prediction against the training memory (every episode of the
training sessions, or a sample of MAX_NEGATIVES of them plus the batch's targets), not only the
other targets of its batch: that is the ranking `predict_next` is judged on. The episodes of a
window's own context are masked out of it, as they are at evaluation.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from safetensors.torch import load_file
from safetensors.torch import save as save_bytes
from torch import nn

from emx_mcp.embedding import Vectors
from emx_mcp.errors import InvalidInput, model_mismatch
from emx_mcp.files import write_atomic
from emx_mcp.lvm import evaluate
from emx_mcp.lvm.data import Session, Windows, split_sessions, windows
from emx_mcp.lvm.model import NextEpisodeGRU

MIN_TRAIN_WINDOWS = 200
MIN_VALIDATION_WINDOWS = 50
BLEND_WEIGHTS = (0.25, 0.5, 0.75, 1.0)
MAX_NEGATIVES = 16_384


@dataclass(frozen=True, slots=True)
class TrainConfig:
    context: int = 16
    epochs: int = 20
    patience: int = 3
    hidden: int = 512
    batch_size: int = 128
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    warmup: float = 0.05  # fraction of steps
    clip: float = 1.0
    alpha: float = 0.05  # weight of InfoNCE
    tau: float = 0.07
    validation: float = 0.2  # fraction of sessions
    seed: int = 0


@dataclass(slots=True)
class Outcome:
    """What training chose and why: every figure measured on the validation sessions."""

    method: str  # "lvm", "blend", "copy_last" or "analog"
    blend_weight: float | None
    metrics: dict[str, dict[str, float]]  # method label -> full-index metrics
    best_epoch: int
    history: list[dict[str, float]] = field(default_factory=list)
    train_windows: int = 0
    validation_windows: int = 0
    train_sessions: int = 0
    validation_sessions: int = 0
    seconds: float = 0.0


def loss_fn(
    pred: torch.Tensor, target: torch.Tensor, negatives: Negatives, batch: Batch, alpha: float, tau: float
) -> torch.Tensor:
    """MSE + 0.5 * (1 - cos) + alpha * InfoNCE over the training memory, on unit vectors."""
    pred = nn.functional.normalize(pred, dim=-1)
    target = nn.functional.normalize(target, dim=-1)
    mse = ((pred - target) ** 2).sum(-1).mean()
    cos = (1 - (pred * target).sum(-1)).mean()
    if alpha == 0.0:
        return mse + 0.5 * cos
    logits = (pred @ negatives.vectors[batch.columns].T / tau).masked_fill(batch.masked, float("-inf"))
    info_nce = nn.functional.cross_entropy(logits, batch.labels)
    return mse + 0.5 * cos + alpha * info_nce


@dataclass(frozen=True, slots=True)
class Batch:
    """The memory rows a batch is ranked against, each window's right row, and its masked ones."""

    columns: torch.Tensor  # (K,) rows of Negatives.vectors
    labels: torch.Tensor  # (B,) position of each window's target within `columns`
    masked: torch.Tensor  # (B, K) True where a column is in the window's context


@dataclass(frozen=True, slots=True)
class Negatives:
    """The training memory: every episode of the training sessions, as InfoNCE's candidates."""

    seqs: npt.NDArray[np.int64]  # (N,) ascending
    vectors: torch.Tensor  # (N, d)

    @classmethod
    def of(cls, sessions: list[Session]) -> Negatives:
        seqs = np.concatenate([s.seqs for s in sessions])
        vectors = np.vstack([s.vectors for s in sessions])
        order = np.argsort(seqs)
        return cls(seqs[order], torch.from_numpy(np.ascontiguousarray(vectors[order])))

    def batch(self, w: Windows, idx: npt.NDArray[np.int64], rng: np.random.Generator) -> Batch:
        target_rows = np.searchsorted(self.seqs, w.target_seqs[idx])
        if len(self.seqs) <= MAX_NEGATIVES:
            columns = np.arange(len(self.seqs))
        else:
            sample = rng.choice(len(self.seqs), MAX_NEGATIVES, replace=False)
            columns = np.union1d(sample, target_rows)
        labels = np.searchsorted(columns, target_rows)
        contexts = w.context_seqs[idx]  # (B, C), -1 for padding
        rows = np.searchsorted(self.seqs, contexts).clip(0, len(self.seqs) - 1)
        known = (contexts >= 0) & (self.seqs[rows] == contexts)
        places = np.searchsorted(columns, rows).clip(0, len(columns) - 1)
        present = known & (columns[places] == rows)
        masked = np.zeros((len(idx), len(columns)), dtype=bool)
        batch_rows, context_slots = np.nonzero(present)
        masked[batch_rows, places[batch_rows, context_slots]] = True
        return Batch(torch.from_numpy(columns), torch.from_numpy(labels), torch.from_numpy(masked))


def predict(model: NextEpisodeGRU, w: Windows, batch: int = 1024) -> Vectors:
    model.eval()
    out = []
    with torch.no_grad():
        for lo in range(0, len(w), batch):
            ctx = torch.from_numpy(w.contexts[lo : lo + batch])
            lengths = torch.from_numpy(w.lengths[lo : lo + batch])
            out.append(model(ctx, lengths).numpy())
    return np.vstack(out).astype(np.float32) if out else np.zeros((0, model.dim), np.float32)


def train(
    sessions: list[Session],
    config: TrainConfig,
    progress: Callable[[str], None] | None = None,
) -> tuple[NextEpisodeGRU, Outcome]:
    """Train on most sessions, select on the rest; refuse when there is too little data."""
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    train_sessions, val_sessions = split_sessions(sessions, config.validation, config.seed)
    train_w, val_w = windows(train_sessions, config.context), windows(val_sessions, config.context)
    if len(train_w) < MIN_TRAIN_WINDOWS or len(val_w) < MIN_VALIDATION_WINDOWS:
        raise InvalidInput(
            f"too little data to train: {len(train_w)} training and {len(val_w)} validation examples "
            f"(from {len(train_sessions)} and {len(val_sessions)} sessions of 2+ episodes); need at least "
            f"{MIN_TRAIN_WINDOWS} and {MIN_VALIDATION_WINDOWS}. Store more sessions first."
        )
    memory = evaluate.Memory.of(sessions)
    negatives = Negatives.of(train_sessions)
    session_index = {s.name: i for i, s in enumerate(sessions)}
    model = NextEpisodeGRU(train_w.targets.shape[1], config.hidden)
    optimiser = torch.optim.AdamW(
        model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, warmup_cosine(len(train_w), config))

    # Epoch 0 is the untrained model, which is copy-last: training must beat it to be kept.
    best = evaluate.rank_metrics(predict(model, val_w), val_w, memory)
    best_state = {k: v.clone() for k, v in model.state_dict().items()}
    best_epoch, stale = 0, 0
    history = [{"epoch": 0, "loss": float("nan"), **best}]
    rng = np.random.default_rng(config.seed)
    for epoch in range(1, config.epochs + 1):
        loss = one_epoch(model, train_w, negatives, optimiser, scheduler, config, rng)
        metrics = evaluate.rank_metrics(predict(model, val_w), val_w, memory)
        history.append({"epoch": epoch, "loss": loss, **metrics})
        if progress:
            progress(f"epoch {epoch}/{config.epochs}: loss {loss:.4f}, val hit@5 {metrics['hit@5']:.4f}")
        if metrics["hit@5"] > best["hit@5"]:
            best, best_epoch, stale = metrics, epoch, 0
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
            if stale >= config.patience:
                break
    model.load_state_dict(best_state)
    outcome = choose(model, val_w, memory, session_index)
    outcome.best_epoch, outcome.history = best_epoch, history
    outcome.train_windows, outcome.validation_windows = len(train_w), len(val_w)
    outcome.train_sessions, outcome.validation_sessions = len(train_sessions), len(val_sessions)
    outcome.seconds = round(time.perf_counter() - started, 2)
    return model, outcome


def warmup_cosine(windows_count: int, config: TrainConfig) -> Callable[[int], float]:
    """The learning-rate factor per step: linear warm-up, then cosine decay to zero."""
    total = math.ceil(windows_count / config.batch_size) * config.epochs
    warmup = max(1, int(config.warmup * total))

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    return schedule


def one_epoch(
    model: NextEpisodeGRU,
    train_w: Windows,
    negatives: Negatives,
    optimiser: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    config: TrainConfig,
    rng: np.random.Generator,
) -> float:
    """One pass over the training windows in a random order; the mean loss."""
    model.train()
    order = rng.permutation(len(train_w))
    losses = []
    for lo in range(0, len(order), config.batch_size):
        idx = order[lo : lo + config.batch_size]
        pred = model(torch.from_numpy(train_w.contexts[idx]), torch.from_numpy(train_w.lengths[idx]))
        target = torch.from_numpy(train_w.targets[idx])
        batch = negatives.batch(train_w, idx, rng)
        loss = loss_fn(pred, target, negatives, batch, config.alpha, config.tau)
        optimiser.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        nn.utils.clip_grad_norm_(model.parameters(), config.clip)
        optimiser.step()
        scheduler.step()
        losses.append(loss.item())
    return float(np.mean(losses))


def choose(
    model: NextEpisodeGRU, val_w: Windows, memory: evaluate.Memory, session_index: dict[str, int]
) -> Outcome:
    """The method with the best validation Hit@5; the model only if it beats both baselines."""
    model_pred = predict(model, val_w)
    metrics = {
        "copy_last": evaluate.rank_metrics(evaluate.copy_last(val_w), val_w, memory),
        "analog": evaluate.rank_metrics(evaluate.analog(val_w, memory, session_index), val_w, memory),
    }
    for weight in BLEND_WEIGHTS:
        label = "lvm" if weight == 1.0 else f"blend_{weight}"
        metrics[label] = evaluate.rank_metrics(evaluate.blend(model_pred, val_w.last, weight), val_w, memory)
    baseline = max(("copy_last", "analog"), key=lambda m: metrics[m]["hit@5"])
    learned = max((m for m in metrics if m not in ("copy_last", "analog")), key=lambda m: metrics[m]["hit@5"])
    if metrics[learned]["hit@5"] > max(metrics["copy_last"]["hit@5"], metrics["analog"]["hit@5"]):
        weight = 1.0 if learned == "lvm" else float(learned.split("_")[1])
        return Outcome("lvm" if learned == "lvm" else "blend", weight, metrics, 0)
    return Outcome(baseline, None, metrics, 0)


# -- checkpoints ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CheckpointHeader:
    """Everything needed to trust a checkpoint's weights, saved beside them."""

    embedding_model: str
    dim: int
    hidden: int
    context: int
    trained_at: str
    config: TrainConfig
    outcome: Outcome

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> CheckpointHeader:
        raw = json.loads(text)
        return cls(
            embedding_model=str(raw["embedding_model"]),
            dim=int(raw["dim"]),
            hidden=int(raw["hidden"]),
            context=int(raw["context"]),
            trained_at=str(raw["trained_at"]),
            config=TrainConfig(**raw["config"]),
            outcome=Outcome(**raw["outcome"]),
        )


def save(path: Path, model: NextEpisodeGRU, outcome: Outcome, model_id: str, config: TrainConfig) -> None:
    """Weights (safetensors, no pickle) and everything needed to trust them, written atomically."""
    header = CheckpointHeader(
        embedding_model=model_id,
        dim=model.dim,
        hidden=model.hidden,
        context=config.context,
        trained_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        config=config,
        outcome=outcome,
    )
    write_atomic(path, save_bytes(model.state_dict(), metadata={"emx": header.to_json()}))
    write_atomic(path.with_suffix(".eval.json"), (json.dumps(asdict(header), indent=1) + "\n").encode())


def load(path: Path, model_id: str, dim: int) -> tuple[NextEpisodeGRU, CheckpointHeader]:
    """Load a checkpoint; refuse one trained on another embedding model."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        header = CheckpointHeader.from_json((fh.metadata() or {})["emx"])
    if header.embedding_model != model_id or header.dim != dim:
        raise model_mismatch(
            str(path),
            f"{header.embedding_model!r} (dim {header.dim})",
            f"{model_id!r} (dim {dim})",
            "run `emx-mcp train-lvm` again",
        )
    model = NextEpisodeGRU(header.dim, header.hidden)
    model.load_state_dict(load_file(str(path)))
    model.eval()
    return model, header
