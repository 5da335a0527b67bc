"""Sessions of episode vectors, cut into (context, target) windows, split by whole sessions."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from emx_mcp.embedding import Vectors

Ids = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Session:
    name: str
    seqs: Ids  # (L,) event seqs in position order
    vectors: Vectors  # (L, d)


@dataclass(frozen=True, slots=True)
class Windows:
    """Next-episode examples: predict targets[i] from the up-to-C episodes before it."""

    contexts: Vectors  # (n, C, d), left-padded with zeros
    lengths: npt.NDArray[np.int64]  # (n,) real episodes in each context, >= 1
    context_seqs: Ids  # (n, C) seqs of the context episodes, -1 for padding
    targets: Vectors  # (n, d)
    target_seqs: Ids  # (n,)
    sessions: list[str]  # (n,) the session each window comes from

    def __len__(self) -> int:
        return len(self.targets)

    @property
    def last(self) -> Vectors:
        """The current (most recent) episode of each context, (n, d)."""
        return np.ascontiguousarray(self.contexts[:, -1, :])


def windows(sessions: list[Session], context: int) -> Windows:
    """Every (context, next episode) pair inside each session; never across sessions."""
    dim = sessions[0].vectors.shape[1] if sessions else 0
    rows = [(s, t) for s in sessions for t in range(1, len(s.seqs))]
    n = len(rows)
    contexts = np.zeros((n, context, dim), dtype=np.float32)
    context_seqs = np.full((n, context), -1, dtype=np.int64)
    lengths = np.zeros(n, dtype=np.int64)
    targets = np.zeros((n, dim), dtype=np.float32)
    target_seqs = np.zeros(n, dtype=np.int64)
    for i, (s, t) in enumerate(rows):
        lo = max(0, t - context)
        span = t - lo
        contexts[i, context - span :] = s.vectors[lo:t]
        context_seqs[i, context - span :] = s.seqs[lo:t]
        lengths[i] = span
        targets[i] = s.vectors[t]
        target_seqs[i] = s.seqs[t]
    return Windows(contexts, lengths, context_seqs, targets, target_seqs, [s.name for s, _ in rows])


def split_sessions(
    sessions: list[Session], validation: float = 0.2, seed: int = 0
) -> tuple[list[Session], list[Session]]:
    """Train/validation split by whole sessions, stable for a given session name and seed."""

    def bucket(name: str) -> float:
        digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
        return int.from_bytes(digest[:8], "little") / 2**64

    train = [s for s in sessions if bucket(s.name) >= validation]
    held = [s for s in sessions if bucket(s.name) < validation]
    return train, held
