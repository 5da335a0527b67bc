"""The ONNX Runtime encoder: exported once from the installed weights, the same vectors as torch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from emx_mcp import onnx_runtime
from emx_mcp.app import build_encoder
from emx_mcp.config import Settings
from emx_mcp.embedding import SentenceTransformerEncoder, describe
from emx_mcp.onnx_runtime import OnnxEncoder, OnnxOrTorch, OnnxUnavailable

TEXTS = [
    "The staging database lives on db-7.",
    "ok",
    "",
    "Für die Abrechnung gilt der neue Tarif ab März; 日本語のテキストも。",
    " ".join(f"word{i}" for i in range(600)),  # longer than the model's 256 tokens: truncated alike
]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def onnx(cache: Path) -> OnnxEncoder:
    encoder = OnnxEncoder(None, cache, "sentence-transformers/all-MiniLM-L6-v2")
    encoder.load()
    return encoder


def test_the_export_is_cached_with_its_checksum(onnx: OnnxEncoder, cache: Path) -> None:
    (model,) = cache.glob("*.onnx")
    checksum = model.with_suffix(".onnx.sha256")
    assert checksum.read_text().strip() == onnx_runtime._digest([model])


def test_onnx_gives_the_torch_vectors(onnx: OnnxEncoder) -> None:
    ours = onnx.encode(TEXTS)
    theirs = SentenceTransformerEncoder(None).encode(TEXTS)
    assert ours.shape == theirs.shape == (len(TEXTS), 384)
    cosines = (ours * theirs).sum(1)
    assert cosines.min() > 0.9999, cosines
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    # Order within a call does not matter (texts are encoded shortest first).
    assert np.allclose(onnx.encode(TEXTS[::-1])[::-1], ours, atol=1e-5)


def test_a_later_start_loads_the_cached_export(
    onnx: OnnxEncoder, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_export(folder: Path) -> Any:
        raise AssertionError("exported again although a good export was cached")

    monkeypatch.setattr(onnx_runtime, "_export", no_export)
    again = OnnxEncoder(None, cache, "sentence-transformers/all-MiniLM-L6-v2")
    assert np.allclose(again.encode(TEXTS[:2]), onnx.encode(TEXTS[:2]), atol=1e-6)


def test_a_damaged_export_is_made_again(onnx: OnnxEncoder, cache: Path, tmp_path: Path) -> None:
    (model,) = cache.glob("*.onnx")
    copy = tmp_path / model.name
    copy.write_bytes(model.read_bytes()[:-100] + b"\0" * 100)  # damaged after its checksum was written
    copy.with_suffix(".onnx.sha256").write_text(model.with_suffix(".onnx.sha256").read_text())
    again = OnnxEncoder(None, tmp_path, "sentence-transformers/all-MiniLM-L6-v2")
    assert np.allclose(again.encode(TEXTS[:2]), onnx.encode(TEXTS[:2]), atol=1e-6)
    assert copy.read_bytes() == model.read_bytes()


def test_when_onnx_cannot_be_built_torch_serves(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(folder: Path) -> Any:
        raise RuntimeError("exporter unavailable")

    monkeypatch.setattr(onnx_runtime, "_export", broken)
    settings = Settings(data_dir=tmp_path / "data", encoder_backend="onnx")
    encoder = build_encoder(settings)
    assert describe(encoder).backend == "onnx (not loaded)" and not describe(encoder).ready
    vectors = encoder.encode(TEXTS[:2])
    assert vectors.shape == (2, 384)
    info = describe(encoder)
    assert info.ready and info.backend.startswith("torch (onnx unavailable: export failed: RuntimeError")
    assert not list((tmp_path / "data" / "models").glob("*.onnx")), "a failed export left a file"


def test_an_export_that_disagrees_with_torch_is_not_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_export = onnx_runtime._export

    def skewed(folder: Path) -> tuple[bytes, Any]:
        blob, reference = real_export(folder)
        return blob, lambda texts: np.roll(reference(texts), 1, axis=1)  # torch "says" otherwise

    monkeypatch.setattr(onnx_runtime, "_export", skewed)
    encoder = OnnxOrTorch(OnnxEncoder(None, tmp_path, "m"), SentenceTransformerEncoder(None))
    assert encoder.encode(["hello"]).shape == (1, 384)
    assert encoder.backend.startswith("torch (onnx unavailable: the exported model disagrees with torch")
    assert not list(tmp_path.glob("*.onnx")), "a disagreeing export was kept"


def test_a_folder_that_is_not_a_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(OnnxUnavailable, match="not a model folder"):
        OnnxEncoder(str(tmp_path), tmp_path, "x").load()


def test_the_torch_setting_uses_torch(tmp_path: Path) -> None:
    encoder = build_encoder(Settings(data_dir=tmp_path, encoder_backend="torch", encoder_coalesce=False))
    assert isinstance(encoder, SentenceTransformerEncoder) and describe(encoder).backend == "torch"
    assert not isinstance(encoder, OnnxOrTorch)
