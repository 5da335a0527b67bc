"""`emx-mcp health | export | import` as a user runs them (in-process, on real stores)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mcp import Client

from emx_mcp import cli
from emx_mcp.config import Settings
from emx_mcp.server import build_server
from emx_mcp.service import MemoryService
from tests.helpers import DefaultIdEncoder, open_service, recall, remember

pytestmark = pytest.mark.anyio

NOTES = [
    "The staging database moved to db-7.",
    "Keys for the payment API rotate every ninety days.",
    "The design review is on Tuesday at ten.",
]


def store(path: Path) -> MemoryService:
    return open_service(Settings(data_dir=path), DefaultIdEncoder())


def store_with_notes(path: Path) -> None:
    """A closed store at `path` holding NOTES in one session, in order."""
    source = store(path)
    for note in NOTES:
        remember(source, note, session="s")
    source.close()


async def test_health_json_is_the_tool_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    service = store(tmp_path)
    for note in NOTES:
        remember(service, note, session="s")
    async with Client(build_server(service)) as client:
        result = await client.call_tool("index_health", {})
    service.close()
    capsys.readouterr()  # what the set-up above logged
    assert cli.main(["health", "--data-dir", str(tmp_path), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    tool = result.structured_content
    assert tool is not None and printed.keys() == tool.keys()
    volatile = {"bytes_on_disk", "encoder"}  # the close in between wrote a snapshot; no model here
    assert {k: v for k, v in printed.items() if k not in volatile} == {
        k: v for k, v in tool.items() if k not in volatile
    }
    assert printed["vectors"] == 3 and printed["status"] == "ok"
    assert printed["encoder"] is None and tool["encoder"]["backend"] == "hashing"


def test_health_text_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    service = store(tmp_path)
    remember(service, NOTES[0])
    service.close()
    capsys.readouterr()
    assert cli.main(["health", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("namespace default: ok") and "flat (exact); 1 vectors" in out
    assert "capacity   1 of 1,000,000 events in all namespaces" in out
    assert cli.main(["health", "--data-dir", str(tmp_path), "--namespace", "no/such"]) == 1
    assert "namespace 'no/such' is not allowed" in capsys.readouterr().err


def test_export_and_import_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = store(tmp_path / "a")
    ids = [remember(source, note, session="s").pop().event.id for note in NOTES]
    source.close()
    out = tmp_path / "export.jsonl"
    assert cli.main(["export", "--data-dir", str(tmp_path / "a"), "--out", str(out)]) == 0
    assert "exported 3 events" in capsys.readouterr().out
    assert cli.main(["import", "--data-dir", str(tmp_path / "b"), str(out)]) == 0
    assert "imported 3, already present 0, embedded again 0" in capsys.readouterr().out
    assert cli.main(["import", "--data-dir", str(tmp_path / "b"), str(out)]) == 0
    assert "imported 0, already present 3" in capsys.readouterr().out
    target = store(tmp_path / "b")
    assert [recall(target, note, k=1)[0].event.id for note in NOTES] == ids
    target.close()


def test_import_reports_malformed_lines_by_number(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = store(tmp_path / "a")
    for note in NOTES:
        remember(source, note, session="s")
    source.close()
    out = tmp_path / "export.jsonl"
    assert cli.main(["export", "--data-dir", str(tmp_path / "a"), "--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    lines.insert(1, '{"id": "broken"')
    out.write_text("\n".join(lines) + "\n")
    capsys.readouterr()
    assert cli.main(["import", "--data-dir", str(tmp_path / "b"), str(out)]) == 1
    err = capsys.readouterr().err
    assert f"{out}:2: " in err and "1 of 4 lines are malformed; nothing was imported" in err
    assert cli.main(["import", "--data-dir", str(tmp_path / "b"), str(out), "--on-error", "skip"]) == 0
    captured = capsys.readouterr()
    assert (
        f"{out}:2: " in captured.err
        and "imported 3" in captured.out
        and "skipped as malformed 1" in captured.out
    )
    assert cli.main(["import", "--data-dir", str(tmp_path / "b"), str(tmp_path / "missing.jsonl")]) == 2


def test_import_skips_timestamps_outside_the_calendar_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def line(i: int, timestamp: str) -> str:
        record = {"id": f"e{i}", "namespace": "default", "session": "s", "position": i}
        return json.dumps({**record, "timestamp": timestamp, "text": f"note {i}", "metadata": {}})

    out = tmp_path / "dates.jsonl"
    moments = ["2026-01-01T00:00:00Z", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"]
    out.write_text("\n".join(line(i, m) for i, m in enumerate(moments)) + "\n")
    store(tmp_path / "b").close()
    assert cli.main(["import", "--data-dir", str(tmp_path / "b"), str(out), "--on-error", "skip"]) == 0
    captured = capsys.readouterr()
    assert f"{out}:2: " in captured.err and f"{out}:3: " in captured.err and "out of range" in captured.err
    assert "Traceback" not in captured.err and "imported 1" in captured.out


def test_global_options_work_before_the_command_as_the_readme_shows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`emx-mcp --data-dir X import f.jsonl` (the README's form) and the form after the command."""
    store_with_notes(tmp_path / "a")
    out = tmp_path / "export.jsonl"
    assert cli.main(["--data-dir", str(tmp_path / "a"), "export", "--out", str(out)]) == 0
    assert cli.main(["--data-dir", str(tmp_path / "b"), "import", str(out)]) == 0
    assert "imported 3" in capsys.readouterr().out
    args = cli.build_parser().parse_args(["--log-level", "ERROR", "health", "--data-dir", "x"])
    assert (args.log_level, args.data_dir) == ("ERROR", "x")


@pytest.mark.parametrize("command", [["health"], ["export", "--out", "unused.jsonl"]])
def test_read_only_commands_refuse_a_data_dir_without_a_store(
    tmp_path: Path, command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    typo = tmp_path / "no-such-store"
    assert cli.main([*command, "--data-dir", str(typo)]) == 2
    assert "no memory store at" in capsys.readouterr().err
    assert not typo.exists(), "a read-only command created a store"


def test_export_to_stdout_and_into_a_missing_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store_with_notes(tmp_path / "a")
    capsys.readouterr()
    assert cli.main(["export", "--data-dir", str(tmp_path / "a"), "--out", "-", "--no-embeddings"]) == 0
    captured = capsys.readouterr()
    assert [json.loads(line)["text"] for line in captured.out.splitlines()] == NOTES
    assert "exported 3 events to stdout" in captured.err
    missing = tmp_path / "no-such-folder" / "out.jsonl"
    assert cli.main(["export", "--data-dir", str(tmp_path / "a"), "--out", str(missing)]) == 2
    assert "does not exist" in capsys.readouterr().err and not missing.parent.exists()
    assert not (Path.cwd() / "-").exists()


def test_an_import_file_with_a_byte_order_mark_is_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = store(tmp_path / "a")
    remember(source, NOTES[0], session="s")
    source.close()
    out = tmp_path / "export.jsonl"
    assert cli.main(["export", "--data-dir", str(tmp_path / "a"), "--out", str(out)]) == 0
    out.write_bytes(b"\xef\xbb\xbf" + out.read_bytes())  # as some editors save it
    assert cli.main(["import", "--data-dir", str(tmp_path / "b"), str(out)]) == 0
    assert "imported 1" in capsys.readouterr().out


@pytest.mark.parametrize(("option", "value"), [("--context", "0"), ("--alpha", "-1"), ("--epochs", "0")])
def test_train_lvm_refuses_impossible_options_without_a_traceback(
    tmp_path: Path, option: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    store(tmp_path).close()
    assert cli.main(["train-lvm", "--data-dir", str(tmp_path), option, value]) == 2
    err = capsys.readouterr().err
    assert f"{option} must be between" in err and "Traceback" not in err
    assert not (tmp_path / "lvm").exists(), "a checkpoint was written"


def test_a_model_that_cannot_load_is_refused_before_serving(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(
        ["serve", "--data-dir", str(tmp_path), "--model", str(tmp_path / "nonexistent" / "model")]
    )
    assert code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "EMX_MODEL" in line and "nothing is downloaded" in line
    assert cli.main(["serve", "--data-dir", str(tmp_path), "--model", "no-such-org/no-such-model"]) == 2
