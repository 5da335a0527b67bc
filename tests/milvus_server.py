"""Milvus Lite 2.5 (Milvus's own engine) served over TCP for the tests, through `emx-mcp milvus-lite`."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from emx_mcp.config import Settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def milvus_lite(folder: Path, timeout: float = 60.0) -> Iterator[str]:
    """Start Milvus Lite on a file in `folder`; yield its URI; stop it on the way out."""
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "emx_mcp",
            "milvus-lite",
            "--db",
            str(folder / "milvus.db"),
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(uri, process, timeout)
        yield uri
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def wait_until_ready(uri: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    from pymilvus import MilvusClient

    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            err = process.stderr.read().decode() if process.stderr else ""
            raise RuntimeError(f"Milvus Lite exited with {process.returncode}: {err[-2000:]}")
        try:
            client = MilvusClient(uri=uri, timeout=2)
            client.list_collections()
            client.close()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def empty(settings: Settings) -> None:
    """Delete every row a test left (collections stay: making them takes seconds, emptying them not)."""
    from pymilvus import MilvusClient

    client = MilvusClient(uri=settings.milvus_uri or "")
    for suffix, everything in (("events", "seq >= 0"), ("meta", 'key != ""')):
        name = f"{settings.milvus_collection}_{suffix}"
        if client.has_collection(name):
            client.delete(name, filter=everything)
    client.close()
