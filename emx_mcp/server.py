"""The MCP tools: validate, call one service method off the event loop, shape a typed result."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, Literal, TypeVar

import anyio.to_thread
from mcp.server import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import BaseModel, Field

from emx_mcp import __version__
from emx_mcp.errors import EmxError
from emx_mcp.service import Episode, Hit, MemoryService
from emx_mcp.transport import auth_options

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

INSTRUCTIONS = """\
Episodic memory that persists across conversations. Call `remember` with what happened
(decisions, facts learned, results, user preferences) as it happens; call `recall` with a
question or topic before answering anything that earlier work may have settled. Memories are
grouped into sessions: reuse the session id that `remember` returns to keep one task together.
"""


class StoredEvent(BaseModel):
    id: str = Field(description="Stable event id.")
    text: str
    session: str = Field(description="Session id; pass it to later `remember` calls of the same task.")
    position: int = Field(description="0-based place of the event in its session.")
    timestamp: str = Field(description="ISO 8601, UTC.")
    sentences: int = Field(description="Sentences in this episode.")
    surprise: float | None = Field(
        description="How surprising the episode's first sentence was after the previous one (the boundary "
        "score, 0 to 2); null for the first episode of a call."
    )


class RememberResult(BaseModel):
    events: list[StoredEvent] = Field(description="One item per episode, in order.")


class RecalledEvent(BaseModel):
    id: str
    text: str
    score: float = Field(description="Cosine similarity to the query, from -1 to 1; higher is closer.")
    session: str
    position: int
    timestamp: str
    metadata: dict[str, Any]
    via: Literal["similarity", "contiguity", "prediction"] = Field(
        description=(
            "'similarity': matched the query; 'contiguity': a temporal neighbour of a match; "
            "'prediction': close to the predicted next episode (predict_next)."
        )
    )
    neighbour_of: str | None = Field(
        default=None, description="For 'contiguity' results: the id of the matched episode it neighbours."
    )


class RecallResult(BaseModel):
    results: list[RecalledEvent]


class RecallBatchResult(BaseModel):
    results: list[list[RecalledEvent]] = Field(description="One list per query, in the order of the queries.")


class PredictorInfo(BaseModel):
    trained_at: str
    context: int = Field(description="Episodes of context the model reads.")
    method: str = Field(description="What validation chose: lvm, blend, analog or copy_last.")
    blend_weight: float | None
    metrics: dict[str, dict[str, float]] = Field(
        description="Validation Hit@1/5/10 and MRR against the whole memory, per method (and in-batch Hit@5)."
    )


class PredictNextResult(BaseModel):
    method: Literal["lvm", "blend", "analog", "copy_last"] = Field(
        description="How the next episode was predicted: the trained model, its blend with copy-last, "
        "'analog' (what followed the most similar past episode) or 'copy_last' (episodes like the latest)."
    )
    predictions: list[RecalledEvent]
    model: PredictorInfo | None = Field(
        description="The trained predictor's validation figures; null if none."
    )


class ForgetResult(BaseModel):
    removed: int = Field(description="How many events were deleted.")
    ids: list[str] = Field(description="The ids of the deleted events.")


class ListSizes(BaseModel):
    min: int
    mean: float
    max: int


class TrainingInfo(BaseModel):
    source: str = Field(description="Always 'stored vectors': IVF never trains on synthetic data.")
    size: int = Field(description="Vectors k-means was trained on (up to 256 per list).")
    seconds: float
    trained_at: str | None
    vectors_at_training: int
    trainings: int


class Capacity(BaseModel):
    events: int
    max_events: int
    used: float = Field(description="events / max_events; health warns from 0.8.")


class DiskUse(BaseModel):
    event_log: int
    index_snapshot: int


class IndexHealth(BaseModel):
    namespace: str
    status: Literal["ok", "warning", "degraded"]
    reasons: list[str]
    kind: Literal["flat", "ivf"] = Field(
        description="'flat' is exact search; 'ivf' once the namespace is large."
    )
    index_type: str
    vectors: int
    buffered: int = Field(description="Vectors in the exact training buffer (all of them until IVF trains).")
    events_in_log: int
    train_at: int
    nlist: int
    nprobe: int
    list_sizes: ListSizes | None
    imbalance: float = Field(description="FAISS imbalance factor of the inverted lists; 1 is perfectly even.")
    measured_recall_at_10: float | None = Field(
        description="Recall@10 against exact search, measured on stored vectors; 1.0 while flat."
    )
    recall_measured_at: str | None
    recall_probes: int
    target_recall: float
    tuned_for_recall: float | None = Field(
        description="Recall nprobe was tuned for: the target plus two standard errors of its measurement."
    )
    training: TrainingInfo | None
    last_training_error: str | None
    retraining: bool
    batch_kernels: str = Field(
        description="Compiled list-by-list search for batches of 32+ queries on a trained IVF-Flat "
        "index: 'ready', 'loading', 'not loaded' (loads on the first such batch), 'off' "
        "(EMX_INDEX_BATCH_KERNELS=false or ivf_sq8) or 'unavailable: <why>' (FAISS answers, slower)."
    )
    bytes_in_memory: int
    bytes_on_disk: DiskUse
    capacity: Capacity
    integrity: str = Field(
        description="SQLite quick_check of the event log, run in the background at start: 'ok', "
        "'checking', or 'failed: <problems>'."
    )


def _stored(episode: Episode) -> StoredEvent:
    e = episode.event
    return StoredEvent(
        id=e.id,
        text=e.text,
        session=e.session,
        position=e.position,
        timestamp=e.timestamp,
        sentences=episode.sentences,
        surprise=None if episode.surprise is None else round(episode.surprise, 4),
    )


def _recalled(hit: Hit) -> RecalledEvent:
    e = hit.event
    return RecalledEvent(
        id=e.id,
        text=e.text,
        score=hit.score,
        session=e.session,
        position=e.position,
        timestamp=e.timestamp,
        metadata=e.metadata,
        via=hit.via,
        neighbour_of=hit.neighbour_of,
    )


async def _run(fn: Callable[..., T], /, **kwargs: Any) -> T:
    """Run a service call in a worker thread; turn anticipated failures into tool errors."""
    try:
        return await anyio.to_thread.run_sync(functools.partial(fn, **kwargs))
    except EmxError as exc:
        raise ToolError(str(exc)) from None


def tool(server: MCPServer, *, title: str, annotations: ToolAnnotations) -> Callable[[F], F]:
    """Register a tool whose description is its docstring without the source indentation."""

    def register(fn: F) -> F:
        server.add_tool(
            fn, title=title, annotations=annotations, description=inspect.cleandoc(fn.__doc__ or "")
        )
        return fn

    return register


def build_server(service: MemoryService) -> MCPServer:
    """The composition root of the MCP layer: one server, its tools bound to `service`."""
    token_verifier, auth = auth_options(service.settings)
    server = MCPServer(
        name="emx-mcp",
        title="emx-mcp episodic memory",
        instructions=INSTRUCTIONS,
        version=__version__,
        log_level=service.settings.log_level,
        token_verifier=token_verifier,
        auth=auth,
    )

    @tool(
        server,
        title="Remember",
        annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False),
    )
    async def remember(
        text: str,
        session: str | None = None,
        metadata: dict[str, Any] | None = None,
        timestamp: str | None = None,
        namespace: str = "default",
    ) -> RememberResult:
        """Store something that happened so it can be recalled later, in this or a future conversation.

        Use it for decisions, facts learned, outcomes of actions, and user preferences. Long text is
        cut into episodes where the topic shifts; short text stays one episode. `session` groups
        the events of one task: omit it to start a new session, then pass the returned session id
        on later calls. `metadata` is an optional JSON object kept with every episode; `timestamp`
        is ISO 8601 (default: now, UTC). Returns one item per episode with its id, position and
        boundary surprise; the call returns only once everything is durably on disk.
        """
        events = await _run(
            service.remember,
            text=text,
            session=session,
            metadata=metadata,
            timestamp=timestamp,
            namespace=namespace,
        )
        return RememberResult(events=[_stored(e) for e in events])

    @tool(
        server,
        title="Recall",
        annotations=ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True),
    )
    async def recall(
        query: str,
        k: int = 5,
        session: str | None = None,
        namespace: str = "default",
        contiguity: int = 1,
        since: str | None = None,
        until: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> RecallResult:
        """Find the stored memories most similar in meaning to `query`, with what happened around them.

        Use it before answering questions that earlier work may have settled. Returns the `k`
        (1-100) most similar episodes, best first (`via: "similarity"`), then the episodes just
        before and after each of them in its session (`via: "contiguity"`, with `neighbour_of`
        naming the match; `contiguity` per side, 0-5, default 1; 0 turns it off), never the same
        episode twice. Optional filters: `session`,
        `since` / `until` (ISO 8601, inclusive) and `metadata` (exact match on top-level keys).
        A filter that matches nothing gives an empty list.
        """
        hits = await _run(
            service.recall,
            query=query,
            k=k,
            session=session,
            namespace=namespace,
            contiguity=contiguity,
            since=since,
            until=until,
            metadata=metadata,
        )
        return RecallResult(results=[_recalled(h) for h in hits])

    @tool(
        server,
        title="Recall many",
        annotations=ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True),
    )
    async def recall_batch(
        queries: list[str],
        k: int = 5,
        session: str | None = None,
        namespace: str = "default",
        contiguity: int = 1,
        since: str | None = None,
        until: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> RecallBatchResult:
        """Run several recalls at once (1-256 queries), faster than calling `recall` repeatedly.

        Use it when you have several questions or topics to look up together. Takes the same
        arguments as `recall` (with `queries` instead of `query`) and returns one list of results
        per query, in the order given, each exactly as `recall` would return it.
        """
        batches = await _run(
            service.recall_batch,
            queries=queries,
            k=k,
            session=session,
            namespace=namespace,
            contiguity=contiguity,
            since=since,
            until=until,
            metadata=metadata,
        )
        return RecallBatchResult(results=[[_recalled(h) for h in hits] for hits in batches])

    @tool(
        server,
        title="Predict next",
        annotations=ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True),
    )
    async def predict_next(
        session: str | None = None,
        after_event_id: str | None = None,
        k: int = 5,
        namespace: str = "default",
    ) -> PredictNextResult:
        """Surface the stored memories you will most likely need next in a task.

        Use it when moving to the next step of work that resembles earlier sessions ("after setting
        up the database came the migrations"). The context is the latest episodes of `session`
        (default: the namespace's most recent session), or those up to and including
        `after_event_id`. Returns `k` (1-100) episodes (`via: "prediction"`), never ones from the
        context, and `method`: the trained predictor only where it beat the baselines on held-out
        sessions, otherwise the best baseline; `model` gives its validation figures.
        """
        result = await _run(
            service.predict_next, session=session, after_event_id=after_event_id, k=k, namespace=namespace
        )
        info = None
        if result.checkpoint is not None:
            meta = result.checkpoint.meta
            info = PredictorInfo(
                trained_at=meta["trained_at"],
                context=meta["context"],
                method=meta["outcome"]["method"],
                blend_weight=meta["outcome"]["blend_weight"],
                metrics=meta["outcome"]["metrics"],
            )
        return PredictNextResult(
            method=result.method,  # type: ignore[arg-type]
            predictions=[_recalled(h) for h in result.hits],
            model=info,
        )

    @tool(
        server,
        title="Index health",
        annotations=ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True),
    )
    async def index_health(namespace: str = "default") -> IndexHealth:
        """Report how the memory index of a namespace is doing.

        Returns a one-word `status` (ok / warning / degraded) with `reasons`, the index kind (exact
        'flat' or trained 'ivf'), vector counts, nlist/nprobe, the recall@10 it measured against
        exact search, training details, capacity used, and memory and disk use. Use it when recall
        results look wrong or before storing a very large amount of memory.
        """
        report = await _run(service.health, namespace=namespace)
        return IndexHealth.model_validate(report)

    @tool(
        server,
        title="Forget",
        annotations=ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=False),
    )
    async def forget(
        ids: list[str] | None = None,
        session: str | None = None,
        namespace: str = "default",
        confirm: bool = False,
    ) -> ForgetResult:
        """Delete memories for good: the events with the given `ids`, or every event of `session`.

        Only when the user asks to forget something, or a memory is wrong. Pass exactly one of
        `ids` or `session`, and `confirm=true` (without it nothing is deleted). If any id is
        unknown, nothing is deleted. Returns how many events were removed and their ids.
        """
        removed = await _run(service.forget, ids=ids, session=session, namespace=namespace, confirm=confirm)
        return ForgetResult(removed=len(removed), ids=removed)

    return server
