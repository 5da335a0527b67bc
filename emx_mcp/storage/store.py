"""What every store hands the service: scored events and the statistics a health report reads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from emx_mcp.storage.index import IndexStats
from emx_mcp.storage.records import Event


class Match(NamedTuple):
    """An event found by a search, with its cosine similarity to the query."""

    event: Event
    score: float


@dataclass(frozen=True, slots=True)
class StoreStats:
    """What a health report needs to know about one namespace of the store."""

    namespace: str
    index: IndexStats
    events_in_log: int  # events of this namespace
    events_in_store: int  # events of every namespace, what EMX_MAX_EVENTS limits
    event_log_bytes: int
    snapshot_bytes: int
    integrity: str
    snapshot_error: str | None
    trainings_queued: int  # trainings of any namespace waiting for their turn in this process
