"""The checkpoint a server uses to predict the next episode, reloaded when `train-lvm` replaces it."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from emx_mcp.embedding import Vectors, normalize

if TYPE_CHECKING:
    from emx_mcp.lvm.train import CheckpointHeader

DEFAULT_CONTEXT = 16


@dataclass(frozen=True, slots=True)
class Checkpoint:
    model: Any  # NextEpisodeGRU; typed loosely so that importing this module does not import torch
    header: CheckpointHeader

    @property
    def method(self) -> str:
        return self.header.outcome.method

    @property
    def context(self) -> int:
        return self.header.context

    def predict(self, context: Vectors) -> Vectors:
        """The model's (or the chosen blend's) next vector after `context` (L, d), shape (d,)."""
        import torch

        c = self.context
        window = np.zeros((1, c, context.shape[1]), dtype=np.float32)
        window[0, c - len(context[-c:]) :] = context[-c:]
        with torch.no_grad():
            predicted = self.model(torch.from_numpy(window), torch.tensor([len(context[-c:])])).numpy()[0]
        weight = self.header.outcome.blend_weight or 1.0
        blended: Vectors = normalize(weight * predicted + (1 - weight) * context[-1])[0]
        return blended


def checkpoint_path(data_dir: Path, namespace: str) -> Path:
    """Where `train-lvm` writes the predictor of a namespace."""
    return data_dir / "lvm" / f"{namespace}.safetensors"


class Predictors:
    """One checkpoint per namespace, loaded lazily and reloaded when its file changes."""

    def __init__(self, data_dir: Path, model_id: str, dim: int) -> None:
        self.data_dir, self.model_id, self.dim = data_dir, model_id, dim
        self._loaded: dict[str, tuple[float, Checkpoint]] = {}
        self._lock = threading.Lock()

    def path(self, namespace: str) -> Path:
        return checkpoint_path(self.data_dir, namespace)

    def get(self, namespace: str) -> Checkpoint | None:
        path = self.path(namespace)
        try:
            mtime = path.stat().st_mtime
        except FileNotFoundError:
            return None
        with self._lock:
            cached = self._loaded.get(namespace)
            if cached is not None and cached[0] == mtime:
                return cached[1]
            from emx_mcp.lvm.train import load

            model, header = load(path, self.model_id, self.dim)
            checkpoint = Checkpoint(model, header)
            self._loaded[namespace] = (mtime, checkpoint)
            return checkpoint
