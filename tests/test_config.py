from __future__ import annotations

from pathlib import Path

import pytest

from emx_mcp import cli
from emx_mcp.config import DEFAULT_MODEL_ID, Settings


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("EMX_DATA_DIR", "EMX_MODEL", "EMX_MAX_TEXT_CHARS", "EMX_LOG_LEVEL", "EMX_SNAPSHOT_EVERY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", "/xdg")
    settings = Settings()
    assert settings.data_dir == Path("/xdg/emx-mcp")
    assert settings.model is None and settings.model_id == DEFAULT_MODEL_ID
    assert settings.max_text_chars == 200_000 and settings.log_level == "INFO"
    assert settings.db_path == Path("/xdg/emx-mcp/events.sqlite3")


def test_environment_variables_are_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EMX_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("EMX_MODEL", "/models/other")
    monkeypatch.setenv("EMX_MAX_TEXT_CHARS", "1234")
    monkeypatch.setenv("EMX_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("EMX_SNAPSHOT_EVERY", "50")
    s = Settings()
    assert (s.data_dir, s.model, s.max_text_chars, s.log_level, s.snapshot_every) == (
        tmp_path,
        "/models/other",
        1234,
        "DEBUG",
        50,
    )
    assert s.model_id == "/models/other"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("EMX_MAX_TEXT_CHARS", "0"),
        ("EMX_MAX_TEXT_CHARS", "lots"),
        ("EMX_LOG_LEVEL", "LOUD"),
        ("EMX_SNAPSHOT_EVERY", "-1"),
    ],
)
def test_impossible_values_are_refused_at_start(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    assert cli.main(["serve"]) == 2
    err = capsys.readouterr().err
    assert "invalid settings" in err and name.removeprefix("EMX_").lower() in err


def test_command_line_overrides_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EMX_DATA_DIR", "/from/env")
    args = cli.build_parser().parse_args(["serve", "--data-dir", str(tmp_path), "--log-level", "ERROR"])
    settings = cli._settings(args)
    assert settings.data_dir == tmp_path and settings.log_level == "ERROR"
