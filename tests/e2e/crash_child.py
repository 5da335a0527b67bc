"""Child process for the crash test: remembers in a loop, printing each acknowledged event.

A line is printed only after `remember` has returned, i.e. after the SQLite commit. The parent
kills this process with SIGKILL at a random moment and then checks every printed event.
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

from emx_mcp.app import build_service
from emx_mcp.config import Settings
from emx_mcp.embedding import HashingEncoder
from emx_mcp.schemas import RememberRequest


def main() -> None:
    data_dir, trial = Path(sys.argv[1]), sys.argv[2]
    # Snapshot often, so that kills also land in the middle of snapshot writes.
    service = build_service(Settings(data_dir=data_dir, snapshot_every=5), HashingEncoder(dim=256))
    service.open()
    print("ready", flush=True)
    i = 0
    while True:
        token = uuid.uuid4().hex
        text = f"trial {trial} event {i} words {token[:8]} {token[8:16]} {token[16:24]} {token[24:]}"
        event = service.remember(RememberRequest(text=text, session=f"trial-{trial}")).episodes[0].event
        print(f"{event.id}\t{text}", flush=True)
        i += 1


if __name__ == "__main__":
    main()
