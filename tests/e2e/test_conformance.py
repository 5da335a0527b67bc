"""The MCP conformance suite's server scenarios that apply to emx-mcp, against streamable HTTP.

These check what any server with tools, resources, prompts and completions must do. The suite's
other server scenarios call fixture tools, prompts and resources that only its reference test
server has (`test_simple_text`, `test_prompt_with_arguments`, `test://template/{id}/data`,
`json_schema_2020_12_tool`, a tool that reports progress, ...), or features emx-mcp does not
declare (`logging/setLevel`, resource subscriptions), so they do not apply.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.e2e.servers import network_server
from tests.e2e.test_inspector import NODE_BIN, ROOT

pytestmark = pytest.mark.slow

CONFORMANCE = ROOT / ".tools" / "node_modules" / ".bin" / "conformance"
SCENARIOS = [
    "server-initialize",
    "ping",
    "tools-list",
    "tools-call-error",
    "resources-list",
    "prompts-list",
    "completion-complete",
    "server-sse-multiple-streams",
    "dns-rebinding-protection",
]


def test_generic_server_scenarios_pass(tmp_path: Path) -> None:
    assert CONFORMANCE.exists(), "the conformance suite is not installed: run `make test`, which installs it"
    env = {**os.environ, "PATH": f"{NODE_BIN}{os.pathsep}{os.environ['PATH']}", "NO_COLOR": "1"}
    with network_server(tmp_path / "data") as server:
        for scenario in SCENARIOS:
            done = subprocess.run(
                [str(CONFORMANCE), "server", "--url", server.url, "--scenario", scenario],
                env=env,
                capture_output=True,
                text=True,
                timeout=180,
                cwd=tmp_path,
            )
            output = re.sub(r"\x1b\[[0-9;]*m", "", done.stdout + done.stderr)
            assert done.returncode == 0, f"{scenario}:\n{output[-3000:]}"
            passed = re.search(r"Passed: (\d+)/(\d+), (\d+) failed", output)
            assert passed is not None, output[-2000:]
            assert passed.group(1) == passed.group(2) and passed.group(3) == "0", (
                f"{scenario}: {output[-2000:]}"
            )
            assert int(passed.group(2)) >= 1
