"""write_atomic: the one temp-fsync-rename."""

from __future__ import annotations

from pathlib import Path

import pytest

from emx_mcp import files


def test_write_atomic_replaces_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    files.write_atomic(path, b"old" * 1000)
    files.write_atomic(path, b"new")
    assert path.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_write_atomic_syncs_the_file_and_its_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Power loss: a snapshot is either the old file or the new one, whole, and the rename is durable."""
    import os

    synced: list[int] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    files.write_atomic(tmp_path / "snap.emxidx", b"x" * 4096)
    assert len(synced) == 2  # the data before the rename, the folder after it
    assert (tmp_path / "snap.emxidx").read_bytes() == b"x" * 4096
