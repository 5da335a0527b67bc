"""Start the real `emx-mcp serve` as a subprocess, over stdio or the network, for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mcp import StdioServerParameters

SERVER = Path(sys.executable).with_name("emx-mcp")
# A JSON-RPC initialize request, for tests that speak the protocol by hand.
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "emx-tests", "version": "0"},
    },
}


def server_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """The test process's environment without any EMX_* setting, plus the data dir and `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMX_")}
    env.update(EMX_DATA_DIR=str(data_dir), EMX_LOG_LEVEL="INFO", **extra)
    return env


def stdio_params(data_dir: Path, **extra: str) -> StdioServerParameters:
    return StdioServerParameters(command=str(SERVER), args=["serve"], env=server_env(data_dir, **extra))


def spawn_stdio(data_dir: Path, stderr: int = subprocess.PIPE) -> subprocess.Popen[bytes]:
    """`python -m emx_mcp serve` with pipes on stdin and stdout, to speak the protocol by hand."""
    return subprocess.Popen(
        [sys.executable, "-m", "emx_mcp", "serve"],
        env=server_env(data_dir),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=stderr,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class NetworkServer:
    url: str  # the MCP endpoint: .../mcp for http, .../sse for sse
    port: int
    process: subprocess.Popen[bytes]
    stderr_path: Path

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")


@contextmanager
def network_server(
    data_dir: Path, transport: str = "http", token: str | None = None, **extra: str
) -> Iterator[NetworkServer]:
    """Serve over HTTP or SSE on a free loopback port until the block ends, then stop with SIGTERM."""
    port = free_port()
    env = server_env(data_dir, EMX_TRANSPORT=transport, EMX_PORT=str(port), **extra)
    if token is not None:
        env["EMX_AUTH_TOKEN"] = token
    stderr_path = data_dir.parent / f"server-{port}.stderr"
    data_dir.mkdir(parents=True, exist_ok=True)
    with stderr_path.open("wb") as err:
        process = subprocess.Popen([str(SERVER), "serve"], env=env, stdout=subprocess.DEVNULL, stderr=err)
    path = "/mcp" if transport == "http" else "/sse"
    server = NetworkServer(f"http://127.0.0.1:{port}{path}", port, process, stderr_path)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"server exited with {process.returncode}: {server.stderr[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"server did not listen on {port}: {server.stderr[-2000:]}") from None
                time.sleep(0.1)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
