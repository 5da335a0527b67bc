"""The records the event log holds and the filters over them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Event:
    seq: int
    id: str
    namespace: str
    session: str
    position: int
    timestamp: str
    text: str
    metadata: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Filters:
    """Which events a recall may return, beyond the namespace. Timestamps are normalised ISO 8601 UTC."""

    session: str | None = None
    since: str | None = None  # inclusive
    until: str | None = None  # inclusive
    metadata: dict[str, Any] | None = None  # equality on top-level keys

    @property
    def any(self) -> bool:
        return any(v is not None for v in (self.session, self.since, self.until, self.metadata))

    def sql(self, namespace: str, table: str = "") -> tuple[str, list[object]]:
        """A WHERE clause (without the keyword) and its parameters; `table` qualifies the columns."""
        p = f"{table}." if table else ""
        clauses: list[str] = [f"{p}namespace = ?"]
        params: list[object] = [namespace]
        if self.session is not None:
            clauses.append(f"{p}session = ?")
            params.append(self.session)
        if self.since is not None:
            clauses.append(f"{p}timestamp >= ?")
            params.append(self.since)
        if self.until is not None:
            clauses.append(f"{p}timestamp <= ?")
            params.append(self.until)
        for key, value in (self.metadata or {}).items():
            path = '$."' + key + '"'
            if value is None:
                clauses.append(f"json_type({p}metadata, ?) = 'null'")
                params.append(path)
            else:
                # Same JSON type and value: true matches true, not 1; "1" matches "1", not 1.
                encoded = json.dumps(value, ensure_ascii=False, sort_keys=True)
                clauses.append(
                    f"json_type({p}metadata, ?) = json_type(?) "
                    f"AND json_extract({p}metadata, ?) = json_extract(?, '$')"
                )
                params += [path, encoded, path, encoded]
        return " AND ".join(clauses), params


@dataclass(frozen=True, slots=True)
class Receipt:
    """What a `remember` with an idempotency key leaves behind, to answer a repeat of it."""

    key: str
    digest: str  # of the request as the client sent it
    detail: str  # JSON the caller wants back on a repeat (sizes and surprises of the episodes)
    ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class NewEvent:
    text: str
    timestamp: str
    metadata: dict[str, Any]
