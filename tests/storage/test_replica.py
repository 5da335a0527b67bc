"""The replica: snapshots that never hold up tool calls, and rebuilt snapshots written at once."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import faiss
import pytest

from emx_mcp.config import Settings
from tests.helpers import open_with_store, recall, remember

NOTES = [f"entry {i} about subject {i % 7} and place {i % 11}" for i in range(300)]


def test_tool_calls_go_on_while_a_snapshot_is_being_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Serialising a large index takes seconds; recall and remember must not wait for it."""
    service, store = open_with_store(Settings(data_dir=tmp_path))
    for note in NOTES:
        remember(service, note, session="s")
    writing, release = threading.Event(), threading.Event()
    real_write, real_serialize = faiss.write_index, faiss.serialize_index

    def slow(real: Any) -> Any:
        def call(index: Any, *args: Any) -> Any:
            if index.ntotal >= len(NOTES):  # the live index; a delta of a few vectors is not held up
                writing.set()
                assert release.wait(30)
            return real(index, *args)

        return call

    monkeypatch.setattr(faiss, "write_index", slow(real_write))
    monkeypatch.setattr(faiss, "serialize_index", slow(real_serialize))
    snapshot = threading.Thread(target=service.snapshot)
    snapshot.start()
    assert writing.wait(30), "the snapshot did not start"
    started = time.monotonic()
    event = remember(service, "written while the snapshot runs", session="s")[0].event
    assert recall(service, "written while the snapshot runs", k=1)[0].event.id == event.id
    assert recall(service, NOTES[42], k=1)[0].event.text == NOTES[42]
    assert time.monotonic() - started < 5, "tool calls waited for the snapshot"
    release.set()
    snapshot.join(30)
    monkeypatch.undo()
    service.close()
    again, store = open_with_store(Settings(data_dir=tmp_path))
    assert len(store) == len(NOTES) + 1 and store.replica.rebuilt == set()
    again.close()
