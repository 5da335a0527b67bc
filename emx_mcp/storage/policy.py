"""When and how the vector index trains: pure decisions, testable without building an index."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

# k-means needs at least this many training points per centroid to place it sensibly (FAISS warns
# below 39), and gains little beyond 256.
MIN_POINTS_PER_CENTROID = 39
MAX_POINTS_PER_CENTROID = 256

IndexKind = Literal["ivf_flat", "ivf_sq8"]


def nlist_for(n: int) -> int:
    """Inverted lists for n vectors: about 4*sqrt(n), never more than n/39, at least 1."""
    if n <= 0:
        return 1
    return max(1, min(round(4 * math.sqrt(n)), n // MIN_POINTS_PER_CENTROID))


def training_sample_size(n: int, nlist: int) -> int:
    """How many stored vectors k-means sees: up to 256 per centroid, never more than exist."""
    return max(0, min(n, nlist * MAX_POINTS_PER_CENTROID))


@dataclass(frozen=True, slots=True)
class TrainingPolicy:
    """The index's decisions. Defaults suit 384-d sentence embeddings on a small machine."""

    # Below this many vectors the index stays exact: a flat scan is fast and has recall 1.
    train_at: int = 20_000
    # Retrain once the store has grown by this factor since the last training ...
    retrain_growth: float = 2.0
    # ... or when the inverted lists have become this much more unbalanced than right after
    # training (FAISS imbalance factor: 1 = perfectly even).
    retrain_imbalance_growth: float = 1.5
    target_recall: float = 0.95
    probe_queries: int = 500
    kind: IndexKind = "ivf_flat"
    # Batches on a trained IVF-Flat index go to ivf_batch's compiled kernels (else FAISS).
    batch_kernels: bool = True
    seed: int = 1234

    def __post_init__(self) -> None:
        if self.train_at < 2 * MIN_POINTS_PER_CENTROID:
            # Fewer vectors than two centroids' worth: IVF cannot have two lists.
            raise ValueError(f"train_at must be at least {2 * MIN_POINTS_PER_CENTROID}; got {self.train_at}")
        if self.retrain_growth <= 1.0:
            raise ValueError(f"retrain_growth must be above 1; got {self.retrain_growth}")
        if self.retrain_imbalance_growth <= 1.0:
            raise ValueError(f"retrain_imbalance_growth must be above 1; got {self.retrain_imbalance_growth}")
        if not 0.0 < self.target_recall <= 1.0:
            raise ValueError(f"target_recall must be in (0, 1]; got {self.target_recall}")
        if self.probe_queries < 1:
            raise ValueError(f"probe_queries must be positive; got {self.probe_queries}")

    def calibration_target(self, probes: int, k: int = 10) -> float:
        """The recall nprobe is tuned for: the target plus two standard errors of its measurement.

        Recall measured on a few hundred probes is itself an estimate; tuning to the bare target
        would leave the true recall below it about half the time.
        """
        if probes <= 0:
            return self.target_recall
        p = self.target_recall
        return min(1.0, p + 2 * math.sqrt(p * (1 - p) / (probes * k)))

    def should_train(self, n: int, trained: bool) -> bool:
        """First training: once the exact buffer reaches `train_at` vectors."""
        return not trained and n >= self.train_at

    def should_retrain(
        self, n: int, n_at_training: int, imbalance: float, imbalance_at_training: float
    ) -> bool:
        """Retrain when the store has outgrown its nlist or its lists have drifted out of balance."""
        if n_at_training <= 0:
            return False
        grown = n >= self.retrain_growth * n_at_training
        # Require some growth too, so that a store that is naturally unbalanced is not retrained forever.
        drifted = (
            n >= 1.1 * n_at_training
            and imbalance_at_training > 0
            and imbalance >= self.retrain_imbalance_growth * imbalance_at_training
        )
        return grown or drifted
