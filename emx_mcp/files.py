"""Writing files so that a crash leaves the old file or the new one, whole: the one temp-fsync-rename."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

TEMP_SUFFIX = ".tmp"


def temp_path(path: Path) -> Path:
    """The hidden temporary name `path` is written under: unique per process and thread."""
    return path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}{TEMP_SUFFIX}")


@contextmanager
def atomic_writer(path: Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Yield a file that replaces `path` when the block ends without error, and vanishes otherwise.

    The data is fsynced before the rename and the folder after it, so once this returns the new
    file survives power loss (as far as the disk honours fsync).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    encoding = None if "b" in mode else "utf-8"
    try:
        with tmp.open(mode, encoding=encoding) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    sync_folder(path.parent)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data`, atomically and durably (see `atomic_writer`)."""
    with atomic_writer(path) as fh:
        fh.write(data)


def sync_folder(folder: Path) -> None:
    """fsync a folder, so that a rename inside it is durable."""
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
