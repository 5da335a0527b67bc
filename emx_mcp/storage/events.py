"""The SQLite event log: the source of truth. The vector index is derived from it.

One row per event. `seq` is assigned by SQLite (AUTOINCREMENT, so never reused) inside a
write transaction; since SQLite serialises writers, seq order is commit order, which is what
lets every index catch up by asking for "everything after the last seq I hold". Forgetting
deletes the rows and appends to `forgotten`, whose `change` numbers play the same role for
removals.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from emx_mcp.embedding import Vectors
from emx_mcp.errors import (
    CapacityExceeded,
    InvalidInput,
    NotFound,
    PlaceTaken,
    StorageError,
    StoreMismatch,
    model_mismatch,
)
from emx_mcp.storage import lexical
from emx_mcp.storage.records import Event, Filters, NewEvent, Receipt

T = TypeVar("T")

# 2: forgotten events keep their ids (tombstones), the store has an identity, idempotency keys.
# 3: the lexical index (storage/lexical.py).
# 4: links from an episode to the episodes it supersedes.
SCHEMA_VERSION = 4

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    id        TEXT    NOT NULL UNIQUE,
    namespace TEXT    NOT NULL,
    session   TEXT    NOT NULL,
    position  INTEGER NOT NULL,
    timestamp TEXT    NOT NULL,
    text      TEXT    NOT NULL,
    metadata  TEXT    NOT NULL,
    embedding BLOB    NOT NULL,
    UNIQUE (namespace, session, position)
);
CREATE INDEX IF NOT EXISTS events_by_time ON events (namespace, timestamp);
CREATE TABLE IF NOT EXISTS forgotten (
    change    INTEGER PRIMARY KEY AUTOINCREMENT,
    seq       INTEGER NOT NULL,
    namespace TEXT    NOT NULL,
    id        TEXT
);
CREATE TABLE IF NOT EXISTS receipts (
    namespace TEXT NOT NULL,
    key       TEXT NOT NULL,
    digest    TEXT NOT NULL,
    ids       TEXT NOT NULL,
    detail    TEXT NOT NULL,
    PRIMARY KEY (namespace, key)
);
CREATE TABLE IF NOT EXISTS forget_audit (
    change    INTEGER PRIMARY KEY AUTOINCREMENT,
    at        TEXT    NOT NULL,
    namespace TEXT    NOT NULL,
    who       TEXT    NOT NULL,
    count     INTEGER NOT NULL,
    ids       TEXT    NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS links (
    namespace TEXT NOT NULL,
    old       TEXT NOT NULL,
    new       TEXT NOT NULL,
    PRIMARY KEY (old, new)
);
CREATE INDEX IF NOT EXISTS links_by_new ON links (new);
"""

_COLUMNS = "seq, id, namespace, session, position, timestamp, text, metadata"

# Most values one statement binds: SQLite's limit is 999 in older builds.
CHUNK = 500


def chunks(values: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    """`values` in consecutive slices of at most `size`."""
    for start in range(0, len(values), size):
        yield values[start : start + size]


def marks(count: int) -> str:
    """`?, ?, ...`: the placeholders of an IN list."""
    return ",".join("?" * count)


def decode_vectors(blobs: Sequence[bytes], dim: int) -> Vectors:
    """The float32 embedding blobs of `len(blobs)` events as one array (n, dim)."""
    return np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), dim)


def new_id() -> str:
    """A new event id: 16 hex digits (64 random bits), short enough to read and to list."""
    return uuid.uuid4().hex[:16]


def _row_to_event(row: tuple[Any, ...]) -> Event:
    seq, id_, namespace, session, position, timestamp, text, metadata = row
    return Event(seq, id_, namespace, session, position, timestamp, text, json.loads(metadata))


class EventReader:
    """The log's read queries over one SQLite connection; EventLog adds the writes and the replica feed."""

    path: Path
    _conn: sqlite3.Connection
    _lock: threading.RLock

    def namespaces(self) -> list[str]:
        with self._lock:
            rows = self._conn.execute("SELECT DISTINCT namespace FROM events").fetchall()
        return [r[0] for r in rows]

    def seqs(self, namespace: str) -> npt.NDArray[np.int64]:
        """Seqs of every event of `namespace`, ascending."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT seq FROM events WHERE namespace = ? ORDER BY seq", (namespace,)
            ).fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def by_seqs(self, seqs: Sequence[int]) -> dict[int, Event]:
        """Events for the given seqs; seqs that no longer exist are absent from the result."""
        wanted = sorted({int(s) for s in seqs if s >= 0})
        found: dict[int, Event] = {}
        with self._lock:
            for chunk in chunks(wanted):
                sql = f"SELECT {_COLUMNS} FROM events WHERE seq IN ({marks(len(chunk))})"
                for row in self._conn.execute(sql, chunk):
                    event = _row_to_event(row)
                    found[event.seq] = event
        return found

    def sessions(self, namespace: str, dim: int) -> list[tuple[str, npt.NDArray[np.int64], Vectors]]:
        """Every session of `namespace` as (name, seqs, vectors (L, dim)) in position order."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT session, seq, embedding FROM events WHERE namespace = ? ORDER BY session, position",
                (namespace,),
            ).fetchall()
        out: list[tuple[str, npt.NDArray[np.int64], Vectors]] = []
        start = 0
        for end in range(1, len(rows) + 1):
            if end == len(rows) or rows[end][0] != rows[start][0]:
                chunk = rows[start:end]
                seqs = np.array([r[1] for r in chunk], dtype=np.int64)
                out.append((chunk[0][0], seqs, decode_vectors([r[2] for r in chunk], dim)))
                start = end
        return out

    def session_list(self, namespace: str) -> list[tuple[str, int, str, str, int]]:
        """(session, episodes, first timestamp, last timestamp, last seq) per session, newest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT session, COUNT(*), MIN(timestamp), MAX(timestamp), MAX(seq) FROM events "
                "WHERE namespace = ? GROUP BY session ORDER BY MAX(seq) DESC",
                (namespace,),
            ).fetchall()
        return [(str(r[0]), int(r[1]), str(r[2]), str(r[3]), int(r[4])) for r in rows]

    def session_events(self, namespace: str, session: str, start: int, limit: int) -> list[Event]:
        """A session's episodes from the `start`-th on (in position order), at most `limit`."""
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {_COLUMNS} FROM events WHERE namespace = ? AND session = ? "
                "ORDER BY position LIMIT ? OFFSET ?",
                (namespace, session, limit, start),
            ).fetchall()
        return [_row_to_event(r) for r in rows]

    def forget_notes(self, namespace: str | None, limit: int) -> list[tuple[str, str, str, int, str]]:
        """(at, namespace, who, count, ids as JSON) of the latest forgets, newest first."""
        where, params = ("WHERE namespace = ?", [namespace]) if namespace is not None else ("", [])
        with self._lock:
            rows = self._conn.execute(
                f"SELECT at, namespace, who, count, ids FROM forget_audit {where} "
                "ORDER BY change DESC LIMIT ?",
                [*params, limit],
            ).fetchall()
        return [(str(r[0]), str(r[1]), str(r[2]), int(r[3]), str(r[4])) for r in rows]

    def daily_counts(self, namespace: str) -> list[tuple[str, int]]:
        """(day, events) for each day (UTC) with events in `namespace`, oldest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT substr(timestamp, 1, 10), COUNT(*) FROM events WHERE namespace = ? "
                "GROUP BY 1 ORDER BY 1",
                (namespace,),
            ).fetchall()
        return [(str(r[0]), int(r[1])) for r in rows]

    def recent(self, namespace: str, limit: int) -> list[Event]:
        """The latest `limit` events stored in `namespace`, newest first."""
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {_COLUMNS} FROM events WHERE namespace = ? ORDER BY seq DESC LIMIT ?",
                (namespace, limit),
            ).fetchall()
        return [_row_to_event(r) for r in rows]

    def context(
        self, namespace: str, session: str, up_to_position: int | None, limit: int, dim: int
    ) -> tuple[npt.NDArray[np.int64], Vectors]:
        """The last `limit` episodes of a session (up to a position), oldest first: (seqs, vectors)."""
        bound = (1 << 62) if up_to_position is None else up_to_position
        with self._lock:
            rows = self._conn.execute(
                "SELECT seq, embedding FROM events WHERE namespace = ? AND session = ? AND position <= ? "
                "ORDER BY position DESC LIMIT ?",
                (namespace, session, bound, limit),
            ).fetchall()
        rows.reverse()
        seqs = np.array([r[0] for r in rows], dtype=np.int64)
        return seqs, decode_vectors([r[1] for r in rows], dim)

    def latest_session(self, namespace: str) -> str | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT session FROM events WHERE namespace = ? ORDER BY seq DESC LIMIT 1", (namespace,)
            ).fetchone()
        return None if row is None else str(row[0])

    def by_ids(self, namespace: str, ids: Sequence[str]) -> list[Event]:
        """The events of `namespace` with these ids, in the order given; ids not found are left out."""
        found: dict[str, Event] = {}
        with self._lock:
            for chunk in chunks(ids):
                sql = f"SELECT {_COLUMNS} FROM events WHERE namespace = ? AND id IN ({marks(len(chunk))})"
                for row in self._conn.execute(sql, [namespace, *chunk]):
                    event = _row_to_event(row)
                    found[event.id] = event
        return [found[i] for i in ids if i in found]

    def forgotten_ids(self, ids: Sequence[str]) -> set[str]:
        """Which of `ids` belong to events that were forgotten (their tombstones)."""
        out: set[str] = set()
        with self._lock:
            for chunk in chunks(ids):
                sql = f"SELECT id FROM forgotten WHERE id IN ({marks(len(chunk))})"
                out.update(r[0] for r in self._conn.execute(sql, list(chunk)))
        return out

    def by_id(self, event_id: str) -> Event | None:
        with self._lock:
            row = self._conn.execute(f"SELECT {_COLUMNS} FROM events WHERE id = ?", (event_id,)).fetchone()
        return None if row is None else _row_to_event(row)

    def export_batches(
        self, namespace: str | None, dim: int, batch: int = 1000
    ) -> Iterator[tuple[list[Event], Vectors]]:
        """Every event (of one namespace, or all) with its vector, in seq order, `batch` at a time.

        Each batch is read in its own short transaction, so writers are never held up for long.
        """
        where, params = ("AND namespace = ?", [namespace]) if namespace is not None else ("", [])
        cursor = 0
        while True:
            with self._lock:
                rows = self._conn.execute(
                    f"SELECT {_COLUMNS}, embedding FROM events WHERE seq > ? {where} ORDER BY seq LIMIT ?",
                    [cursor, *params, batch],
                ).fetchall()
            if not rows:
                return
            events = [_row_to_event(r[:-1]) for r in rows]
            yield events, decode_vectors([r[-1] for r in rows], dim)
            cursor = events[-1].seq

    def holders(
        self, ids: Sequence[str], places: Sequence[tuple[str, str, int]]
    ) -> tuple[set[str], dict[tuple[str, str, int], str]]:
        """Which of `ids` exist, and the id of the event holding each taken (namespace, session, position)."""
        found: set[str] = set()
        taken: dict[tuple[str, str, int], str] = {}
        with self._lock:
            for chunk in chunks(ids):
                sql = f"SELECT id FROM events WHERE id IN ({marks(len(chunk))})"
                found.update(r[0] for r in self._conn.execute(sql, list(chunk)))
            for place in places:
                row = self._conn.execute(
                    "SELECT id FROM events WHERE namespace = ? AND session = ? AND position = ?", place
                ).fetchone()
                if row is not None:
                    taken[place] = str(row[0])
        return found, taken

    def lexical_search(
        self, namespace: str, query: str, filters: Filters, limit: int
    ) -> list[tuple[int, float]]:
        """(seq, BM25 score) of the events of `namespace` passing `filters` whose words best match `query`."""
        with self._lock:
            found: list[tuple[int, float]] = lexical.search(self._conn, namespace, query, filters, limit)
        return found

    def matching_seqs(self, namespace: str, filters: Filters) -> npt.NDArray[np.int64]:
        """Seqs of the events of `namespace` that pass `filters`."""
        where, params = filters.sql(namespace)
        with self._lock:
            rows = self._conn.execute(f"SELECT seq FROM events WHERE {where}", params).fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def neighbours(
        self, namespace: str, anchors: Sequence[tuple[str, int]], reach: int, filters: Filters
    ) -> list[Event]:
        """Events passing `filters` within `reach` positions of each (session, position) anchor (included)."""
        found: list[Event] = []
        columns = ", ".join(f"e.{c.strip()}" for c in _COLUMNS.split(","))
        where, where_params = filters.sql(namespace, table="e")
        with self._lock:
            for chunk in chunks(anchors, 200):
                values = ", ".join("(?, ?, ?)" for _ in chunk)
                params: list[object] = []
                for session, position in chunk:
                    params += [session, position - reach, position + reach]
                # A join on a VALUES list lets SQLite use the (namespace, session, position) index
                # per anchor; an OR of ranges would scan the table.
                rows = self._conn.execute(
                    f"WITH a(session, lo, hi) AS (VALUES {values}) SELECT DISTINCT {columns} FROM a "
                    "JOIN events e ON e.session = a.session AND e.position BETWEEN a.lo AND a.hi "
                    f"WHERE {where}",
                    [*params, *where_params],
                ).fetchall()
                found.extend(_row_to_event(r) for r in rows)
        return found

    def listing(self, namespace: str, filters: Filters, limit: int) -> tuple[list[Event], int]:
        """The first `limit` events of `namespace` passing `filters` in time order, and how many pass."""
        where, params = filters.sql(namespace)
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {_COLUMNS} FROM events WHERE {where} ORDER BY timestamp, seq LIMIT ?",
                [*params, limit],
            ).fetchall()
            total = len(rows)
            if total == limit:
                (total,) = self._conn.execute(f"SELECT COUNT(*) FROM events WHERE {where}", params).fetchone()
        return [_row_to_event(r) for r in rows], int(total)

    def nearest_times(
        self, namespace: str, since: str | None, until: str | None
    ) -> tuple[str | None, str | None]:
        """The latest timestamp of `namespace` before `since` and the earliest after `until`."""
        with self._lock:
            before = after = None
            if since is not None:
                (before,) = self._conn.execute(
                    "SELECT MAX(timestamp) FROM events WHERE namespace = ? AND timestamp < ?",
                    (namespace, since),
                ).fetchone()
            if until is not None:
                (after,) = self._conn.execute(
                    "SELECT MIN(timestamp) FROM events WHERE namespace = ? AND timestamp > ?",
                    (namespace, until),
                ).fetchone()
        return before, after

    def links(self, namespace: str, ids: Sequence[str]) -> list[tuple[str, str]]:
        """(old, new) of the supersession links of `namespace` that touch any of `ids`, oldest link first."""
        found: dict[tuple[str, str], None] = {}
        with self._lock:
            for chunk in chunks(ids, 400):
                holes = marks(len(chunk))
                rows = self._conn.execute(
                    "SELECT old, new FROM links WHERE namespace = ? "
                    f"AND (old IN ({holes}) OR new IN ({holes})) ORDER BY rowid",
                    [namespace, *chunk, *chunk],
                ).fetchall()
                found.update(((str(a), str(b)), None) for a, b in rows)
        return list(found)

    def _missing(self, namespace: str, ids: Sequence[str]) -> list[str]:
        """Which of `ids` are not events of `namespace` (in the caller's transaction)."""
        present: set[str] = set()
        for chunk in chunks(ids):
            rows = self._conn.execute(
                f"SELECT id FROM events WHERE namespace = ? AND id IN ({marks(len(chunk))})",
                [namespace, *chunk],
            ).fetchall()
            present.update(r[0] for r in rows)
        return [i for i in ids if i not in present]

    def vectors_of(self, seqs: npt.NDArray[np.int64], dim: int) -> tuple[npt.NDArray[np.int64], Vectors]:
        """(seqs, vectors (n, dim)) of the events among `seqs` that still exist."""
        found_seqs: list[int] = []
        blobs: list[bytes] = []
        with self._lock:
            for chunk in chunks(seqs.tolist()):
                sql = f"SELECT seq, embedding FROM events WHERE seq IN ({marks(len(chunk))})"
                for seq, blob in self._conn.execute(sql, list(chunk)):
                    found_seqs.append(seq)
                    blobs.append(blob)
        return np.array(found_seqs, dtype=np.int64), decode_vectors(blobs, dim)


class EventLog(EventReader):
    """Durable, append-mostly store of events and their embeddings (WAL, synchronous=FULL)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        # Called inside every write transaction just before COMMIT, when set: a seam for tests
        # that stage a failure after rows were written (it may raise, and then nothing is kept).
        self.before_commit: Callable[[], None] | None = None
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
        self._conn.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is on disk before `append` returns, so an acknowledged event survives
        # power loss, not only a process crash.
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute("PRAGMA busy_timeout=30000")
        with self._transaction():
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self._conn.execute(statement)
            # Counted once, when the counter is created: a full count at every start would read
            # every event (and stop a store with one damaged index page from opening at all).
            if self._conn.execute("SELECT 1 FROM counters WHERE key = 'events'").fetchone() is None:
                self._conn.execute("INSERT INTO counters (key, value) SELECT 'events', COUNT(*) FROM events")
            version = self._meta_get("schema_version")
            if version is not None and int(version) > SCHEMA_VERSION:
                raise StoreMismatch(
                    f"{path} was written by a newer emx-mcp (schema {version}); upgrade emx-mcp to open it."
                )
            if version is not None and int(version) < 2:
                self._conn.execute("ALTER TABLE forgotten ADD COLUMN id TEXT")
            self._conn.execute(lexical.SCHEMA)
            self._conn.execute(lexical.VOCABULARY)
            if version is not None and int(version) < 3:
                lexical.rebuild(self._conn)
            self._meta_set("schema_version", str(SCHEMA_VERSION))
            if self._meta_get("store_id") is None:
                self._meta_set("store_id", uuid.uuid4().hex)
            self.store_id = str(self._meta_get("store_id"))

    # -- transactions -------------------------------------------------------------------------

    def _transaction(self) -> _Transaction:
        return _Transaction(self._conn, self._lock, self.path, self.before_commit)

    def _meta_get(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _meta_set(self, key: str, value: str) -> None:
        self._conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    # -- model binding ------------------------------------------------------------------------

    def bind_model(self, model_id: str, dim: int) -> None:
        """Record the embedding model on first use; refuse a different one afterwards."""
        with self._transaction():
            stored_model, stored_dim = self._meta_get("model_id"), self._meta_get("dim")
            if stored_model is None:
                self._meta_set("model_id", model_id)
                self._meta_set("dim", str(dim))
                return
        if stored_model != model_id or int(stored_dim or 0) != dim:
            raise model_mismatch(
                str(self.path),
                f"{stored_model!r} (dim {stored_dim})",
                f"{model_id!r} (dim {dim})",
                "set EMX_MODEL and EMX_ENCODER_BACKEND back, or use another EMX_DATA_DIR",
            )

    def bound_model(self) -> tuple[str, int] | None:
        with self._lock:
            model, dim = self._meta_get("model_id"), self._meta_get("dim")
        return None if model is None or dim is None else (model, int(dim))

    # -- writes -------------------------------------------------------------------------------

    def append(
        self,
        namespace: str,
        session: str,
        items: Sequence[NewEvent],
        vectors: Vectors,
        max_events: int | None = None,
        receipt: Receipt | None = None,
        supersedes: Sequence[str] = (),
    ) -> tuple[list[Event], Receipt | None]:
        """Store `items` at the end of `session` in one transaction; return them once committed.

        With `max_events`, refuse (writing nothing) if the store would then hold more events.
        With a `receipt` whose key was seen before in `namespace`, store nothing and return the
        events of that first call (those not forgotten since) with its receipt. Each new event
        supersedes the events of `supersedes`, which must be events of `namespace` (NotFound and
        nothing written otherwise).
        """
        if len(items) != len(vectors):
            raise ValueError(f"{len(items)} events but {len(vectors)} vectors")
        with self._transaction():
            if receipt is not None:
                earlier = self._receipt(namespace, receipt.key)
                if earlier is not None:
                    return self.by_ids(namespace, earlier.ids), earlier
            missing = self._missing(namespace, supersedes)
            if missing:
                raise NotFound(unknown_superseded(missing, namespace))
            self._reserve(len(items), max_events)
            (start,) = self._conn.execute(
                "SELECT COALESCE(MAX(position) + 1, 0) FROM events WHERE namespace = ? AND session = ?",
                (namespace, session),
            ).fetchone()
            events = [
                Event(
                    0,
                    new_id(),
                    namespace,
                    session,
                    start + i,
                    item.timestamp,
                    item.text,
                    item.metadata,
                )
                for i, item in enumerate(items)
            ]
            stored = self._insert(events, vectors)
            self._link([(e.id, old) for e in stored for old in supersedes], namespace)
            if receipt is not None:
                self._conn.execute(
                    "INSERT INTO receipts (namespace, key, digest, ids, detail) VALUES (?, ?, ?, ?, ?)",
                    (
                        namespace,
                        receipt.key,
                        receipt.digest,
                        json.dumps([e.id for e in stored]),
                        receipt.detail,
                    ),
                )
            return stored, None

    def receipt(self, namespace: str, key: str) -> Receipt | None:
        """What a `remember` with this idempotency key stored, if one did."""
        with self._lock:
            return self._receipt(namespace, key)

    def _receipt(self, namespace: str, key: str) -> Receipt | None:
        row = self._conn.execute(
            "SELECT digest, ids, detail FROM receipts WHERE namespace = ? AND key = ?", (namespace, key)
        ).fetchone()
        return None if row is None else Receipt(key, str(row[0]), str(row[2]), tuple(json.loads(row[1])))

    def insert(
        self,
        events: Sequence[Event],
        vectors: Vectors,
        max_events: int | None = None,
        links: Sequence[tuple[str, str]] = (),
    ) -> list[Event]:
        """Store events with their own ids and positions (an import) in one transaction.

        Their `seq` is ignored: the log assigns new ones. A place (namespace, session, position)
        already held by another event raises PlaceTaken and writes nothing. `links` are
        (new id, old id) pairs: the new event, one of these, supersedes the old one.
        """
        if len(events) != len(vectors):
            raise ValueError(f"{len(events)} events but {len(vectors)} vectors")
        namespace_of = {e.id: e.namespace for e in events}
        with self._transaction():
            self._reserve(len(events), max_events)
            try:
                stored = self._insert(events, vectors)
            except sqlite3.IntegrityError as exc:
                raise PlaceTaken(
                    f"an event id or (namespace, session, position) is already taken: {exc}"
                ) from None
            for namespace in {namespace_of[new] for new, _ in links}:
                self._link([(new, old) for new, old in links if namespace_of[new] == namespace], namespace)
            return stored

    def supersede(self, namespace: str, new: str, old: Sequence[str]) -> list[str]:
        """Link `new` as superseding each of `old` (all events of `namespace`); return the ids linked anew."""
        with self._transaction():
            missing = self._missing(namespace, [new, *old])
            if missing:
                raise NotFound(unknown_superseded(missing, namespace, "nothing was linked"))
            before = {o for o, _ in self.links(namespace, [new]) if _ == new}
            self._link([(new, o) for o in old], namespace)
        return [o for o in dict.fromkeys(old) if o not in before]

    def _link(self, pairs: Sequence[tuple[str, str]], namespace: str) -> None:
        """Record (new, old) supersession links in the caller's transaction; never an event to itself."""
        if any(new == old for new, old in pairs):
            raise InvalidInput(f"an episode cannot supersede itself ({next(n for n, o in pairs if n == o)}).")
        self._conn.executemany(
            "INSERT OR IGNORE INTO links (namespace, old, new) VALUES (?, ?, ?)",
            [(namespace, old, new) for new, old in pairs],
        )

    def _reserve(self, count: int, max_events: int | None) -> None:
        """Count `count` new events, refusing if that passes `max_events`. Inside a transaction."""
        (total,) = self._conn.execute(
            "UPDATE counters SET value = value + ? WHERE key = 'events' RETURNING value", (count,)
        ).fetchone()
        if max_events is not None and total > max_events:
            raise CapacityExceeded(
                f"the store holds {total - count:,} events and EMX_MAX_EVENTS is {max_events:,}; "
                "forget sessions you no longer need, or raise EMX_MAX_EVENTS."
            )

    def _insert(self, events: Sequence[Event], vectors: Vectors) -> list[Event]:
        """INSERT the rows and return the events with their new seqs. Inside a transaction."""
        stored = []
        for event, vector in zip(events, vectors, strict=True):
            cursor = self._conn.execute(
                "INSERT INTO events (id, namespace, session, position, timestamp, text, metadata, embedding) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    event.id,
                    event.namespace,
                    event.session,
                    event.position,
                    event.timestamp,
                    event.text,
                    json.dumps(event.metadata, ensure_ascii=False, sort_keys=True),
                    np.ascontiguousarray(vector, dtype=np.float32).tobytes(),
                ),
            )
            assert cursor.lastrowid is not None
            stored.append(dataclasses.replace(event, seq=cursor.lastrowid))
        lexical.add(self._conn, [(e.seq, e.namespace, e.session, e.position, e.text) for e in stored])
        return stored

    # -- reads --------------------------------------------------------------------------------

    def forget(self, namespace: str, event_ids: Sequence[str] | None, session: str | None) -> list[str]:
        """Delete the named events, or a whole session, in one transaction; return the ids removed.

        If any of `event_ids` is not an event of `namespace`, nothing is deleted (NotFound).
        """
        with self._transaction():
            if event_ids is not None:
                rows = []
                for chunk in chunks(event_ids):
                    rows += self._conn.execute(
                        f"SELECT seq, id FROM events WHERE namespace = ? AND id IN ({marks(len(chunk))})",
                        [namespace, *chunk],
                    ).fetchall()
                unknown = sorted(set(event_ids) - {event_id for _, event_id in rows})
                if unknown:
                    shown = ", ".join(unknown[:5]) + (
                        f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
                    )
                    raise NotFound(
                        f"no event with id {shown} in namespace {namespace!r}; nothing was forgotten."
                    )
            else:
                rows = self._conn.execute(
                    "SELECT seq, id FROM events WHERE namespace = ? AND session = ?", (namespace, session)
                ).fetchall()
                if not rows:
                    raise NotFound(
                        f"no session {str(session)[:80]!r} in namespace {namespace!r}; nothing was forgotten."
                    )
            places = (
                self._conn.execute(
                    f"SELECT seq, namespace, session, position FROM events WHERE seq IN ({marks(len(rows))})",
                    [seq for seq, _ in rows],
                ).fetchall()
                if rows
                else []
            )
            self._conn.executemany("DELETE FROM events WHERE seq = ?", [(seq,) for seq, _ in rows])
            lexical.remove(self._conn, places)
            gone = [(event_id, event_id) for _, event_id in rows]
            self._conn.executemany("DELETE FROM links WHERE old = ? OR new = ?", gone)
            self._conn.executemany(
                "INSERT INTO forgotten (seq, namespace, id) VALUES (?, ?, ?)",
                [(seq, namespace, event_id) for seq, event_id in rows],
            )
            self._conn.execute("UPDATE counters SET value = value - ? WHERE key = 'events'", (len(rows),))
        return [event_id for _, event_id in rows]

    def note_forget(self, at: str, namespace: str, who: str, count: int, ids: str) -> None:
        with self._transaction():
            self._conn.execute(
                "INSERT INTO forget_audit (at, namespace, who, count, ids) VALUES (?, ?, ?, ?, ?)",
                (at, namespace, who, count, ids),
            )

    def forgotten_after(self, change: int) -> list[tuple[int, int, str]]:
        """(change, seq, namespace) of removals recorded after `change`, in order."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT change, seq, namespace FROM forgotten WHERE change > ? ORDER BY change", (change,)
            ).fetchall()
        return [(int(c), int(s), str(n)) for c, s, n in rows]

    def forgotten_count(self, namespace: str, after_change: int, up_to_seq: int) -> int:
        with self._lock:
            (n,) = self._conn.execute(
                "SELECT COUNT(*) FROM forgotten WHERE namespace = ? AND change > ? AND seq <= ?",
                (namespace, after_change, up_to_seq),
            ).fetchone()
        return int(n)

    def max_forget(self) -> int:
        with self._lock:
            (value,) = self._conn.execute("SELECT COALESCE(MAX(change), 0) FROM forgotten").fetchone()
        return int(value)

    def total(self) -> int:
        """Number of events in the whole store, from a counter kept in step with every write."""
        with self._lock:
            (value,) = self._conn.execute("SELECT value FROM counters WHERE key = 'events'").fetchone()
        return int(value)

    def size_bytes(self) -> int:
        """The database file and its write-ahead log, on disk."""
        return sum(
            p.stat().st_size for p in (self.path, self.path.with_name(self.path.name + "-wal")) if p.exists()
        )

    def high_water(self) -> int:
        """The largest seq ever given, forgotten events included (seqs are never reused)."""
        with self._lock:
            row = self._conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
        return 0 if row is None else int(row[0])

    def fingerprint(self, seq: int, change: int) -> str:
        """What identifies this log up to event `seq` and removal `change`: the last event and removal there.

        A log restored from a backup and written to since, or another store's log, gives other
        ids at the same positions, so a derived file made from one does not match the other.
        """
        with self._lock:
            rows = self._conn.execute(
                "SELECT seq, id FROM (SELECT seq, id FROM events WHERE seq <= ? ORDER BY seq DESC LIMIT 1) "
                "UNION ALL SELECT seq, id FROM (SELECT seq, id FROM forgotten WHERE seq <= ? "
                "ORDER BY seq DESC LIMIT 1)",
                (seq, seq),
            ).fetchall()
            removal = self._conn.execute(
                "SELECT change, seq, COALESCE(id, '') FROM forgotten WHERE change = ?", (change,)
            ).fetchone()
        last = max(rows, default=(0, ""))
        text = f"{self.store_id}|{last[0]}:{last[1]}|{tuple(removal) if removal else ()}"
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def count(self, namespace: str | None = None, up_to_seq: int | None = None) -> int:
        """Number of events, optionally of one namespace and with seq <= up_to_seq."""
        clauses = ["seq <= ?"]
        params: list[object] = [up_to_seq if up_to_seq is not None else (1 << 62)]
        if namespace is not None:
            clauses.append("namespace = ?")
            params.append(namespace)
        with self._lock:
            (n,) = self._conn.execute(
                f"SELECT COUNT(*) FROM events WHERE {' AND '.join(clauses)}", params
            ).fetchone()
        return int(n)

    def vectors_after(
        self, after_seq: int, dim: int, batch: int = 20_000
    ) -> Iterator[tuple[npt.NDArray[np.int64], list[str], Vectors]]:
        """Yield (seqs (n,), namespaces, vectors (n, dim)) of events with seq > after_seq, in seq order."""
        cursor = after_seq
        while True:
            with self._lock:
                rows = self._conn.execute(
                    "SELECT seq, namespace, embedding FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
                    (cursor, batch),
                ).fetchall()
            if not rows:
                return
            seqs = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            yield seqs, [r[1] for r in rows], decode_vectors([r[2] for r in rows], dim)
            cursor = int(seqs[-1])

    def check_integrity(self) -> list[str]:
        """SQLite's quick_check on a read-only connection of its own: [] when sound, else the problems.

        Its own connection reads a snapshot of the database (WAL), so writers go on meanwhile.
        """
        conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=30.0)
        try:
            rows = conn.execute("PRAGMA quick_check").fetchall()
        except sqlite3.DatabaseError as exc:
            return [str(exc)]
        finally:
            conn.close()
        return [str(r[0]) for r in rows if r[0] != "ok"]

    def pragma(self, statement: str) -> list[tuple[Any, ...]]:
        """Run one PRAGMA on the log's own connection and return its rows.

        PRAGMAs are per connection, so this is the way to tune the log's (or, in tests, to stage
        a full disk with `max_page_count` or a read-only file with `query_only`).
        """
        if not statement.lstrip().upper().startswith("PRAGMA "):
            raise ValueError(f"only PRAGMA statements are run here; got {statement[:40]!r}")
        with self._lock:
            return self._conn.execute(statement).fetchall()

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT under the connection lock; ROLLBACK on any error.

    A failure of SQLite or of the file system (disk full, a read-only file, I/O errors, the write
    lock held by another process past the busy timeout) leaves nothing written and is raised as
    StorageError.
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        lock: threading.RLock,
        path: Path,
        before_commit: Callable[[], None] | None = None,
    ) -> None:
        self._conn = conn
        self._lock = lock
        self._path = path
        self._before_commit = before_commit

    def __enter__(self) -> None:
        self._lock.acquire()
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            self._lock.release()
            raise storage_error(self._path, exc) from exc
        except BaseException:
            self._lock.release()
            raise

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        hook_error: BaseException | None = None
        if exc is None and self._before_commit is not None:
            try:
                self._before_commit()
            except BaseException as raised:
                exc = hook_error = raised
        try:
            if exc is None:
                try:
                    self._conn.execute("COMMIT")
                except sqlite3.Error as commit_error:
                    self._rollback()
                    raise storage_error(self._path, commit_error) from commit_error
                return
            self._rollback()
            if isinstance(exc, sqlite3.Error | OSError) and not isinstance(exc, sqlite3.IntegrityError):
                raise storage_error(self._path, exc) from exc
            if hook_error is not None:
                raise hook_error
        finally:
            self._lock.release()

    def _rollback(self) -> None:
        if self._conn.in_transaction:
            # SQLite may have rolled back already (after a full disk or an I/O error).
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")


def unknown_superseded(missing: Sequence[str], namespace: str, done: str = "nothing was stored") -> str:
    """The refusal of a supersession naming episodes `namespace` does not hold."""
    shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
    return (
        f"no episode with id {shown} in namespace {namespace!r}; {done}. Give ids that remember or recall "
        "returned in this namespace."
    )


def storage_error(path: Path, exc: BaseException) -> StorageError:
    """What went wrong writing the event log, and what to do; nothing was written."""
    reason = str(exc)
    if "locked" in reason or "busy" in reason:
        remedy = "another process held its write lock for more than 30 s; try again"
    elif "full" in reason:
        remedy = "free some disk space, then try again"
    elif "readonly" in reason or "read-only" in reason:
        remedy = f"make {path.parent} writable for this user, then try again"
    else:
        remedy = "check the disk and that the folder is writable, then try again"
    return StorageError(
        f"the event log {path} could not be written ({reason}); nothing was stored: {remedy}."
    )
