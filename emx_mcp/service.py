"""The memory use cases: remember, recall, forget, predict the next memory, report health.

Each use case takes a checked request (schemas.py), does its work through the store, the
encoder and the retrieval, prediction and health modules, and returns plain results. Storage
details (the event log, the index replica, snapshots) stay behind the store.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import itertools
import json
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import structlog

from emx_mcp import dialogue, health, prediction, questions, retrieval, segmentation, sentences
from emx_mcp.access import TokenBook, current_grant, file_book, shared_book
from emx_mcp.coalescing import report_progress
from emx_mcp.config import Settings
from emx_mcp.embedding import Encoder, Vectors, describe, normalize
from emx_mcp.errors import InvalidInput, NotFound, StoreMismatch
from emx_mcp.files import atomic_writer
from emx_mcp.lvm.predictor import Predictors
from emx_mcp.prediction import Prediction
from emx_mcp.retrieval import Recalled
from emx_mcp.schemas import (
    EPISODES_PAGE,
    RECENT_EPISODES,
    RELATED_SHOWN,
    SESSIONS_PAGE,
    BrowsedEpisode,
    EncoderStatus,
    EpisodeList,
    ForgetRequest,
    HealthReport,
    HealthRequest,
    NamespaceInfo,
    NamespaceList,
    PredictNextRequest,
    RecallBatchRequest,
    RecallOptions,
    RecallRequest,
    RememberRequest,
    SessionPage,
    SessionSummary,
    SupersedeRequest,
    now,
)
from emx_mcp.storage.records import Event, NewEvent, Receipt
from emx_mcp.storage.store import FORGET_NOTE_IDS, ForgetNote, Store

if TYPE_CHECKING:  # importing the trainer imports torch
    from emx_mcp.lvm.train import Outcome, TrainConfig

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Episode:
    event: Event
    surprise: float | None  # surprise of the sentence that opened it; None for the first of a call
    sentences: int
    duplicate_of: tuple[str, float] | None = None  # (id, cosine) of an earlier episode it repeats


@dataclass(frozen=True, slots=True)
class Remembered:
    """What one `remember` stored, what it superseded, and earlier episodes on the same subject."""

    episodes: list[Episode]
    supersedes: list[str]
    related: list[tuple[Event, float]]


# A remember of more sentences than this reports progress as it embeds them, this many at a time.
PROGRESS_SENTENCES = 128


@dataclass(frozen=True, slots=True)
class HealthView:
    report: HealthReport
    list_sizes: list[int] | None  # vectors per inverted list (embedded IVF only)
    history: list[Reading]  # earlier readings of this namespace, oldest first
    daily: list[tuple[str, int]]  # (YYYY-MM-DD, episodes stored with that day's timestamp)


class Reading(NamedTuple):
    at: str
    vectors: int
    recall: float | None


class HealthHistory:
    """Health readings over time, one JSON line per change, per namespace, beside the store's files.

    A reading is kept when the vector count or the recall measurement changed since the last one;
    the newest HISTORY_KEPT are read back for the browser's plots.
    """

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        self._lock = threading.Lock()
        self._last: dict[str, Reading] = {}

    def _path(self, namespace: str) -> Path:
        return self._folder / f"{namespace}.jsonl"

    def record(self, report: HealthReport) -> list[Reading]:
        reading = Reading(now(), report.vectors, report.measured_recall_at_10)
        with self._lock:
            readings = self._read(report.namespace)
            last = readings[-1] if readings else None
            if last is None or (last.vectors, last.recall) != (reading.vectors, reading.recall):
                try:
                    self._folder.mkdir(parents=True, exist_ok=True)
                    readings.append(reading)
                    if len(readings) >= HISTORY_KEPT:  # keep the file short: rewrite the newest
                        readings = readings[-HISTORY_KEPT // 2 :]
                        with atomic_writer(self._path(report.namespace)) as out:
                            out.write("".join(json.dumps(r._asdict()) + "\n" for r in readings).encode())
                    else:
                        with self._path(report.namespace).open("a", encoding="utf-8") as out:
                            out.write(json.dumps(reading._asdict()) + "\n")
                except OSError as exc:  # a read-only data directory: the plots just lack the point
                    log.warning("health reading not kept", problem=str(exc))
        return readings[-HISTORY_KEPT:]

    def _read(self, namespace: str) -> list[Reading]:
        try:
            lines = self._path(namespace).read_text(encoding="utf-8").splitlines()
        except OSError:
            return []
        readings = []
        for line in lines[-HISTORY_KEPT:]:
            try:
                readings.append(Reading(**json.loads(line)))
            except (ValueError, TypeError):
                continue  # a line cut by a crash
        return readings


HISTORY_KEPT = 500


def _steps(sentence_count: int) -> int:
    """Progress steps of a long remember: one per PROGRESS_SENTENCES embedded, and storing."""
    return -(-sentence_count // PROGRESS_SENTENCES) + 1


def _cursor(cursor: str | None) -> int:
    if cursor is None or cursor == "":
        return 0
    if not cursor.isdigit():
        raise InvalidInput(f"cursor {cursor[:40]!r} is not one this server gave; start without a cursor.")
    return int(cursor)


def _browsed(
    event: Event, links: Sequence[tuple[str, str]] = (), surprise: float | None = None
) -> BrowsedEpisode:
    """An episode as browsing shows it, with its supersession links among `links` (old, new)."""
    newer = [new for old, new in links if old == event.id]
    return BrowsedEpisode(
        id=event.id,
        session=event.session,
        position=event.position,
        timestamp=event.timestamp,
        text=event.text,
        metadata=event.metadata,
        surprise=surprise,
        superseded_by=newer[-1] if newer else None,
        supersedes=[old for old, new in links if new == event.id],
    )


def _related(met: list[retrieval.Before], exclude: set[str]) -> list[tuple[Event, float]]:
    """The earlier episodes most like any of the new ones (best first, each once), up to RELATED_SHOWN."""
    best: dict[str, tuple[Event, float]] = {}
    for before in met:
        for event, similarity in before.related:
            if event.id not in exclude and similarity > best.get(event.id, (event, -1.0))[1]:
                best[event.id] = (event, similarity)
    return sorted(best.values(), key=lambda p: -p[1])[:RELATED_SHOWN]


def _checkpoint_name(namespace: str) -> str:
    return f"lvm/{namespace}"


class MemoryService:
    """Durable episodic memory over one store and one encoder."""

    def __init__(self, settings: Settings, encoder: Encoder, store: Store) -> None:
        self.settings = settings
        self.encoder = encoder
        self._store = store
        self.segmentation = settings.segmentation_config()
        self._predictors: Predictors | None = None
        self._open_lock = threading.Lock()
        self._digests: dict[str, tuple[float, str]] = {}  # namespace -> (mtime, sha256) of its checkpoint
        self._health_history = HealthHistory(settings.data_dir / "health")

    # -- lifecycle ----------------------------------------------------------------------------

    def open(self) -> None:
        """Open the store (loading or rebuilding its indexes). Idempotent."""
        with self._open_lock:
            if self._predictors is not None:
                return
            self._store.open(self.encoder.model_id, lambda: self.encoder.dim)
            self._predictors = Predictors(self.settings.data_dir, self.encoder.model_id, self._store.dim)

    def warm_up(self) -> None:
        """Open the store and load the encoder, so the first tool call is fast."""
        self.open()
        self._encode(["warm-up"])

    def wait_for_integrity_check(self, timeout: float | None = None) -> str:
        """The event log's integrity check verdict, once it is done (or `timeout` seconds have passed)."""
        self.open()
        return self._store.wait_for_integrity_check(timeout)

    def close(self) -> None:
        """Write final snapshots and close the store."""
        with self._open_lock:
            if self._predictors is None:
                return
            self._store.close()
            self._predictors = None

    @property
    def dim(self) -> int:
        """Dimension of the stored vectors (the store's, which the encoder must match)."""
        self.open()
        return self._store.dim

    @property
    def model_id(self) -> str:
        return self.encoder.model_id

    def _predictor_files(self) -> Predictors:
        self.open()
        assert self._predictors is not None
        return self._predictors

    # -- use cases ----------------------------------------------------------------------------

    def remember(self, request: RememberRequest) -> Remembered:
        """`store`, with what the call superseded and up to RELATED_SHOWN earlier episodes on its subject."""
        episodes, related = self._store_text(request)
        return Remembered(episodes, list(dict.fromkeys(request.supersedes or [])), related)

    def _store_text(self, request: RememberRequest) -> tuple[list[Episode], list[tuple[Event, float]]]:
        """Cut the text into episodes; store them at the end of the session (new if none), in one transaction.

        Each episode is an exact slice of the text (whitespace between episodes aside); its vector
        is the normalised mean of its sentences' vectors. Returns the episodes once committed. A
        repeat of a call with the same idempotency key stores nothing and returns the first
        call's episodes (those not forgotten since).
        """
        self.open()
        receipt = None
        if request.idempotency_key is not None:
            # An absent `supersedes` is left out, so keys given before the argument existed still match.
            leave_out = {"idempotency_key"} | ({"supersedes"} if not request.supersedes else set())
            digest = hashlib.sha256(request.model_dump_json(exclude=leave_out).encode()).hexdigest()
            earlier = self._store.receipt(request.namespace, request.idempotency_key)
            if earlier is not None:  # a retry: nothing to encode
                receipt = Receipt(request.idempotency_key, digest, "")
                return self._episodes_of(request.namespace, receipt, earlier), []
        text = request.text
        spans = sentences.split_spans(text)
        sentence_vectors = self._encode_reporting([text[a:b] for a, b in spans])
        rules = dialogue.constraints(text, spans, self.segmentation.max_sentences)
        segments = segmentation.segment(sentence_vectors, self.segmentation, rules)
        timestamp = request.timestamp or now()
        metadata = request.metadata or {}
        items = [
            NewEvent(text[spans[s.first][0] : spans[s.stop - 1][1]], timestamp, metadata) for s in segments
        ]
        shapes = [(s.stop - s.first, None if s.first == 0 else round(s.surprise, 6)) for s in segments]
        if request.idempotency_key is not None:
            receipt = Receipt(request.idempotency_key, digest, json.dumps(shapes))
        vectors = segmentation.episode_vectors(sentence_vectors, segments)
        session = request.session or uuid.uuid4().hex
        supersedes = list(dict.fromkeys(request.supersedes or []))
        met = retrieval.before_storing(self._store, request.namespace, [i.text for i in items], vectors)
        steps = _steps(len(spans)) if len(spans) > PROGRESS_SENTENCES else 0
        if steps:
            report_progress(steps - 1, steps, f"storing {len(items):,} episodes")
        events, earlier = self._store.append(request.namespace, session, items, vectors, receipt, supersedes)
        if steps:
            report_progress(steps, steps, f"stored {len(events):,} episodes")
        if earlier is not None and receipt is not None:  # the same key won a race inside the store
            return self._episodes_of(request.namespace, receipt, earlier), []
        episodes = [
            Episode(e, surprise, size, m.duplicate)
            for e, (size, surprise), m in zip(events, shapes, met, strict=True)
        ]
        candidates = {e.id for before in met for e, _ in before.related}
        superseded = (
            {old for old, _ in self._store.links(request.namespace, sorted(candidates))}
            if candidates
            else set()
        )
        return episodes, _related(met, {*supersedes, *superseded, *(e.id for e in events)})

    def _episodes_of(self, namespace: str, receipt: Receipt, earlier: Receipt) -> list[Episode]:
        """The episodes an earlier call with this idempotency key stored (those not forgotten)."""
        if receipt.digest != earlier.digest:
            raise InvalidInput(
                f"idempotency_key {receipt.key[:80]!r} was used before for a different call; a repeated "
                "call must send the same arguments, and a new call needs a new key."
            )
        shapes = dict(zip(earlier.ids, json.loads(earlier.detail), strict=True))
        return [
            Episode(e, shapes[e.id][1], shapes[e.id][0]) for e in self._store.events(namespace, earlier.ids)
        ]

    def recall(self, request: RecallRequest) -> Recalled:
        """The episodes that best match the query, and their neighbours in time, within the reading budget."""
        return self._recall([request.query], request, request.budget(1))[0]

    def recall_batch(self, request: RecallBatchRequest) -> list[Recalled]:
        """`recall` for up to 256 queries with one encoder batch and one index search."""
        return self._recall(request.queries, request, request.budget(len(request.queries)))

    def _recall(self, queries: list[str], options: RecallOptions, budget: int) -> list[Recalled]:
        self.open()
        readings = [questions.read(q, options.moment) for q in queries]
        searched = [r.text for r in readings if not r.listing]
        vectors = self._encode(searched) if searched else np.zeros((0, self.dim), np.float32)
        rows = iter(range(len(searched)))
        full = np.zeros((len(readings), self.dim), np.float32)
        for i, reading in enumerate(readings):
            if not reading.listing:
                full[i] = vectors[next(rows)]
        found = retrieval.recall(self._store, readings, full, options, budget)
        if any(not f.hits for f in found) and self._store.count(options.namespace) == 0:
            note = self._no_such_namespace(options.namespace)
            found = [f if f.hits else dataclasses.replace(f, note=note) for f in found]
        return found

    def _no_such_namespace(self, namespace: str) -> str:
        """An empty namespace named, with the likeliest intended ones among those the caller may read."""
        visible = current_grant.get().visible(sorted(self._store.namespaces()))
        alike = difflib.get_close_matches(namespace, visible, n=3, cutoff=0.5) or visible[:5]
        hint = f" Namespaces with memories: {', '.join(repr(n) for n in alike)}." if alike else ""
        return f"Namespace {namespace!r} holds no memories.{hint}"

    def supersede(self, request: SupersedeRequest) -> tuple[list[str], list[str]]:
        """Mark the episodes `ids` as superseded by `by`: (ids linked now, ids linked before)."""
        self.open()
        ids = list(dict.fromkeys(request.ids))
        linked = self._store.supersede(request.namespace, request.by, ids)
        return linked, [i for i in ids if i not in linked]

    def forget(self, request: ForgetRequest) -> list[str]:
        """Remove events (by id, or a whole session) from the log and the index; return their ids.

        The store keeps a note of who forgot what (the caller's token name, ids and count).
        """
        self.open()
        ids = None if request.ids is None else list(dict.fromkeys(request.ids))
        removed = self._store.forget(request.namespace, ids, request.session)
        who = current_grant.get().name
        self._store.note_forget(
            ForgetNote(now(), request.namespace, who, len(removed), removed[:FORGET_NOTE_IDS])
        )
        return removed

    def forget_notes(self, namespace: str | None = None, limit: int = 100) -> list[ForgetNote]:
        """The latest forgets (of one namespace, or all), newest first."""
        self.open()
        return self._store.forget_notes(namespace, limit)

    @functools.cached_property
    def tokens(self) -> TokenBook:
        """The scoped tokens, beside the store: a file in the data directory, or shared through Milvus."""
        if self.settings.store == "milvus":
            self.open()
            return shared_book(self._store.publish, self._store.fetch)
        return file_book(self.settings.data_dir / "tokens.json")

    def predict_next(self, request: PredictNextRequest) -> Prediction:
        """The stored episodes most likely needed next, after a session's latest (or a given) episode."""
        self._fetch_checkpoint(request.namespace)
        checkpoint = self._predictor_files().get(request.namespace)
        return prediction.predict_next(self._store, checkpoint, request)

    def health(self, request: HealthRequest) -> HealthReport:
        """The index's own report plus capacity, disk use and a one-word status with reasons."""
        return self.health_view(request.namespace, history=False).report

    def health_view(self, namespace: str, history: bool = True) -> HealthView:
        """`health`, with what its plots need: the inverted lists' sizes, past readings, episodes per day."""
        self.open()
        limits = health.Limits(max_events=self.settings.max_events, policy=self._store.policy)
        stats = self._store.stats(namespace)
        report = health.report(stats, limits)
        info = describe(self.encoder)
        encoder = EncoderStatus(
            backend=info.backend, ready=info.ready, batches=info.batches, mean_batch=info.mean_batch
        )
        report = report.model_copy(update={"encoder": encoder})
        readings = self._health_history.record(report)
        if not history:
            return HealthView(report, None, [], [])
        sizes = None if stats.index.list_sizes is None else [int(n) for n in stats.index.list_sizes]
        return HealthView(report, sizes, readings, self._store.daily_counts(namespace))

    def train_predictor(
        self, namespace: str, config: TrainConfig, progress: Callable[[str], None] | None = None
    ) -> tuple[Outcome, Path]:
        """Train the namespace's next-episode predictor from its sessions and save the checkpoint."""
        from emx_mcp.lvm import train
        from emx_mcp.lvm.data import Session

        self.open()
        sessions = [Session(name, seqs, vectors) for name, seqs, vectors in self._store.sessions(namespace)]
        model, outcome = train.train(sessions, config, progress)
        path = self._predictor_files().path(namespace)
        train.save(path, model, outcome, self.model_id, config)
        self._store.publish(_checkpoint_name(namespace), path.read_bytes())
        return outcome, path

    def _fetch_checkpoint(self, namespace: str) -> None:
        """Bring the namespace's checkpoint another replica published, if it differs from the local file."""
        path = self._predictor_files().path(namespace)
        have = None
        if path.exists():
            mtime = path.stat().st_mtime
            known = self._digests.get(namespace)
            if known is None or known[0] != mtime:  # hash the file only when it changed
                known = (mtime, hashlib.sha256(path.read_bytes()).hexdigest())
                self._digests[namespace] = known
            have = known[1]
        data = self._store.fetch(_checkpoint_name(namespace), have)
        if data is not None:
            with atomic_writer(path) as out:
                out.write(data)

    # -- browsing (resources, prompts, the memory browser) -------------------------------------

    def namespaces(self) -> NamespaceList:
        """Every namespace with its event count."""
        self.open()
        names = sorted(self._store.namespaces())
        return NamespaceList(
            namespaces=[NamespaceInfo(namespace=n, events=self._store.count(n)) for n in names]
        )

    def session_page(
        self, namespace: str, cursor: str | None = None, limit: int = SESSIONS_PAGE
    ) -> SessionPage:
        """One page of the namespace's sessions, newest first; `cursor` is the previous page's next_cursor."""
        self.open()
        start = _cursor(cursor)
        infos = self._store.session_list(namespace)
        page = infos[start : start + limit]
        return SessionPage(
            namespace=namespace,
            sessions=[
                SessionSummary(session=i.session, episodes=i.episodes, first=i.first, last=i.last)
                for i in page
            ],
            total=len(infos),
            next_cursor=str(start + limit) if start + limit < len(infos) else None,
        )

    def session_episodes(
        self, namespace: str, session: str, start: int = 0, limit: int = EPISODES_PAGE, surprise: bool = False
    ) -> EpisodeList:
        """A session's episodes in order from the `start`-th; with `surprise`, each boundary's score."""
        self.open()
        total = next((i.episodes for i in self._store.session_list(namespace) if i.session == session), 0)
        if total == 0:
            raise NotFound(f"namespace {namespace!r} has no session {session[:80]!r}.")
        before = 1 if surprise and start > 0 else 0
        events = self._store.session_events(namespace, session, start - before, limit + before)
        scores = self._boundary_surprise(events) if surprise else [None] * len(events)
        if before:
            events, scores = events[1:], scores[1:]
        elif surprise and events:
            scores[0] = None
        end = start + len(events)
        links = self._store.links(namespace, [e.id for e in events]) if events else []
        return EpisodeList(
            namespace=namespace,
            session=session,
            episodes=[_browsed(e, links, s) for e, s in zip(events, scores, strict=True)],
            total=total,
            next_start=end if end < total else None,
        )

    def recent(self, namespace: str, limit: int = RECENT_EPISODES) -> EpisodeList:
        """The namespace's latest episodes, newest first."""
        self.open()
        events = self._store.recent(namespace, limit)
        links = self._store.links(namespace, [e.id for e in events]) if events else []
        return EpisodeList(namespace=namespace, episodes=[_browsed(e, links) for e in events])

    def _boundary_surprise(self, events: list[Event]) -> list[float | None]:
        """Per episode after the first: 1 - cos(its first sentence, the mean of the previous one's last)."""
        context = self.segmentation.context
        texts: list[str] = []
        shapes: list[tuple[int, int]] = []
        for previous, current in itertools.pairwise(events):
            if current.position != previous.position + 1:
                shapes.append((0, 0))
                continue
            before = [previous.text[a:b] for a, b in sentences.split_spans(previous.text)][-context:]
            first = [current.text[a:b] for a, b in sentences.split_spans(current.text)][:1]
            texts += before + first
            shapes.append((len(before), len(first)))
        vectors = self._encode(texts) if texts else np.zeros((0, self.dim), np.float32)
        scores: list[float | None] = [None]
        at = 0
        for n_before, n_first in shapes:
            if n_before == 0 or n_first == 0:
                scores.append(None)
            else:
                predicted = normalize(vectors[at : at + n_before].mean(axis=0, keepdims=True))[0]
                scores.append(round(float(1.0 - vectors[at + n_before] @ predicted), 4))
            at += n_before + n_first
        return scores

    # -- moving memories in and out (export / import) -----------------------------------------

    def count(self, namespace: str | None = None) -> int:
        """Events stored (of one namespace, or all)."""
        self.open()
        return self._store.count(namespace)

    def export_events(self, namespace: str | None) -> Iterator[tuple[list[Event], Vectors]]:
        """Every event (of one namespace, or all) with its vector, in the order stored, in batches."""
        self.open()
        return self._store.export_batches(namespace)

    def existing(
        self, ids: Sequence[str], places: Sequence[tuple[str, str, int]]
    ) -> tuple[set[str], dict[tuple[str, str, int], str]]:
        """Which of `ids` are stored, and the id holding each taken (namespace, session, position)."""
        self.open()
        return self._store.holders(ids, places)

    def forgotten(self, ids: Sequence[str]) -> set[str]:
        """Which of `ids` were forgotten in this store: an import does not bring them back."""
        self.open()
        return self._store.forgotten_ids(ids)

    def import_events(
        self, events: list[Event], vectors: Vectors, links: Sequence[tuple[str, str]] = ()
    ) -> list[Event]:
        """Store events that keep their ids and places, with their (new, old) supersession links."""
        self.open()
        return self._store.insert(events, vectors, links)

    def links(self, namespace: str, ids: Sequence[str]) -> list[tuple[str, str]]:
        """(old, new) supersession links of `namespace` touching `ids`."""
        self.open()
        return self._store.links(namespace, ids)

    def embed_episodes(self, texts: list[str]) -> Vectors:
        """(len(texts), dim): each text's vector as one episode, the normalised mean of its sentences'."""
        self.open()
        spans = [sentences.split_spans(t) for t in texts]
        vectors = self._encode([t[a:b] for t, parts in zip(texts, spans, strict=True) for a, b in parts])
        starts = np.cumsum([0] + [len(parts) for parts in spans[:-1]])
        return normalize(np.add.reduceat(vectors, starts, axis=0))

    def snapshot(self) -> None:
        """Write the changed indexes' snapshots now (also written as the store grows, and on close)."""
        self.open()
        self._store.snapshot()

    # -- helpers ------------------------------------------------------------------------------

    def _encode_reporting(self, texts: list[str]) -> Vectors:
        """`_encode`, telling the caller before each PROGRESS_SENTENCES when there are more of them.

        The steps of a long remember: embedding, chunk by chunk, then storing (in `remember`).
        """
        if len(texts) <= PROGRESS_SENTENCES:
            return self._encode(texts)
        steps = _steps(len(texts))
        parts = []
        for step, start in enumerate(range(0, len(texts), PROGRESS_SENTENCES)):
            end = min(start + PROGRESS_SENTENCES, len(texts))
            report_progress(step, steps, f"embedding sentences {start + 1:,}-{end:,} of {len(texts):,}")
            parts.append(self._encode(texts[start:end]))
        return np.vstack(parts)

    def _encode(self, texts: list[str]) -> Vectors:
        vectors = self.encoder.encode(texts)
        if vectors.shape[1] != self._store.dim:
            raise StoreMismatch(
                f"the encoder gives {vectors.shape[1]}-d vectors but the store holds "
                f"{self._store.dim}-d ones; "
                "use the model the store was built with, or another EMX_DATA_DIR."
            )
        return vectors
