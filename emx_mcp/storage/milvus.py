"""The Milvus store: one collection is the system of record, shared by every server replica.

Each episode is one row: `seq` (the primary key), its id, namespace, session, position,
timestamp, text, the text of the episode before it (`context`), metadata (JSON) and vector; two
BM25 functions turn text and context into sparse vectors for word search. A side collection
(`<prefix>_meta`) holds small keyed records: the bound model, the index calibration, receipts of
forgotten calls, tombstones, the rest of very long texts, and published predictor checkpoints.

Consistency is Strong on every request: a read waits until it sees every write acknowledged
before it started, so an event `remember` returned is recalled at once, by any replica.

Positions stay unique and ordered when replicas write to one session at once, with write-then-
check: a writer reads the session's last position, inserts its rows after it, then reads the
positions it took. Seeing another writer's row there, it deletes its own rows and tries again
after a random pause. Of two overlapping writers, the one whose check ran later sees the other's
rows (Strong reads follow Milvus's single timestamp order), so at most one keeps a position.
Idempotency receipts ride on the first row of a call, so a call and its receipt land in the
same insert.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import random
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import structlog

from emx_mcp.config import Settings
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
from emx_mcp.storage.embedded import EXACT_FILTER_LIMIT
from emx_mcp.storage.events import chunks, new_id, unknown_superseded
from emx_mcp.storage.index import Ids, IndexState, IndexStats
from emx_mcp.storage.records import Event, Filters, NewEvent, Receipt
from emx_mcp.storage.store import ForgetNote, Match, SessionInfo, StoreStats, exact_top

log = structlog.get_logger(__name__)

# Milvus VARCHAR fields hold at most 65,535 bytes; longer texts continue in meta rows.
TEXT_BYTES = 60_000
# Largest `limit` Milvus accepts for one search or query.
MAX_LIMIT = 16_384
# Writers that found their positions taken try again this many times before giving up.
ATTEMPTS = 30
# Probe vectors used to measure recall@10, and the growth that triggers a new calibration.
PROBES = 100
RECALIBRATE_GROWTH = 2.0
CALIBRATE_FROM = 1_000
# Calibration never goes below this share of nlist: a small store measures as exact while its
# segments are too small to be indexed, and the index built later needs some lists probed.
MIN_NPROBE_SHARE = 1 / 64
_EVENT_FIELDS = [
    "seq",
    "id",
    "namespace",
    "session",
    "position",
    "timestamp",
    "text",
    "text_more",
    "metadata",
]
_KEY_SAFE = re.compile(r"^[A-Za-z0-9_\-. ]{1,200}$")


def _hash(*parts: str) -> str:
    return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=16).hexdigest()


def _micros(timestamp: str) -> int:
    """Microseconds since the epoch of a normalised ISO 8601 timestamp."""
    moment = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1_000_000)


def _split_text(text: str) -> list[str]:
    """The text in pieces of at most TEXT_BYTES UTF-8 bytes, cut between characters."""
    data = text.encode()
    if len(data) <= TEXT_BYTES:
        return [text]
    pieces, start = [], 0
    while start < len(data):
        end = min(start + TEXT_BYTES, len(data))
        while end < len(data) and (data[end] & 0xC0) == 0x80:  # not inside a character
            end -= 1
        pieces.append(data[start:end].decode())
        start = end
    return pieces


def _same_json(a: Any, b: Any) -> bool:
    """Equal with the same JSON types: true is not 1, "1" is not 1, 1 is not 1.0."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def passes(event: Event, filters: Filters) -> bool:
    """The exact filter semantics of the embedded store, applied to an event in Python."""
    if filters.session is not None and event.session != filters.session:
        return False
    if filters.since is not None and event.timestamp < filters.since:
        return False
    if filters.until is not None and event.timestamp > filters.until:
        return False
    for key, value in (filters.metadata or {}).items():
        if key not in event.metadata or not _same_json(event.metadata[key], value):
            return False
    return True


def _safe(value: str) -> bool:
    """Milvus's expression parser takes no escapes for control characters; such values are hashed."""
    return not any(ord(c) < 0x20 or ord(c) == 0x7F for c in value)


def _lit(value: Any) -> str:
    """A literal for a Milvus expression. Milvus Lite 2.5 has no expression templates, so values are
    written into the text: strings quoted and escaped (never with control characters), numbers as is.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        if not _safe(value):
            raise ValueError("a control character cannot be written into a Milvus expression")
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_lit(v) for v in value) + "]"
    raise TypeError(f"no Milvus literal for {type(value).__name__}")


def _row_passes(row: dict[str, Any], filters: Filters) -> bool:
    """`passes` for the timestamp and metadata of a search hit (namespace and session are exact in Milvus)."""
    if filters.since is not None and row["timestamp"] < filters.since:
        return False
    if filters.until is not None and row["timestamp"] > filters.until:
        return False
    metadata = row.get("metadata") or {}
    return all(
        key in metadata and _same_json(metadata[key], v) for key, v in (filters.metadata or {}).items()
    )


class _Expr:
    """A Milvus filter expression built from clauses, each a template filled with literals."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def add(self, template: str, **values: Any) -> _Expr:
        text = template
        for name, value in values.items():
            text = text.replace("{" + name + "}", _lit(value))
        self.parts.append(text)
        return self

    @property
    def text(self) -> str:
        return " and ".join(f"({p})" for p in self.parts) if self.parts else ""

    @classmethod
    def of(cls, namespace: str, filters: Filters | None = None) -> _Expr:
        expr = cls().add("namespace == {ns}", ns=namespace)
        filters = filters or Filters()
        if filters.session is not None:
            expr.add("session_h == {s}", s=_hash(filters.session))
        if filters.since is not None:
            expr.add("ts >= {t}", t=_micros(filters.since))
        if filters.until is not None:
            expr.add("ts <= {t}", t=_micros(filters.until))
        for key, value in (filters.metadata or {}).items():
            # A coarse pre-filter where Milvus can express it; `passes` decides exactly.
            if not _KEY_SAFE.fullmatch(key) or isinstance(value, bool) or value is None:
                continue
            if isinstance(value, (int, float)) or (isinstance(value, str) and _safe(value)):
                expr.add(f'metadata["{key}"] == {{v}}', v=value)
        return expr


class MilvusStore:
    """Episodes in one Milvus collection. Open before use; safe to share between threads."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.policy = settings.training_policy()
        self.dim = 0
        self.events_name = f"{settings.milvus_collection}_events"
        self.meta_name = f"{settings.milvus_collection}_meta"
        self._client: Any = None
        self._seq_lock = threading.Lock()
        self._last_micros = 0
        # 12 random bits in every seq this process makes: replicas never make the same seq.
        self._replica = random.SystemRandom().getrandbits(12)
        self._calibration: dict[str, Any] = {}
        self._calibrating = threading.Lock()
        self._calibrated_at = 0.0

    # -- lifecycle ----------------------------------------------------------------------------

    def open(self, model_id: str, dim_of: Callable[[], int]) -> None:
        try:
            from pymilvus import MilvusClient
        except ImportError:
            raise StorageError("EMX_STORE=milvus needs pymilvus: pip install 'emx-mcp[milvus]'") from None

        uri = self.settings.milvus_uri
        assert uri is not None, "settings validation requires EMX_MILVUS_URI"
        token = self.settings.milvus_token.get_secret_value() if self.settings.milvus_token else ""
        try:
            self._client = MilvusClient(uri=uri, token=token, timeout=60)
        except Exception as exc:
            raise StorageError(f"cannot reach Milvus at {uri}: {type(exc).__name__}: {exc}") from None
        self._ensure_meta()
        bound = self._meta_get("config")
        if bound is None:
            self.dim = dim_of()
            self._create_events()
            # Two replicas creating the store at once write the same record.
            self._meta_put("config", "config", "", json.dumps({"model": model_id, "dim": self.dim}))
        else:
            config = json.loads(bound)
            if config["model"] != model_id:
                raise model_mismatch(
                    f"Milvus collection {self.events_name!r}",
                    repr(config["model"]),
                    repr(model_id),
                    "set EMX_MODEL and EMX_ENCODER_BACKEND back, or use another EMX_MILVUS_COLLECTION",
                )
            self.dim = int(config["dim"])
            self._create_events()
        calibration = self._meta_get("calibration")
        self._calibration = json.loads(calibration) if calibration else {}
        log.info("store opened", store="milvus", uri=uri, collection=self.events_name, dim=self.dim)

    def _ensure_meta(self) -> None:
        from pymilvus import DataType

        if self._client.has_collection(self.meta_name):
            return
        schema = self._client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("key", DataType.VARCHAR, is_primary=True, max_length=1024)
        schema.add_field("kind", DataType.VARCHAR, max_length=32)
        schema.add_field("namespace", DataType.VARCHAR, max_length=128)
        schema.add_field("value", DataType.VARCHAR, max_length=65_535)
        schema.add_field("unused", DataType.FLOAT_VECTOR, dim=2)  # Milvus requires a vector field
        index = self._client.prepare_index_params()
        index.add_index("unused", index_type="FLAT", metric_type="L2")
        self._create(self.meta_name, schema, index)

    def _create_events(self) -> None:
        from pymilvus import DataType, Function, FunctionType

        if self._client.has_collection(self.events_name):
            if self._stored_dim() == self.dim:
                return
            if self.total():
                raise StoreMismatch(
                    f"Milvus collection {self.events_name!r} holds {self._stored_dim()}-d vectors but no "
                    f"record of their model; the server's model gives {self.dim}-d ones. Use another "
                    "EMX_MILVUS_COLLECTION."
                )
            # An empty collection left without its record (a store made, then emptied): made again.
            self._client.drop_collection(self.events_name)
        analyzer = {"type": "english"}
        schema = self._client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("seq", DataType.INT64, is_primary=True)
        schema.add_field("id", DataType.VARCHAR, max_length=1024)
        # Strings a filter compares are compared by hash: any character, no escaping.
        schema.add_field("id_h", DataType.VARCHAR, max_length=32)
        schema.add_field("session_h", DataType.VARCHAR, max_length=32)
        # A plain field, not a partition key: Milvus Lite refuses every filter on a collection
        # with a partition key. On a cluster, see the README's sizing plan.
        schema.add_field("namespace", DataType.VARCHAR, max_length=128)
        schema.add_field("session", DataType.VARCHAR, max_length=1024)
        schema.add_field("position", DataType.INT64)
        schema.add_field("ts", DataType.INT64)
        schema.add_field("timestamp", DataType.VARCHAR, max_length=64)
        schema.add_field(
            "text", DataType.VARCHAR, max_length=65_535, enable_analyzer=True, analyzer_params=analyzer
        )
        schema.add_field("text_more", DataType.INT64)
        schema.add_field(
            "context", DataType.VARCHAR, max_length=65_535, enable_analyzer=True, analyzer_params=analyzer
        )
        schema.add_field("metadata", DataType.JSON)
        schema.add_field("receipt", DataType.VARCHAR, max_length=64)
        schema.add_field("receipt_detail", DataType.VARCHAR, max_length=65_535)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.dim)
        schema.add_field("text_words", DataType.SPARSE_FLOAT_VECTOR)
        schema.add_field("context_words", DataType.SPARSE_FLOAT_VECTOR)
        for source in ("text", "context"):
            schema.add_function(
                Function(
                    name=f"{source}_bm25",
                    function_type=FunctionType.BM25,
                    input_field_names=[source],
                    output_field_names=[f"{source}_words"],
                )
            )
        index = self._client.prepare_index_params()
        kind = "IVF_SQ8" if self.policy.kind == "ivf_sq8" else "IVF_FLAT"
        index.add_index(
            "vector", index_type=kind, metric_type="IP", params={"nlist": self.settings.milvus_nlist}
        )
        for field in ("text_words", "context_words"):
            index.add_index(field, index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
        for field in ("namespace", "session_h", "id_h", "receipt"):
            index.add_index(field, index_type="INVERTED")
        self._create(self.events_name, schema, index, shards=self.settings.milvus_shards)

    def _stored_dim(self) -> int:
        fields = self._client.describe_collection(self.events_name)["fields"]
        return int(next(f for f in fields if f["name"] == "vector")["params"]["dim"])

    def _create(self, name: str, schema: Any, index: Any, shards: int = 1) -> None:
        try:
            self._client.create_collection(
                name, schema=schema, index_params=index, consistency_level="Strong", num_shards=shards
            )
        except Exception:
            if not self._client.has_collection(name):  # not a replica that created it first
                raise
        if self.settings.milvus_replicas > 1:
            self._client.load_collection(name, replica_number=self.settings.milvus_replicas)
        else:
            self._client.load_collection(name)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def __len__(self) -> int:
        return self.total()

    def wait_for_integrity_check(self, timeout: float | None = None) -> str:
        return "ok"

    def catch_up(self) -> None:
        """Nothing to catch up: every read asks Milvus with Strong consistency."""

    def snapshot(self, every_namespace: bool = False) -> None:
        """Nothing to write: Milvus persists its own segments and indexes."""

    # -- requests -----------------------------------------------------------------------------

    def _query(self, expr: _Expr, fields: list[str], limit: int | None = None) -> list[dict[str, Any]]:
        kwargs: dict[str, Any] = {"filter": expr.text, "output_fields": fields}
        if limit is not None:
            kwargs["limit"] = limit
        rows: list[dict[str, Any]] = self._client.query(
            self.events_name, consistency_level="Strong", **kwargs
        )
        return rows

    def _query_all(self, expr: _Expr, fields: list[str]) -> list[dict[str, Any]]:
        """Every row matching: in one query when few, else the whole result through an iterator."""
        count = self._count(expr)
        if count <= MAX_LIMIT:
            return self._query(expr, fields, limit=MAX_LIMIT) if count else []
        return list(self._iterate(expr, fields))

    def _iterate(self, expr: _Expr, fields: list[str], batch: int = 2_000) -> Iterator[dict[str, Any]]:
        text = expr.text
        iterator = self._client.query_iterator(
            self.events_name, batch_size=batch, filter=text, output_fields=fields, consistency_level="Strong"
        )
        try:
            while True:
                rows = iterator.next()
                if not rows:
                    return
                yield from rows
        finally:
            iterator.close()

    def _count(self, expr: _Expr) -> int:
        rows = self._client.query(
            self.events_name,
            filter=expr.text,
            output_fields=["count(*)"],
            consistency_level="Strong",
        )
        return int(rows[0]["count(*)"])

    def _meta_get(self, key: str) -> str | None:
        rows = self._client.query(
            self.meta_name,
            filter=f"key == {_lit(key)}",
            output_fields=["value"],
            consistency_level="Strong",
        )
        return str(rows[0]["value"]) if rows else None

    def _meta_keys(self, kind: str, keys: Sequence[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        for chunk in chunks(keys, 1000):
            rows = self._client.query(
                self.meta_name,
                filter=f"kind == {_lit(kind)} and key in {_lit(list(chunk))}",
                output_fields=["key", "value"],
                consistency_level="Strong",
            )
            found.update({r["key"]: r["value"] for r in rows})
        return found

    def _meta_put(self, key: str, kind: str, namespace: str, value: str) -> None:
        self._meta_put_many([(key, kind, namespace, value)])

    def _meta_put_many(self, rows: Sequence[tuple[str, str, str, str]]) -> None:
        for chunk in chunks(rows, 500):
            self._client.upsert(
                self.meta_name,
                [
                    {"key": k, "kind": kind, "namespace": ns, "value": v, "unused": [0.0, 0.0]}
                    for k, kind, ns, v in chunk
                ],
            )

    # -- rows and events ------------------------------------------------------------------------

    def _next_seqs(self, count: int) -> list[int]:
        """`count` new primary keys: microseconds since the epoch, then this replica's 12 bits."""
        with self._seq_lock:
            start = max(self._last_micros + 1, time.time_ns() // 1000)
            self._last_micros = start + count - 1
        return [((start + i) << 12) | self._replica for i in range(count)]

    def _events_of(self, rows: Sequence[dict[str, Any]]) -> list[Event]:
        longer = [r for r in rows if r.get("text_more")]
        rest: dict[str, str] = {}
        if longer:
            keys = [f"text:{_hash(r['id'])}:{i}" for r in longer for i in range(1, int(r["text_more"]) + 1)]
            rest = self._meta_keys("text", keys)
        out = []
        for r in rows:
            text = r["text"]
            for i in range(1, int(r.get("text_more") or 0) + 1):
                text += rest.get(f"text:{_hash(r['id'])}:{i}", "")
            out.append(
                Event(
                    int(r["seq"]),
                    r["id"],
                    r["namespace"],
                    r["session"],
                    int(r["position"]),
                    r["timestamp"],
                    text,
                    dict(r["metadata"] or {}),
                )
            )
        return out

    def _rows(
        self,
        events: Sequence[Event],
        vectors: Vectors,
        contexts: Sequence[str],
        receipt: Receipt | None = None,
    ) -> tuple[list[dict[str, Any]], list[tuple[str, str, str, str]]]:
        rows, overflow = [], []
        for i, (event, vector, context) in enumerate(zip(events, vectors, contexts, strict=True)):
            pieces = _split_text(event.text)
            key = _hash(event.id)
            overflow += [(f"text:{key}:{n}", "text", event.namespace, p) for n, p in enumerate(pieces[1:], 1)]
            first = receipt is not None and i == 0
            rows.append(
                {
                    "seq": event.seq,
                    "id": event.id,
                    "id_h": _hash(event.id),
                    "namespace": event.namespace,
                    "session": event.session,
                    "session_h": _hash(event.session),
                    "position": event.position,
                    "ts": _micros(event.timestamp),
                    "timestamp": event.timestamp,
                    "text": pieces[0],
                    "text_more": len(pieces) - 1,
                    "context": _split_text(context)[0],
                    "metadata": event.metadata,
                    "receipt": _hash(event.namespace, receipt.key) if first and receipt else "",
                    "receipt_detail": _receipt_json(receipt, [e.id for e in events])
                    if first and receipt
                    else "",
                    "vector": np.asarray(vector, dtype=np.float32).tolist(),
                }
            )
        return rows, overflow

    def _vectors(self, rows: Sequence[dict[str, Any]]) -> Vectors:
        if not rows:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.asarray([r["vector"] for r in rows], dtype=np.float32)

    def _session_tail(self, namespace: str, session: str) -> tuple[int, str]:
        """(last position, its text) of a session; (-1, "") when it has no events.

        The last row can vanish between the two reads (another replica's write that gave its
        places up); then the session is read again.
        """
        expr = _Expr.of(namespace, Filters(session=session))
        while True:
            rows = self._query_all(expr, ["seq", "position"])
            if not rows:
                return -1, ""
            last = max(rows, key=lambda r: int(r["position"]))
            found = self._query(_Expr.of(namespace).add("seq == {s}", s=int(last["seq"])), ["text"])
            if found:
                return int(last["position"]), str(found[0]["text"])

    # -- writes -------------------------------------------------------------------------------

    def append(
        self,
        namespace: str,
        session: str,
        items: Sequence[NewEvent],
        vectors: Vectors,
        receipt: Receipt | None = None,
        supersedes: Sequence[str] = (),
    ) -> tuple[list[Event], Receipt | None]:
        if len(items) != len(vectors):
            raise ValueError(f"{len(items)} events but {len(vectors)} vectors")
        if receipt is not None:
            earlier = self.receipt(namespace, receipt.key)
            if earlier is not None:
                return self.events(namespace, earlier.ids), earlier
        self._check_present(namespace, supersedes, "nothing was stored")
        self._reserve(len(items))
        ids = [new_id() for _ in items]
        for attempt in range(ATTEMPTS):
            last, previous = self._session_tail(namespace, session)
            seqs = self._next_seqs(len(items))
            events = [
                Event(
                    seq, event_id, namespace, session, last + 1 + i, item.timestamp, item.text, item.metadata
                )
                for i, (seq, event_id, item) in enumerate(zip(seqs, ids, items, strict=True))
            ]
            contexts = [previous, *(e.text for e in events[:-1])]
            rows, overflow = self._rows(events, vectors, contexts, receipt)
            self._meta_put_many(overflow)  # before the rows: a row never points at missing text
            self._client.insert(self.events_name, rows)
            taken = self._query(
                _Expr.of(namespace, Filters(session=session)).add(
                    "position >= {lo} and position <= {hi}", lo=last + 1, hi=last + len(items)
                ),
                ["seq"],
                limit=MAX_LIMIT,
            )
            if {int(r["seq"]) for r in taken} <= set(seqs):
                # After the events: a crash in between leaves them unlinked, never a link to nothing.
                self._link(namespace, [(e.id, o) for e in events for o in supersedes])
                self._note_namespace(namespace, session, seqs[-1])
                self._maybe_calibrate()
                return events, None
            # Another replica wrote to this session at the same time: give the places up, retry.
            self._client.delete(self.events_name, ids=seqs)
            time.sleep(random.uniform(0.002, 0.02) * (attempt + 1))
        raise StorageError(
            f"could not find free positions in session {session[:80]!r} after {ATTEMPTS} attempts "
            "(too many servers writing to it at once); nothing was stored, try again."
        )

    def _reserve(self, count: int) -> None:
        """Refuse writes past EMX_MAX_EVENTS: replicas may overshoot by a call each."""
        total = self.total()
        if total + count > self.settings.max_events:
            raise CapacityExceeded(
                f"the store holds {total:,} events and EMX_MAX_EVENTS is {self.settings.max_events:,}; "
                "forget sessions you no longer need, or raise EMX_MAX_EVENTS."
            )

    def _note_namespace(self, namespace: str, session: str, seq: int) -> None:
        self._meta_put(
            f"latest:{namespace}", "latest", namespace, json.dumps({"session": session, "seq": seq})
        )

    def insert(
        self, events: Sequence[Event], vectors: Vectors, links: Sequence[tuple[str, str]] = ()
    ) -> list[Event]:
        """Store events that keep their ids and places (an import); the store gives them new seqs.

        `links` are (new id, old id) pairs: the new event, one of these, supersedes the old one.
        """
        if len(events) != len(vectors):
            raise ValueError(f"{len(events)} events but {len(vectors)} vectors")
        found, taken = self.holders(
            [e.id for e in events], [(e.namespace, e.session, e.position) for e in events]
        )
        if found or taken:
            raise PlaceTaken(
                f"an event id or (namespace, session, position) is already taken: {sorted(found)[:3]}"
            )
        self._reserve(len(events))
        stored = [
            Event(seq, e.id, e.namespace, e.session, e.position, e.timestamp, e.text, e.metadata)
            for seq, e in zip(self._next_seqs(len(events)), events, strict=True)
        ]
        contexts = self._contexts_for(stored)
        rows, overflow = self._rows(stored, vectors, contexts)
        self._meta_put_many(overflow)
        for chunk in chunks(rows, 500):
            self._client.insert(self.events_name, list(chunk))
        latest: dict[str, Event] = {}
        for event in stored:
            latest[event.namespace] = event
        for event in latest.values():
            self._note_namespace(event.namespace, event.session, event.seq)
        namespace_of = {e.id: e.namespace for e in events}
        for namespace in {namespace_of[new] for new, _ in links}:
            self._link(namespace, [(new, old) for new, old in links if namespace_of[new] == namespace])
        self._maybe_calibrate()
        return stored

    # -- supersession links: meta rows, one per (old, new) ----------------------------------------

    def _check_present(self, namespace: str, ids: Sequence[str], done: str) -> None:
        if not ids:
            return
        present = {e.id for e in self.events(namespace, ids)}
        missing = [i for i in ids if i not in present]
        if missing:
            raise NotFound(unknown_superseded(missing, namespace, done))

    def _link(self, namespace: str, pairs: Sequence[tuple[str, str]]) -> None:
        if any(new == old for new, old in pairs):
            raise InvalidInput(f"an episode cannot supersede itself ({next(n for n, o in pairs if n == o)}).")
        at = time.time_ns()
        self._meta_put_many(
            [
                (
                    "link:" + _hash(namespace, old, new),
                    "link",
                    namespace,
                    json.dumps({"old": old, "new": new, "at": at + i}),
                )
                for i, (new, old) in enumerate(pairs)
            ]
        )

    def _all_links(self, namespace: str) -> list[tuple[str, str, str]]:
        """(key, old, new) of every link of `namespace`, oldest first (paged: no query limit applies)."""
        iterator = self._client.query_iterator(
            self.meta_name,
            batch_size=2_000,
            filter=f'kind == "link" and namespace == {_lit(namespace)}',
            output_fields=["key", "value"],
            consistency_level="Strong",
        )
        rows: list[dict[str, Any]] = []
        try:
            while batch := iterator.next():
                rows.extend(batch)
        finally:
            iterator.close()
        values = sorted(((json.loads(r["value"]), r["key"]) for r in rows), key=lambda v: v[0]["at"])
        return [(key, v["old"], v["new"]) for v, key in values]

    def links(self, namespace: str, ids: Sequence[str]) -> list[tuple[str, str]]:
        wanted = set(ids)
        return [(old, new) for _, old, new in self._all_links(namespace) if old in wanted or new in wanted]

    def listing(self, namespace: str, filters: Filters, limit: int) -> tuple[list[Event], int]:
        rows = [
            r for r in self._query_all(_Expr.of(namespace, filters), _EVENT_FIELDS) if _row_passes(r, filters)
        ]
        rows.sort(key=lambda r: (r["timestamp"], int(r["seq"])))
        return self._events_of(rows[:limit]), len(rows)

    def nearest_times(
        self, namespace: str, since: str | None, until: str | None
    ) -> tuple[str | None, str | None]:
        before = after = None
        if since is not None:
            rows = self._query_all(_Expr.of(namespace).add("ts < {t}", t=_micros(since)), ["timestamp"])
            before = max((r["timestamp"] for r in rows), default=None)
        if until is not None:
            rows = self._query_all(_Expr.of(namespace).add("ts > {t}", t=_micros(until)), ["timestamp"])
            after = min((r["timestamp"] for r in rows), default=None)
        return before, after

    def supersede(self, namespace: str, new: str, old: Sequence[str]) -> list[str]:
        self._check_present(namespace, [new, *old], "nothing was linked")
        before = {o for o, n in self.links(namespace, [new]) if n == new}
        fresh = [o for o in dict.fromkeys(old) if o not in before]
        self._link(namespace, [(new, o) for o in fresh])
        return fresh

    def _unlink(self, namespace: str, ids: set[str]) -> None:
        keys = [key for key, old, new in self._all_links(namespace) if old in ids or new in ids]
        for chunk in chunks(keys, 1000):
            self._client.delete(self.meta_name, ids=list(chunk))

    def _contexts_for(self, events: Sequence[Event]) -> list[str]:
        """The text of the event before each one in its session, among the store's and these."""
        contexts = []
        by_session: dict[tuple[str, str], dict[int, str]] = {}
        for event in events:
            key = (event.namespace, event.session)
            if key not in by_session:
                rows = self._query_all(
                    _Expr.of(event.namespace, Filters(session=event.session)), ["position", "text"]
                )
                by_session[key] = {int(r["position"]): r["text"] for r in rows}
            by_session[key][event.position] = event.text
        for event in events:
            texts = by_session[(event.namespace, event.session)]
            earlier = [p for p in texts if p < event.position]
            contexts.append(texts[max(earlier)] if earlier else "")
        return contexts

    def forget(self, namespace: str, ids: Sequence[str] | None, session: str | None) -> list[str]:
        fields = ["seq", "id", "session", "position", "receipt", "receipt_detail"]
        if ids is not None:
            rows = []
            for chunk in chunks(ids, 1000):
                rows += self._query(
                    _Expr.of(namespace).add("id_h in {ids}", ids=[_hash(i) for i in chunk]), fields, MAX_LIMIT
                )
            unknown = sorted(set(ids) - {r["id"] for r in rows})
            if unknown:
                shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
                raise NotFound(f"no event with id {shown} in namespace {namespace!r}; nothing was forgotten.")
        else:
            rows = self._query_all(_Expr.of(namespace, Filters(session=session)), fields)
            if not rows:
                raise NotFound(
                    f"no session {str(session)[:80]!r} in namespace {namespace!r}; nothing was forgotten."
                )
        # What outlives the rows: receipts (a retry must not store again) and tombstones (an
        # import must not bring them back). Written first: a crash in between forgets nothing.
        keep = [
            ("receipt:" + r["receipt"], "receipt", namespace, r["receipt_detail"])
            for r in rows
            if r["receipt"]
        ]
        keep += [("forgotten:" + _hash(r["id"]), "forgotten", namespace, r["id"]) for r in rows]
        self._meta_put_many(keep)
        for part in chunks([int(r["seq"]) for r in rows], 1000):
            self._client.delete(self.events_name, ids=list(part))
        self._repair_contexts(namespace, {(r["session"], int(r["position"])) for r in rows})
        self._unlink(namespace, {r["id"] for r in rows})
        return [r["id"] for r in rows]

    def _repair_contexts(self, namespace: str, gone: set[tuple[str, int]]) -> None:
        """Give the event after each forgotten one the text now before it (forgotten text is unsearchable)."""
        for session in {s for s, _ in gone}:
            rows = self._query_all(_Expr.of(namespace, Filters(session=session)), ["seq", "position"])
            order = sorted((int(r["position"]), int(r["seq"])) for r in rows)
            positions = [p for p, _ in order]
            followers = set()
            for s, position in gone:
                if s != session:
                    continue
                after = next((i for i, p in enumerate(positions) if p > position), None)
                if after is not None:
                    followers.add(after)
            for i in sorted(followers):
                found = self._client.query(
                    self.events_name,
                    filter=f"seq == {order[i][1]}",
                    output_fields=["*"],
                    consistency_level="Strong",
                )
                earlier = (
                    self._query(_Expr.of(namespace).add("seq == {s}", s=order[i - 1][1]), ["text"])
                    if i
                    else []
                )
                if not found:  # forgotten meanwhile by another call
                    continue
                before = earlier[0]["text"] if earlier else ""
                row = {k: v for k, v in found[0].items() if k not in ("text_words", "context_words")}
                row["context"] = before
                self._client.upsert(self.events_name, [row])

    # -- reads --------------------------------------------------------------------------------

    def receipt(self, namespace: str, key: str) -> Receipt | None:
        digest = _hash(namespace, key)
        rows = self._query(_Expr.of(namespace).add("receipt == {r}", r=digest), ["receipt_detail"], limit=1)
        detail = rows[0]["receipt_detail"] if rows else self._meta_get("receipt:" + digest)
        if not detail:
            return None
        data = json.loads(detail)
        return Receipt(key, data["digest"], data["detail"], tuple(data["ids"]))

    def events(self, namespace: str, ids: Sequence[str]) -> list[Event]:
        found: dict[str, Event] = {}
        for chunk in chunks(ids, 1000):
            rows = self._query(
                _Expr.of(namespace).add("id_h in {ids}", ids=[_hash(i) for i in chunk]),
                _EVENT_FIELDS,
                MAX_LIMIT,
            )
            found.update((e.id, e) for e in self._events_of(rows))
        return [found[i] for i in ids if i in found]

    def forgotten_ids(self, ids: Sequence[str]) -> set[str]:
        found = self._meta_keys("forgotten", ["forgotten:" + _hash(i) for i in ids])
        return set(found.values())

    def search(self, namespace: str, queries: Vectors, k: int, filters: Filters) -> list[list[Match]]:
        if len(queries) == 0:
            return []
        expr = _Expr.of(namespace, filters)
        if filters.any and self._count(expr) <= EXACT_FILTER_LIMIT:
            # A small filtered set is scored exactly: IVF probes only the lists nprobe allows.
            rows = [
                r
                for r in self._query_all(expr, [*_EVENT_FIELDS, "vector"])
                if passes(self._events_of([r])[0], filters)
            ]
            seqs = np.array([int(r["seq"]) for r in rows], dtype=np.int64)
            scores, found = exact_top(
                np.ascontiguousarray(queries, dtype=np.float32), seqs, self._vectors(rows), k
            )
            by_seq = {e.seq: e for e in self._events_of(rows)}
            return [
                [Match(by_seq[int(i)], float(s)) for s, i in zip(rs, ri, strict=True) if i >= 0]
                for rs, ri in zip(scores, found, strict=True)
            ]
        limit = min(MAX_LIMIT, k * 2 if filters.metadata else k)
        results = self._client.search(
            self.events_name,
            data=np.asarray(queries, dtype=np.float32).tolist(),
            anns_field="vector",
            limit=limit,
            filter=expr.text,
            output_fields=_EVENT_FIELDS,
            search_params={"metric_type": "IP", "params": {"nprobe": self.nprobe}},
            consistency_level="Strong",
        )
        out = []
        for hits in results:
            rows = [h["entity"] | {"seq": h["id"]} for h in hits]
            events = self._events_of(rows)
            matches = [
                Match(e, float(h["distance"]))
                for e, h in zip(events, hits, strict=True)
                if passes(e, filters)
            ]
            out.append(matches[:k])
        return out

    @property
    def nprobe(self) -> int:
        return int(self._calibration.get("nprobe", min(self.settings.milvus_nlist, 32)))

    def search_text(
        self, namespace: str, query: str, limit: int, filters: Filters
    ) -> list[tuple[int, float]]:
        words = lexical.terms(query)
        if not words:
            return []
        expr = _Expr.of(namespace, filters)
        scores: dict[int, float] = {}
        for field, weight in (("text_words", 1.0), ("context_words", lexical.CONTEXT_WEIGHT)):
            hits = self._bm25(field, " ".join(words), min(MAX_LIMIT, limit * 2), expr, filters)
            for h in hits:
                if not _row_passes(h["entity"], filters):
                    continue
                scores[int(h["id"])] = scores.get(int(h["id"]), 0.0) + weight * float(h["distance"])
        ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]
        covered = dict(self._coverage(namespace, words, [seq for seq, _ in ranked]))
        ranked = [(seq, score) for seq, score in ranked if seq in covered]
        if not ranked:
            return []
        relative = [score / ranked[0][1] if ranked[0][1] > 0 else 0.0 for _, score in ranked]
        blended = lexical.blend([covered[seq] for seq, _ in ranked], relative)
        return [(seq, value) for (seq, _), value in zip(ranked, blended, strict=True)]

    def _coverage(self, namespace: str, words: list[str], seqs: list[int]) -> list[tuple[int, float]]:
        """(seq, coverage) of BM25 hits, in their order: the share of the query's IDF mass each holds.

        Milvus does not expose its term statistics, so IDF here is that of the hits themselves: a
        term most of them hold weighs little. As in the embedded store, a hit scores the coverage of its
        own text, or CONTEXT_SHARE of its context's, whichever is more.
        """
        if not seqs:
            return []
        stems = [term for _, term in lexical.stemmed(words)]
        rows = {
            int(r["seq"]): r
            for r in self._query(
                _Expr.of(namespace).add("seq in {s}", s=seqs), ["seq", "text", "context"], len(seqs)
            )
        }
        kept = [seq for seq in seqs if seq in rows]
        held = lexical.tokens([(rows[seq]["text"], rows[seq]["context"]) for seq in kept], stems)
        weight = {t: lexical.idf(2 * len(kept) + 1, sum(t in a or t in b for a, b in held)) for t in stems}
        total = sum(weight.values()) or 1.0
        out = []
        for seq, (text, context) in zip(kept, held, strict=True):
            own = sum(weight[t] for t in stems if t in text) / total
            around = sum(weight[t] for t in stems if t in context) / total
            out.append((seq, min(1.0, max(own, lexical.CONTEXT_SHARE * around))))
        return out

    def _bm25(self, field: str, query: str, limit: int, expr: _Expr, filters: Filters) -> list[Any]:
        """BM25 hits of one sparse field, or none when Milvus cannot score them just now.

        Milvus 2.5 sometimes computes NaN BM25 weights (a segment whose rows all have an empty
        field, as the first episode of a session has no context, or statistics caught between
        an insert and a delete). One retry; then the words of this field are left out of this
        recall, which still ranks by meaning, rather than failing it.
        """
        for attempt in range(2):
            try:
                (hits,) = self._client.search(
                    self.events_name,
                    data=[query],
                    anns_field=field,
                    limit=limit,
                    filter=expr.text,
                    output_fields=["metadata", "timestamp"]
                    if filters.metadata or filters.since or filters.until
                    else [],
                    search_params={"metric_type": "BM25"},
                    consistency_level="Strong",
                )
                return list(hits)
            except Exception as exc:
                if "NaN" not in str(exc):
                    raise
                if attempt:
                    log.warning(
                        "BM25 scores unavailable; ranking by meaning", field=field, error=str(exc)[:160]
                    )
                else:
                    time.sleep(0.05)
        return []

    def events_at(self, namespace: str, seqs: Sequence[int]) -> dict[int, tuple[Event, Vectors]]:
        out: dict[int, tuple[Event, Vectors]] = {}
        for chunk in chunks(list(seqs), 1000):
            rows = self._query(
                _Expr.of(namespace).add("seq in {s}", s=list(chunk)), [*_EVENT_FIELDS, "vector"], MAX_LIMIT
            )
            vectors = self._vectors(rows)
            for event, vector in zip(self._events_of(rows), vectors, strict=True):
                out[event.seq] = (event, vector)
        return {seq: out[seq] for seq in seqs if seq in out}

    def neighbours(
        self, namespace: str, anchors: Sequence[tuple[str, int]], reach: int, filters: Filters
    ) -> list[Event]:
        found: dict[int, Event] = {}
        for chunk in chunks(anchors, 50):
            # One query for the chunk: its sessions and every position in reach (an OR of ranges
            # is refused by Milvus Lite), then each row kept only if it is near its own anchor.
            near: dict[str, set[int]] = {}
            for session, position in chunk:
                near.setdefault(session, set()).update(range(position - reach, position + reach + 1))
            expr = _Expr.of(namespace, filters).add(
                "session_h in {s} and position in {p}",
                s=[_hash(session) for session in near],
                p=sorted(set().union(*near.values())),
            )
            for event in self._events_of(self._query(expr, _EVENT_FIELDS, MAX_LIMIT)):
                if event.position in near.get(event.session, ()) and passes(event, filters):
                    found[event.seq] = event
        return list(found.values())

    def event(self, namespace: str, event_id: str) -> Event | None:
        found = self.events(namespace, [event_id])
        return found[0] if found else None

    def latest_session(self, namespace: str) -> str | None:
        noted = self._meta_get(f"latest:{namespace}")
        if noted is not None:
            session = json.loads(noted)["session"]
            if self._count(_Expr.of(namespace, Filters(session=session))):
                return str(session)
        # The noted session was forgotten: the session of the newest event left.
        rows = list(self._iterate(_Expr.of(namespace), ["seq", "session"]))
        return str(max(rows, key=lambda r: int(r["seq"]))["session"]) if rows else None

    def context(
        self, namespace: str, session: str, up_to_position: int | None, limit: int
    ) -> tuple[Ids, Vectors]:
        expr = _Expr.of(namespace, Filters(session=session))
        if up_to_position is not None:
            expr.add("position <= {p}", p=up_to_position)
        rows = self._query_all(expr, ["seq", "position"])
        chosen = sorted(rows, key=lambda r: int(r["position"]))[-limit:] if limit > 0 else []
        if not chosen:
            return np.zeros(0, np.int64), np.zeros((0, self.dim), np.float32)
        found = self.events_at(namespace, [int(r["seq"]) for r in chosen])
        seqs = [int(r["seq"]) for r in chosen if int(r["seq"]) in found]
        return np.array(seqs, dtype=np.int64), np.stack([found[s][1] for s in seqs])

    def next_vector(self, namespace: str, event: Event) -> Vectors | None:
        expr = _Expr.of(namespace, Filters(session=event.session)).add(
            "position == {p}", p=event.position + 1
        )
        rows = self._query(expr, ["vector"], limit=1)
        return self._vectors(rows)[0] if rows else None

    def sessions(self, namespace: str) -> list[tuple[str, Ids, Vectors]]:
        grouped: dict[str, list[tuple[int, int, list[float]]]] = {}
        for r in self._iterate(_Expr.of(namespace), ["seq", "session", "position", "vector"]):
            grouped.setdefault(r["session"], []).append((int(r["position"]), int(r["seq"]), r["vector"]))
        out = []
        for session in sorted(grouped):
            rows = sorted(grouped[session])
            out.append(
                (
                    session,
                    np.array([s for _, s, _ in rows], np.int64),
                    np.asarray([v for _, _, v in rows], np.float32),
                )
            )
        return out

    def session_list(self, namespace: str) -> list[SessionInfo]:
        grouped: dict[str, list[tuple[int, str]]] = {}
        for r in self._iterate(_Expr.of(namespace), ["seq", "session", "timestamp"]):
            grouped.setdefault(r["session"], []).append((int(r["seq"]), str(r["timestamp"])))
        infos = [
            SessionInfo(
                session,
                len(rows),
                min(t for _, t in rows),
                max(t for _, t in rows),
                max(s for s, _ in rows),
            )
            for session, rows in grouped.items()
        ]
        return sorted(infos, key=lambda info: -info.last_seq)

    def session_events(self, namespace: str, session: str, start: int, limit: int) -> list[Event]:
        rows = self._query_all(_Expr.of(namespace, Filters(session=session)), ["seq", "position"])
        chosen = sorted(rows, key=lambda r: int(r["position"]))[start : start + limit]
        found = self.events_at(namespace, [int(r["seq"]) for r in chosen])
        return [found[int(r["seq"])][0] for r in chosen if int(r["seq"]) in found]

    def daily_counts(self, namespace: str) -> list[tuple[str, int]]:
        days = Counter(str(r["timestamp"])[:10] for r in self._iterate(_Expr.of(namespace), ["timestamp"]))
        return sorted(days.items())

    def recent(self, namespace: str, limit: int) -> list[Event]:
        seqs = sorted((int(r["seq"]) for r in self._iterate(_Expr.of(namespace), ["seq"])), reverse=True)
        found = self.events_at(namespace, seqs[:limit])
        return [found[s][0] for s in seqs[:limit] if s in found]

    def export_batches(
        self, namespace: str | None, batch: int = 1000
    ) -> Iterator[tuple[list[Event], Vectors]]:
        """Every event (of one namespace, or all) with its vector, oldest first, `batch` at a time.

        Rows are read with an iterator, sorted by seq (the time they were stored) in memory:
        an export of tens of millions of rows belongs to Milvus's own backup tools.
        """
        expr = _Expr.of(namespace) if namespace is not None else _Expr().add("seq >= 0")
        rows = sorted(self._iterate(expr, [*_EVENT_FIELDS, "vector"]), key=lambda r: int(r["seq"]))
        for start in range(0, len(rows), batch):
            part = rows[start : start + batch]
            yield self._events_of(part), self._vectors(part)

    def holders(
        self, ids: Sequence[str], places: Sequence[tuple[str, str, int]]
    ) -> tuple[set[str], dict[tuple[str, str, int], str]]:
        found: set[str] = set()
        for chunk in chunks(ids, 1000):
            rows = self._client.query(
                self.events_name,
                filter=f"id_h in {_lit([_hash(i) for i in chunk])}",
                output_fields=["id"],
                limit=MAX_LIMIT,
                consistency_level="Strong",
            )
            found.update(r["id"] for r in rows)
        taken: dict[tuple[str, str, int], str] = {}
        by_session: dict[tuple[str, str], set[int]] = {}
        for namespace, session, position in places:
            by_session.setdefault((namespace, session), set()).add(position)
        for (namespace, session), positions in by_session.items():
            rows = self._query(
                _Expr.of(namespace, Filters(session=session)).add("position in {p}", p=sorted(positions)),
                ["id", "position"],
                MAX_LIMIT,
            )
            taken.update({(namespace, session, int(r["position"])): r["id"] for r in rows})
        return found, taken

    def count(self, namespace: str | None = None) -> int:
        return self._count(_Expr.of(namespace)) if namespace is not None else self.total()

    def total(self) -> int:
        return self._count(_Expr().add("seq >= 0"))

    def namespaces(self) -> list[str]:
        rows = self._client.query(
            self.meta_name,
            filter='kind == "latest"',
            output_fields=["namespace"],
            limit=MAX_LIMIT,
            consistency_level="Strong",
        )
        return sorted(ns for ns in {r["namespace"] for r in rows} if self.count(ns))

    # -- the index: calibration and health ------------------------------------------------------

    def _maybe_calibrate(self) -> None:
        """Measure recall and tune nprobe when the store has grown enough, in whichever replica gets there."""
        if time.monotonic() - self._calibrated_at < 5.0:
            return
        self._calibrated_at = time.monotonic()
        at = int(self._calibration.get("at_count", 0))
        total = self.total()
        if total < CALIBRATE_FROM or (at and total < at * RECALIBRATE_GROWTH):
            return
        shared = self._meta_get("calibration")  # another replica may have done it
        if shared is not None:
            self._calibration = json.loads(shared)
            at = int(self._calibration.get("at_count", 0))
            if at and total < at * RECALIBRATE_GROWTH:
                return
        if self._calibrating.acquire(blocking=False):
            threading.Thread(target=self._calibrate, name="emx-milvus-calibrate", daemon=True).start()

    def _calibrate(self) -> None:
        try:
            self.calibrate()
        except Exception:
            log.exception("Milvus nprobe calibration failed")
        finally:
            self._calibrating.release()

    def calibrate(self) -> dict[str, Any]:
        """Recall@10 for each nprobe on 100 stored vectors drawn from the whole collection, against exact.

        The exact answers are computed here, from every stored vector (one pass with an
        iterator), never taken from Milvus itself: a search with nprobe = nlist is not exact
        where segments are searched through another index (Milvus Lite searches its growing
        segments with an interim index and ignores nprobe). The smallest nprobe (from nlist/64,
        doubling) that reaches EMX_TARGET_RECALL is kept for every replica; if none does, nlist
        is kept with the recall it measured, and index_health warns.
        """
        nlist = self.settings.milvus_nlist
        total = self.total()
        probes = self._sample_vectors(PROBES)
        exact = self._exact_top(probes, 10)

        def recall_at(nprobe: int) -> float:
            found = self._client.search(
                self.events_name,
                data=probes.tolist(),
                anns_field="vector",
                limit=10,
                search_params={"metric_type": "IP", "params": {"nprobe": nprobe}},
                consistency_level="Strong",
            )
            got = [{int(h["id"]) for h in hits} for hits in found]
            return float(np.mean([len(a & b) / max(1, len(b)) for a, b in zip(got, exact, strict=True)]))

        target = self.policy.calibration_target(len(probes))
        nprobe = max(1, int(nlist * MIN_NPROBE_SHARE))
        while True:
            recall = recall_at(nprobe)
            if recall >= target or nprobe >= nlist:
                break
            nprobe = min(nlist, nprobe * 2)
        self._calibration = {
            "nprobe": nprobe,
            "measured_recall_at_10": round(recall, 4),
            "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "at_count": total,
            "probes": len(probes),
        }
        self._meta_put("calibration", "config", "", json.dumps(self._calibration))
        log.info("Milvus nprobe calibrated", **self._calibration)
        return self._calibration

    def _sample_vectors(self, count: int) -> Vectors:
        """`count` stored vectors drawn uniformly from the whole collection (one pass, reservoir sampling)."""
        rng = random.Random()
        sample: list[list[float]] = []
        for seen, row in enumerate(self._iterate(_Expr().add("seq >= 0"), ["vector"], batch=4_000)):
            if seen < count:
                sample.append(row["vector"])
            elif (slot := rng.randrange(seen + 1)) < count:
                sample[slot] = row["vector"]
        return np.asarray(sample, dtype=np.float32).reshape(-1, self.dim)

    def _exact_top(self, probes: Vectors, k: int) -> list[set[int]]:
        """The k stored rows nearest each probe by inner product, from a scan of every vector."""
        best_scores = np.full((len(probes), k), -np.inf, dtype=np.float32)
        best_ids = np.full((len(probes), k), -1, dtype=np.int64)
        batch: list[dict[str, Any]] = []

        def merge(rows: list[dict[str, Any]]) -> None:
            nonlocal best_scores, best_ids
            seqs = np.array([int(r["seq"]) for r in rows], dtype=np.int64)
            scores, ids = exact_top(probes, seqs, self._vectors(rows), k)
            all_scores = np.concatenate([best_scores, scores], axis=1)
            all_ids = np.concatenate([best_ids, ids], axis=1)
            order = np.argsort(-all_scores, axis=1, kind="stable")[:, :k]
            best_scores = np.take_along_axis(all_scores, order, axis=1)
            best_ids = np.take_along_axis(all_ids, order, axis=1)

        for row in self._iterate(_Expr().add("seq >= 0"), ["seq", "vector"], batch=4_000):
            batch.append(row)
            if len(batch) == 4_000:
                merge(batch)
                batch = []
        if batch:
            merge(batch)
        return [{int(i) for i in row if i >= 0} for row in best_ids]

    def stats(self, namespace: str) -> StoreStats:
        shared = self._meta_get("calibration")
        if shared is not None:
            self._calibration = json.loads(shared)
        events = self.count(namespace)
        calibrated = bool(self._calibration)
        kind = "IVF_SQ8" if self.policy.kind == "ivf_sq8" else "IVF_FLAT"
        state = IndexState(
            nprobe=self.nprobe,
            measured_recall_at_10=self._calibration.get("measured_recall_at_10"),
            recall_measured_at=self._calibration.get("measured_at"),
            recall_probes=int(self._calibration.get("probes", 0)),
            n_at_training=int(self._calibration.get("at_count", 0)),
        )
        index = IndexStats(
            trained=calibrated,
            index_type=f"Milvus {kind} (nlist {self.settings.milvus_nlist}, collection {self.events_name})",
            vectors=events,
            buffered=0,
            nlist=self.settings.milvus_nlist,
            nprobe=self.nprobe,
            list_sizes=None,
            imbalance=0.0,
            state=state,
            retraining=self._calibrating.locked(),
            batch_kernels="not used (Milvus searches)",
            bytes_in_memory=0,
            batch_searches=0,
            training_queued=False,
            training_retry_in=None,
        )
        return StoreStats(
            namespace=namespace,
            index=index,
            events_in_log=events,
            events_in_store=self.total(),
            event_log_bytes=0,
            snapshot_bytes=0,
            integrity="ok",
            snapshot_error=None,
            trainings_queued=0,
            store="milvus",
        )

    # -- shared files ---------------------------------------------------------------------------

    def note_forget(self, note: ForgetNote) -> None:
        key = f"audit:{note.at}:{uuid.uuid4().hex}"
        self._meta_put(key, "audit", note.namespace, json.dumps(dataclasses.asdict(note)))

    def forget_notes(self, namespace: str | None, limit: int) -> list[ForgetNote]:
        expr = "kind == 'audit'" + ("" if namespace is None else f" and namespace == {_lit(namespace)}")
        rows = self._client.query(
            self.meta_name,
            filter=expr,
            output_fields=["key", "value"],
            consistency_level="Strong",
            limit=16_384,
        )
        rows.sort(key=lambda r: str(r["key"]), reverse=True)
        return [ForgetNote(**json.loads(r["value"])) for r in rows[:limit]]

    def publish(self, name: str, data: bytes) -> None:
        """Store a file (a predictor checkpoint) for every replica, in pieces, then its index row."""
        encoded = base64.b64encode(data).decode()
        pieces = [encoded[i : i + TEXT_BYTES] for i in range(0, len(encoded), TEXT_BYTES)] or [""]
        version = uuid.uuid4().hex
        self._meta_put_many([(f"file:{name}:{version}:{i}", "file", "", p) for i, p in enumerate(pieces)])
        digest = hashlib.sha256(data).hexdigest()
        self._meta_put(
            f"file:{name}",
            "file",
            "",
            json.dumps({"version": version, "pieces": len(pieces), "sha256": digest}),
        )

    def fetch(self, name: str, have: str | None) -> bytes | None:
        head = self._meta_get(f"file:{name}")
        if head is None:
            return None
        info = json.loads(head)
        if info["sha256"] == have:
            return None
        keys = [f"file:{name}:{info['version']}:{i}" for i in range(info["pieces"])]
        found = self._meta_keys("file", keys)
        return base64.b64decode("".join(found[k] for k in keys))


def _receipt_json(receipt: Receipt, ids: list[str]) -> str:
    return json.dumps({"digest": receipt.digest, "detail": receipt.detail, "ids": ids})
