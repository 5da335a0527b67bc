"""The ONNX Runtime encoder: exported once from the installed weights, the same vectors as torch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mcp import Client

from emx_mcp import onnx_runtime
from emx_mcp.app import build_encoder, build_service, build_store
from emx_mcp.config import Settings
from emx_mcp.embedding import SentenceTransformerEncoder, describe
from emx_mcp.errors import StoreMismatch
from emx_mcp.onnx_runtime import OnnxEncoder, OnnxOrTorch, OnnxUnavailable
from emx_mcp.server import build_server
from tests.helpers import call

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


# int8 weights (EMX_ENCODER_BACKEND=onnx-int8): faster, close to the model, a vector space of its own.


@pytest.fixture(scope="module")
def int8_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models-int8")


@pytest.fixture(scope="module")
def int8(int8_cache: Path) -> OnnxEncoder:
    encoder = OnnxEncoder(None, int8_cache, "sentence-transformers/all-MiniLM-L6-v2+int8", int8=True)
    encoder.load()
    return encoder


def test_int8_is_cached_with_its_checksum_and_close_to_torch(
    int8: OnnxEncoder, int8_cache: Path, onnx: OnnxEncoder, cache: Path
) -> None:
    (model,) = int8_cache.glob("*.onnx")
    assert model.name.endswith("-int8.onnx")
    assert model.with_suffix(".onnx.sha256").read_text().strip() == onnx_runtime._digest([model])
    (fp32,) = cache.glob("*.onnx")
    assert fp32.stat().st_size > 3 * model.stat().st_size, "the weights are not int8"
    ours = int8.encode(TEXTS)
    theirs = SentenceTransformerEncoder(None).encode(TEXTS)
    cosines = (ours * theirs).sum(1)
    assert cosines.min() > 0.97 and cosines.max() < 0.99999, cosines  # close, and not the fp32 model
    assert int8.backend == "onnx-int8"


def test_an_int8_vector_does_not_depend_on_its_batch_mates(int8: OnnxEncoder) -> None:
    # Activations are quantized with one scale per run, so each text runs alone.
    together = int8.encode(TEXTS)
    for text, row in zip(TEXTS, together, strict=True):
        assert np.array_equal(int8.encode([text])[0], row)


def test_int8_does_not_fall_back_to_torch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(folder: Path) -> Any:
        raise RuntimeError("exporter unavailable")

    monkeypatch.setattr(onnx_runtime, "_export", broken)
    encoder = build_encoder(Settings(data_dir=tmp_path, encoder_backend="onnx-int8", encoder_coalesce=False))
    with pytest.raises(OnnxUnavailable, match="exporter unavailable"):
        encoder.encode(["hello"])


def test_a_store_made_with_one_backend_refuses_the_other(tmp_path: Path) -> None:
    fp32 = Settings(data_dir=tmp_path, encoder_backend="onnx")
    int8 = Settings(data_dir=tmp_path, encoder_backend="onnx-int8")
    assert int8.model_id == fp32.model_id + "+int8"
    assert Settings(data_dir=tmp_path, encoder_backend="torch").model_id == fp32.model_id
    store = build_store(fp32)
    store.open(fp32.model_id, lambda: 384)
    store.close()
    again = build_store(int8)
    with pytest.raises(StoreMismatch, match=r"EMX_ENCODER_BACKEND back"):
        again.open(int8.model_id, lambda: 384)


@pytest.mark.anyio
async def test_the_server_recalls_with_int8(int8_cache: Path, int8: OnnxEncoder, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, encoder_backend="onnx-int8", encoder_coalesce=False)
    (tmp_path / "models").mkdir()
    for made in int8_cache.iterdir():  # the export made above: not exported again here
        (tmp_path / "models" / made.name).write_bytes(made.read_bytes())
    service = build_service(settings)
    try:
        async with Client(build_server(service)) as client:
            await call(client, "remember", text=SESSION, session="s")
            found = await call(client, "recall", query="Which host runs the staging database?", k=1)
            health = await call(client, "index_health")
        assert "db-7" in found["results"][0]["text"]
        assert health["encoder"]["backend"] == "onnx-int8" and health["encoder"]["ready"]
    finally:
        service.close()


SESSION = (
    "We moved the staging database to db-7 last week. The old host is retired. "
    "Lunch on Friday is at the Thai place. Everyone should bring their badge."
)
