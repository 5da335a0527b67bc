"""Next-episode metrics against the whole memory, for the model and two baselines needing no training.

Full-index metrics rank the true next episode among *all* stored episodes of the namespace, the
episodes of the context excluded (they are trivially similar to the current one). In-batch Hit@K,
which other next-vector work reports, ranks it only among the other targets of a batch of 256:
far easier, reported for comparison only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from emx_mcp.embedding import Vectors, normalize
from emx_mcp.lvm.data import Ids, Session, Windows

KS = (1, 5, 10)
IN_BATCH = 256


@dataclass(frozen=True, slots=True)
class Memory:
    """Every stored episode of a namespace: the candidates, and the (episode -> next) pairs."""

    seqs: Ids  # (N,)
    vectors: Vectors  # (N, d)
    pair_seqs: Ids  # (P,) episodes that have a successor in their session
    pair_sessions: npt.NDArray[np.int64]  # (P,) index of the session of each pair
    pair_next: Vectors  # (P, d) the successor's vector

    @classmethod
    def of(cls, sessions: list[Session]) -> Memory:
        seqs = np.concatenate([s.seqs for s in sessions]) if sessions else np.zeros(0, np.int64)
        vectors = np.vstack([s.vectors for s in sessions]) if sessions else np.zeros((0, 0), np.float32)
        pair_seqs = np.concatenate([s.seqs[:-1] for s in sessions]) if sessions else seqs
        pair_sessions = np.concatenate([np.full(len(s.seqs) - 1, i) for i, s in enumerate(sessions)])
        pair_next = np.vstack([s.vectors[1:] for s in sessions])
        return cls(seqs, vectors, pair_seqs, pair_sessions.astype(np.int64), pair_next)


def rank_metrics(predictions: Vectors, windows: Windows, memory: Memory) -> dict[str, float]:
    """Hit@1/5/10 and MRR of the true next episode among all stored episodes, context excluded."""
    out = summarize(ranks(predictions, windows, memory))
    out["in_batch_hit@5"] = in_batch_hit(predictions, windows.targets, 5)
    return out


def summarize(ranked: npt.NDArray[np.int64]) -> dict[str, float]:
    out = {f"hit@{k}": float(np.mean(ranked <= k)) for k in KS}
    out["mrr"] = float(np.mean(1.0 / ranked))
    return out


def ranks(predictions: Vectors, windows: Windows, memory: Memory, chunk: int = 512) -> npt.NDArray[np.int64]:
    """1-based rank of each window's true next episode among all stored episodes, context excluded."""
    column = {int(s): i for i, s in enumerate(memory.seqs)}
    ranked = np.zeros(len(windows), dtype=np.int64)
    for lo in range(0, len(windows), chunk):
        hi = min(len(windows), lo + chunk)
        scores = predictions[lo:hi] @ memory.vectors.T
        for row, i in enumerate(range(lo, hi)):
            excluded = [column[int(s)] for s in windows.context_seqs[i] if s >= 0 and int(s) in column]
            scores[row, excluded] = -np.inf
            target = scores[row, column[int(windows.target_seqs[i])]]
            ranked[i] = int(np.sum(scores[row] > target)) + 1
    return ranked


def in_batch_hit(predictions: Vectors, targets: Vectors, k: int) -> float:
    hits = []
    for lo in range(0, len(targets), IN_BATCH):
        p, t = predictions[lo : lo + IN_BATCH], targets[lo : lo + IN_BATCH]
        scores = p @ t.T
        own = np.diag(scores)
        hits.append(np.sum(scores > own[:, None], axis=1) < k)
    return float(np.mean(np.concatenate(hits))) if hits else 0.0


def copy_last(windows: Windows) -> Vectors:
    """Baseline: the next episode is like the current one."""
    return windows.last


def analog(windows: Windows, memory: Memory, session_index: dict[str, int]) -> Vectors:
    """Baseline: find the past episode most like the current one; predict what followed it.

    Past means another session, or an earlier part of this one than the context.
    """
    out = np.zeros_like(windows.targets)
    pair_vectors_index = {int(s): i for i, s in enumerate(memory.seqs)}
    pair_vectors = memory.vectors[[pair_vectors_index[int(s)] for s in memory.pair_seqs]]
    for lo in range(0, len(windows), 512):
        hi = min(len(windows), lo + 512)
        sims = windows.last[lo:hi] @ pair_vectors.T
        for row, i in enumerate(range(lo, hi)):
            own = session_index.get(windows.sessions[i], -1)
            first_context = windows.context_seqs[i][windows.context_seqs[i] >= 0].min()
            future = (memory.pair_sessions == own) & (memory.pair_seqs >= first_context)
            sims[row, future] = -np.inf
            out[i] = memory.pair_next[int(np.argmax(sims[row]))]
    return normalize(out)


def blend(model: Vectors, last: Vectors, weight: float) -> Vectors:
    """weight * model + (1 - weight) * copy-last, normalised."""
    return normalize(weight * model + (1.0 - weight) * last)
