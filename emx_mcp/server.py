"""The MCP tools: check the arguments against a request model, call one use case, shape a typed result."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import anyio.from_thread
import structlog
from mcp.server import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.tools import Tool
from mcp.server.mcpserver.utilities.func_metadata import func_metadata
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel

from emx_mcp import __version__, rendering, resources
from emx_mcp.access import AccessDenied, Grant, current_grant
from emx_mcp.coalescing import off_loop, progress_reporter
from emx_mcp.errors import EmxError
from emx_mcp.health import render
from emx_mcp.prediction import Prediction
from emx_mcp.schemas import (
    FORGET_LISTED,
    MAX_SUPERSEDES,
    PREVIEW_CHARS,
    RELATED_PREVIEW_CHARS,
    REMEMBER_DETAILS,
    REMEMBER_IDS,
    Duplicate,
    ForgetRequest,
    ForgetResult,
    HealthReport,
    HealthRequest,
    PredictNextRequest,
    PredictNextResult,
    PredictorInfo,
    RecallBatchRequest,
    RecallBatchResult,
    RecallRequest,
    RecallResult,
    RelatedEpisode,
    RememberRequest,
    RememberResult,
    StoredEpisode,
    SupersedeRequest,
    SupersedeResult,
    parse,
    tool_schema,
)
from emx_mcp.service import Episode, MemoryService, Remembered
from emx_mcp.transport import auth_options, caller

log = structlog.get_logger(__name__)

INSTRUCTIONS = """\
Episodic memory that persists across conversations. Call `remember` with what happened
(decisions, facts learned, results, user preferences) as it happens; call `recall` with a
question or topic before answering anything that earlier work may have settled. Memories are
grouped into sessions: reuse the session id that `remember` returns to keep one task together.
"""

READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True)
WRITES = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False)
DELETES = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=False)
LINKS = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True)


class ServiceTool(Tool):
    """A tool whose arguments are one request model, checked strictly with readable errors."""

    request_model: type[BaseModel]
    max_text_chars: int
    render: Callable[[Any], str]

    async def run(self, arguments: dict[str, Any], context: Any, convert_result: bool = False) -> Any:
        grant = caller()
        reporter = progress_reporter.set(_progress_to(context))
        granted = current_grant.set(grant)
        audit: dict[str, Any] = {"token": grant.name, "tool": self.name}
        requested = arguments.get("namespace")
        audit["namespace"] = requested if isinstance(requested, str) else grant.default_namespace
        try:
            arguments = self._within(grant, arguments)
            request = parse(self.request_model, arguments, self.max_text_chars)
            result = await self.fn(request)
        except EmxError as exc:
            outcome = "refused" if isinstance(exc, AccessDenied) else "error"
            log.info("call", **audit, outcome=outcome, reason=str(exc)[:200])
            raise ToolError(f"Error executing tool {self.name}: {exc}") from None
        except Exception as exc:
            # A bug, not the caller's mistake: the trace goes to the log, the client learns what
            # happened and that it may try again, never just "Error executing tool".
            log.exception("tool failed unexpectedly", tool=self.name)
            log.info("call", **audit, outcome="failed", reason=type(exc).__name__)
            raise ToolError(
                f"Error executing tool {self.name}: the server failed unexpectedly ({type(exc).__name__}), a "
                "bug whose details are in the server's log. Writes are all-or-nothing: before repeating a "
                "remember, recall it (or give it an idempotency_key) to see whether it was stored."
            ) from None
        finally:
            progress_reporter.reset(reporter)
            current_grant.reset(granted)
        log.info("call", **audit, **counts(result), outcome="ok")
        if not convert_result:
            return result
        structured = result.model_dump(mode="json")
        reply = CallToolResult(
            content=[TextContent(type="text", text=self.render(result))], structured_content=structured
        )
        return self.fn_metadata.convert_result(reply)

    def _within(self, grant: Grant, arguments: dict[str, Any]) -> dict[str, Any]:
        """The arguments with the grant applied: its default namespace, and only namespaces it opens."""
        if self.name in WRITING_TOOLS:
            grant.check_write(WRITING_TOOLS[self.name])
        if grant.namespaces is None:
            return arguments
        requested = arguments.get("namespace")
        if requested is None:
            return {**arguments, "namespace": grant.default_namespace}
        if isinstance(requested, str):
            grant.namespace(requested)
        return arguments


# The tools that change memory, with the verb a read-only token's refusal names.
WRITING_TOOLS = {"remember": "remember", "supersede": "mark memories superseded", "forget": "forget"}


def counts(result: Any) -> dict[str, int]:
    """What the audit line says a call did: events stored, results returned, events forgotten."""
    if isinstance(result, RememberResult):
        return {"stored": result.stored}
    if isinstance(result, RecallResult):
        return {"returned": len(result.results)}
    if isinstance(result, RecallBatchResult):
        return {"returned": sum(len(r.results) for r in result.results)}
    if isinstance(result, PredictNextResult):
        return {"returned": len(result.predictions)}
    if isinstance(result, ForgetResult):
        return {"forgotten": result.removed}
    if isinstance(result, SupersedeResult):
        return {"linked": len(result.linked)}
    return {}


def _progress_to(context: Any) -> Callable[[float, float, str], None] | None:
    """Progress notifications for this call, sent from the worker thread doing the work."""
    if context is None:
        return None

    def send(done: float, total: float, message: str) -> None:
        try:
            anyio.from_thread.run(context.report_progress, done, total, message)
        except Exception:  # a client gone away must not fail the work itself
            log.debug("progress notification not sent", exc_info=True)

    return send


def service_tool(
    name: str,
    title: str,
    annotations: ToolAnnotations,
    request_model: type[BaseModel],
    handler: Callable[[Any], Awaitable[BaseModel]],
    render: Callable[[Any], str],
    max_text_chars: int,
) -> ServiceTool:
    """A tool described by its handler's docstring and return type, taking `request_model`'s arguments."""
    return ServiceTool(
        fn=handler,
        name=name,
        title=title,
        description=inspect.cleandoc(handler.__doc__ or ""),
        parameters=tool_schema(request_model, max_text_chars),
        fn_metadata=func_metadata(handler),
        is_async=True,
        context_kwarg=None,
        annotations=annotations,
        icons=rendering.ICONS,
        request_model=request_model,
        max_text_chars=max_text_chars,
        render=render,
    )


def remembered(result: Remembered) -> RememberResult:
    episodes = result.episodes
    first = episodes[0].event
    return RememberResult(
        session=first.session,
        timestamp=rendering.second(first.timestamp),
        stored=len(episodes),
        positions=[first.position, episodes[-1].event.position],
        ids=[e.event.id for e in episodes[:REMEMBER_IDS]],
        episodes=[described(e) for e in episodes[:REMEMBER_DETAILS]],
        supersedes=result.supersedes[:MAX_SUPERSEDES],
        related=[
            RelatedEpisode(
                id=event.id,
                timestamp=rendering.second(event.timestamp),
                preview=rendering.preview(event.text, RELATED_PREVIEW_CHARS),
                similarity=similarity,
            )
            for event, similarity in result.related
        ],
    )


def described(episode: Episode) -> StoredEpisode:
    e = episode.event
    duplicate = (
        None
        if episode.duplicate_of is None
        else Duplicate(id=episode.duplicate_of[0], similarity=episode.duplicate_of[1])
    )
    return StoredEpisode(
        id=e.id,
        position=e.position,
        sentences=episode.sentences,
        chars=len(e.text),
        preview=rendering.preview(e.text, PREVIEW_CHARS),
        surprise=None if episode.surprise is None else round(episode.surprise, 4),
        duplicate_of=duplicate,
    )


def predicted(result: Prediction) -> PredictNextResult:
    info = None
    if result.checkpoint is not None:
        header = result.checkpoint.header
        outcome = header.outcome
        label = {"lvm": "lvm", "blend": f"blend_{outcome.blend_weight}"}.get(outcome.method, outcome.method)
        chosen = outcome.metrics.get(label, {})
        baselines = [outcome.metrics[m]["hit@5"] for m in ("copy_last", "analog") if m in outcome.metrics]
        info = PredictorInfo(
            trained_at=header.trained_at,
            context=header.context,
            method=outcome.method,
            blend_weight=outcome.blend_weight,
            validation={k: v for k, v in chosen.items() if k in ("hit@1", "hit@5", "hit@10", "mrr")},
            baseline_hit_at_5=max(baselines) if baselines else None,
        )
    return PredictNextResult(
        method=result.method,  # type: ignore[arg-type]
        predictions=[rendering.recalled(h) for h in result.hits],
        omitted=result.omitted,
        model=info,
    )


class MemoryTools:
    """The tool handlers: each gets a checked request, calls one use case and shapes the result."""

    def __init__(self, service: MemoryService) -> None:
        self.service = service

    async def remember(self, request: RememberRequest) -> RememberResult:
        """Store something that happened so it can be recalled later, in this or a future conversation.

        Use it for decisions, facts learned, outcomes of actions, and user preferences. Long text is
        cut into episodes where the topic shifts; short text stays one episode. `session` groups
        the events of one task: omit it to start a new session, then pass the returned session id
        on later calls. `metadata` is an optional JSON object kept with every episode; `timestamp`
        is ISO 8601 (default: now, UTC). When the text replaces earlier memories (a fact that
        changed), pass their ids in `supersedes`: recall then answers with the new one. Returns one
        item per episode with its id, position and boundary surprise, and up to 3 earlier episodes
        on the same subject (`related`): if the new text replaces one, call `supersede`. It returns
        only once everything is durably on disk.
        """
        return remembered(await off_loop(self.service.remember, request))

    async def recall(self, request: RecallRequest) -> RecallResult:
        """Find the stored memories that answer `query`, with what happened around them.

        Use it before answering anything earlier work may have settled. Returns the `k` (1-100,
        default 5) best episodes by meaning and words (`via: "similarity"`), with the episodes
        just before and after each in its session (`via: "contiguity"`, `neighbour_of` naming the
        match; `contiguity` per side, 0-5, default 1). Episodes a later one superseded are left out
        (`include_superseded: true` shows them, marked `superseded_by`); of two close statements on
        one subject the newer comes first. Times: `since` / `until` take ISO 8601 or words such as
        "yesterday", "last week", "last Tuesday", "3 days ago", resolved against `now` (ISO 8601
        with zone; default the server's clock); a time in the question itself ("what failed last
        Tuesday?") is used too, and `window` says how it was read. With an empty `query` and a
        window or `session`, lists what happened there in time order. Also `session` and
        `metadata` (exact match on top-level keys) filters. An empty answer says why in `note`.
        """
        return rendering.results(await off_loop(self.service.recall, request))

    async def recall_batch(self, request: RecallBatchRequest) -> RecallBatchResult:
        """Run several recalls at once (1-256 queries), faster than calling `recall` repeatedly.

        Use it when you have several questions or topics to look up together. Takes the same
        arguments as `recall` (with `queries` instead of `query`) and returns one list of results
        per query, in the order given, each exactly as `recall` would return it.
        """
        batches = await off_loop(self.service.recall_batch, request)
        return RecallBatchResult(results=[rendering.results(found) for found in batches])

    async def predict_next(self, request: PredictNextRequest) -> PredictNextResult:
        """Surface the stored memories you will most likely need next in a task.

        Use it when moving to the next step of work that resembles earlier sessions ("after setting
        up the database came the migrations"). The context is the latest episodes of `session`
        (default: the namespace's most recent session), or those up to and including
        `after_event_id`. Returns `k` (1-100) episodes (`via: "prediction"`), never ones from the
        context, and `method`: the trained predictor only where it beat the baselines on held-out
        sessions, otherwise the best baseline; `model` gives its validation figures.
        """
        return predicted(await off_loop(self.service.predict_next, request))

    async def index_health(self, request: HealthRequest) -> HealthReport:
        """Report how the memory index of a namespace is doing.

        Returns a one-word `status` (ok / warning / degraded) with `reasons`, the index kind (exact
        'flat' or trained 'ivf'), vector counts, nlist/nprobe, the recall@10 it measured against
        exact search, training details, capacity used, and memory and disk use. Use it when recall
        results look wrong or before storing a very large amount of memory.
        """
        return await off_loop(self.service.health, request)

    async def supersede(self, request: SupersedeRequest) -> SupersedeResult:
        """Mark memories as out of date: the episodes `ids` are replaced by the episode `by`.

        Use it when `remember` lists a related earlier episode that the new one replaces (a fact
        that changed: a new address, a new limit, a reversed decision), or when recall shows an
        old and a new statement of the same fact. Nothing is deleted: recall leaves superseded
        episodes out unless `include_superseded` is true, and forgetting `by` brings them back.
        Returns the ids newly marked and those marked before.
        """
        linked, already = await off_loop(self.service.supersede, request)
        return SupersedeResult(by=request.by, linked=linked, already=already)

    async def forget(self, request: ForgetRequest) -> ForgetResult:
        """Delete memories for good: the events with the given `ids`, or every event of `session`.

        Use it only when the user asks to forget something, or a memory is wrong. Pass exactly one of
        `ids` or `session`, and `confirm=true` (without it nothing is deleted). If any id is
        unknown, nothing is deleted. Returns how many events were removed and their ids.
        """
        removed = await off_loop(self.service.forget, request)
        return ForgetResult(removed=len(removed), ids=removed[:FORGET_LISTED])


def tools(service: MemoryService) -> list[Tool]:
    """The seven tools, each bound to one use case of `service`."""
    t = MemoryTools(service)
    limit = service.settings.max_text_chars
    return [
        service_tool("remember", "Remember", WRITES, RememberRequest, t.remember, rendering.remember, limit),
        service_tool("recall", "Recall", READ_ONLY, RecallRequest, t.recall, rendering.recall, limit),
        service_tool(
            "recall_batch",
            "Recall many",
            READ_ONLY,
            RecallBatchRequest,
            t.recall_batch,
            rendering.recall_batch,
            limit,
        ),
        service_tool(
            "predict_next",
            "Predict next",
            READ_ONLY,
            PredictNextRequest,
            t.predict_next,
            rendering.predict_next,
            limit,
        ),
        service_tool("index_health", "Index health", READ_ONLY, HealthRequest, t.index_health, render, limit),
        service_tool(
            "supersede", "Supersede", LINKS, SupersedeRequest, t.supersede, rendering.supersede, limit
        ),
        service_tool("forget", "Forget", DELETES, ForgetRequest, t.forget, rendering.forget, limit),
    ]


def build_server(service: MemoryService) -> MCPServer:
    """One MCP server, its tools bound to `service`."""
    token_verifier, auth = auth_options(service.settings, lambda: service.tokens)
    server = MCPServer(
        name="emx-mcp",
        title="emx-mcp episodic memory",
        instructions=INSTRUCTIONS,
        version=__version__,
        icons=rendering.ICONS,
        log_level=service.settings.log_level,
        token_verifier=token_verifier,
        auth=auth,
        tools=tools(service),
    )
    resources.register(server, service)
    return server
