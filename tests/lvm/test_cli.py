"""`emx-mcp train-lvm` end to end on a real store (hashing vectors under the default model's id)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from emx_mcp import cli
from emx_mcp.config import Settings
from emx_mcp.embedding import DEFAULT_MODEL_ID
from tests.helpers import DefaultIdEncoder, open_service, remember

WORDS = [f"w{i}x{j}" for i in range(8) for j in range(6)]


def fill(data_dir: Path, sessions: int, length: int) -> None:
    rng = np.random.default_rng(0)
    service = open_service(Settings(data_dir=data_dir), DefaultIdEncoder())
    for s in range(sessions):
        order = [int(rng.integers(8)), int(rng.integers(8))]
        while len(order) < length:
            order.append((order[-1] * 3 + order[-2] * 5 + 1) % 8)
        for topic in order:
            words = " ".join(WORDS[topic * 6 : topic * 6 + 6]) + f" noise{rng.integers(1000)}"
            remember(service, words, session=f"s{s}")
    service.close()


def test_train_lvm_refuses_too_little_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fill(tmp_path, sessions=4, length=3)
    assert cli.main(["train-lvm", "--data-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "too little data" in err and "need at least 200" in err


def test_train_lvm_writes_checkpoint_and_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fill(tmp_path, sessions=150, length=10)
    assert cli.main(["train-lvm", "--data-dir", str(tmp_path), "--epochs", "4", "--context", "4"]) == 0
    out = capsys.readouterr().out
    assert "| copy_last |" in out and "| analog |" in out and "| lvm |" in out
    assert "predict_next will use:" in out
    evaluation = json.loads((tmp_path / "lvm" / "default.eval.json").read_text())
    assert evaluation["embedding_model"] == DEFAULT_MODEL_ID and evaluation["context"] == 4
    assert (tmp_path / "lvm" / "default.safetensors").stat().st_size > 0
    assert evaluation["outcome"]["method"] in {"lvm", "blend", "copy_last", "analog"}
