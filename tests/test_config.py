from __future__ import annotations

import os
from pathlib import Path

import pytest

from emx_mcp import cli
from emx_mcp.config import Settings
from emx_mcp.embedding import DEFAULT_MODEL_ID


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("EMX_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_DATA_HOME", "/xdg")
    settings = Settings()
    assert settings.data_dir == Path("/xdg/emx-mcp")
    assert settings.model is None and settings.model_id == DEFAULT_MODEL_ID
    assert settings.max_text_chars == 200_000 and settings.log_level == "INFO"
    assert settings.db_path == Path("/xdg/emx-mcp/events.sqlite3")
    policy = settings.training_policy()
    assert (policy.train_at, policy.kind, policy.target_recall) == (20_000, "ivf_flat", 0.95)
    assert settings.max_events == 1_000_000


def test_index_settings_reach_the_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMX_INDEX_TRAIN_AT", "5000")
    monkeypatch.setenv("EMX_INDEX_KIND", "ivf_sq8")
    monkeypatch.setenv("EMX_TARGET_RECALL", "0.9")
    monkeypatch.setenv("EMX_MAX_EVENTS", "777")
    s = Settings()
    policy = s.training_policy()
    assert (policy.train_at, policy.kind, policy.target_recall, s.max_events) == (5000, "ivf_sq8", 0.9, 777)


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
        ("EMX_INDEX_TRAIN_AT", "60000"),
        ("EMX_INDEX_TRAIN_AT", "10"),
        ("EMX_INDEX_KIND", "hnsw"),
        ("EMX_TARGET_RECALL", "1.5"),
        ("EMX_MAX_EVENTS", "0"),
        ("EMX_SEGMENT_GAMMA", "-1"),
        ("EMX_SEGMENT_REFINEMENT", "spectral"),
        ("EMX_SEGMENT_PRUNE", "2"),
        ("EMX_SEGMENT_WINDOW", "1"),
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
    settings = cli.settings_from(args)
    assert settings.data_dir == tmp_path and settings.log_level == "ERROR"


def test_segmentation_settings_reach_the_segmenter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMX_SEGMENT_GAMMA", "1.25")
    monkeypatch.setenv("EMX_SEGMENT_WINDOW", "12")
    monkeypatch.setenv("EMX_SEGMENT_CONTEXT", "4")
    monkeypatch.setenv("EMX_SEGMENT_MIN_SENTENCES", "3")
    monkeypatch.setenv("EMX_SEGMENT_MAX_SENTENCES", "30")
    monkeypatch.setenv("EMX_SEGMENT_REFINEMENT", "conductance")
    monkeypatch.setenv("EMX_SEGMENT_PRUNE", "0.3")
    c = Settings().segmentation_config()
    assert (c.gamma, c.window, c.context, c.min_sentences, c.max_sentences, c.refinement, c.prune) == (
        1.25,
        12,
        4,
        3,
        30,
        "conductance",
        0.3,
    )


def test_episode_sizes_must_be_ordered(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EMX_SEGMENT_MIN_SENTENCES", "10")
    monkeypatch.setenv("EMX_SEGMENT_MAX_SENTENCES", "5")
    assert cli.main(["serve"]) == 2
    assert (
        "EMX_SEGMENT_MIN_SENTENCES (10) is larger than EMX_SEGMENT_MAX_SENTENCES (5)"
        in capsys.readouterr().err
    )


@pytest.mark.parametrize("token", [" " * 20, "\t\n" * 10])
def test_a_blank_token_is_refused_at_start(tmp_path: Path, token: str) -> None:
    with pytest.raises(ValueError, match="EMX_AUTH_TOKEN is blank"):
        Settings(data_dir=tmp_path, auth_token=token)  # type: ignore[arg-type]


def test_oauth_settings_come_together_and_the_keys_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="EMX_OAUTH_ISSUER, EMX_OAUTH_AUDIENCE and EMX_OAUTH_JWKS together"):
        Settings(transport="http", oauth_issuer="https://id.example.com/")
    with pytest.raises(ValueError, match="neither an http"):
        Settings(
            transport="http",
            oauth_issuer="https://id.example.com/",
            oauth_audience="aud",
            oauth_jwks=str(tmp_path / "missing.json"),
        )
    keys = tmp_path / "jwks.json"
    keys.write_text('{"keys": []}')
    # With OAuth configured, a non-loopback bind needs no EMX_AUTH_TOKEN.
    ok = Settings(
        transport="http",
        host="0.0.0.0",
        oauth_issuer="https://id.example.com/",
        oauth_audience="a",
        oauth_jwks=str(keys),
    )
    assert ok.oauth and ok.auth_token is None
