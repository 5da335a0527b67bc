"""MCP beyond tools: resources to browse memory, completions for their arguments, and two prompts.

Resources (JSON): `emx://namespaces`; per namespace its sessions (paginated, newest first), a
session's episodes in order, the recent episodes, and index health. Completions suggest
namespaces and sessions wherever a template or prompt takes them. The prompts put memory to
work: one fills a task with the memories relevant to it, one recaps a session.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar
from urllib.parse import quote

from mcp.server import MCPServer
from mcp.server.mcpserver.prompts.base import Message, UserMessage
from mcp.server.mcpserver.resources.templates import ResourceSecurity
from mcp.shared.exceptions import MCPError
from mcp.types import (
    INVALID_PARAMS,
    Completion,
    CompletionArgument,
    CompletionContext,
    PromptReference,
    ResourceTemplateReference,
)
from pydantic import BaseModel

from emx_mcp import rendering
from emx_mcp.coalescing import off_loop
from emx_mcp.errors import EmxError
from emx_mcp.rendering import ICONS, results
from emx_mcp.schemas import (
    EPISODES_PAGE,
    HealthRequest,
    RecallRequest,
    blank,
    check_namespace,
    check_session,
    parse,
)
from emx_mcp.service import MemoryService
from emx_mcp.transport import caller

JSON = "application/json"
# Session ids are free text: a '/' or '..' in one is part of the id, not a path.
SESSION_IS_TEXT = ResourceSecurity(exempt_params=frozenset({"session"}))
COMPLETIONS = 100
RECAP_CHARS = 20_000


def session_uri(namespace: str, session: str) -> str:
    return f"emx://{namespace}/sessions/{quote(session, safe='')}"


def _json(model: BaseModel) -> str:
    return model.model_dump_json(indent=1)


def _checked(namespace: str, session: str | None = None) -> str:
    """Template arguments are checked as tool arguments are, and against the caller's token."""
    check_namespace(namespace)
    if session is not None:
        check_session(session)
    return caller().namespace(namespace)


def _start(value: str) -> int:
    if value and not value.isdigit():
        raise ValueError(f"start {value[:20]!r} must be a whole number of episodes.")
    return int(value or 0)


P = ParamSpec("P")
R = TypeVar("R")


def explained(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """A reader's mistake (a bad namespace, an unknown session) comes back as one sentence, not a trace."""

    @functools.wraps(fn)
    async def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(*args, **kwargs)
        except (EmxError, ValueError) as exc:
            raise MCPError(code=INVALID_PARAMS, message=str(exc)) from None

    return run


def register(server: MCPServer, service: MemoryService) -> None:
    """Add the resources, completions and prompts of `service` to `server`."""

    @server.resource(
        "emx://namespaces",
        name="namespaces",
        title="Namespaces",
        description="Every namespace with its number of events.",
        mime_type=JSON,
        icons=ICONS,
    )
    @explained
    async def namespaces() -> str:
        grant = caller()
        listed = await off_loop(service.namespaces)
        visible = [n for n in listed.namespaces if grant.may_read(n.namespace)]
        return _json(listed.model_copy(update={"namespaces": visible}))

    @server.resource(
        "emx://{namespace}/sessions{?cursor}",
        name="sessions",
        title="Sessions of a namespace",
        description="The namespace's sessions, newest first, 50 a page: read `next_cursor` and pass it as "
        "`cursor` for the next page.",
        mime_type=JSON,
        icons=ICONS,
    )
    @explained
    async def sessions(namespace: str, cursor: str = "") -> str:
        _checked(namespace)
        return _json(await off_loop(service.session_page, namespace, cursor or None))

    @server.resource(
        "emx://{namespace}/sessions/{session}{?start}",
        name="session",
        title="A session's episodes",
        description=f"The session's episodes in order, {EPISODES_PAGE} a page from the `start`-th "
        "(`next_start` gives the next page). The session id is percent-encoded.",
        mime_type=JSON,
        icons=ICONS,
        security=SESSION_IS_TEXT,
    )
    @explained
    async def session(namespace: str, session: str, start: str = "") -> str:
        _checked(namespace, session)
        return _json(await off_loop(service.session_episodes, namespace, session, _start(start)))

    @server.resource(
        "emx://{namespace}/recent",
        name="recent",
        title="Recent episodes",
        description="The namespace's 20 latest episodes, newest first.",
        mime_type=JSON,
        icons=ICONS,
    )
    @explained
    async def recent(namespace: str) -> str:
        _checked(namespace)
        return _json(await off_loop(service.recent, namespace))

    @server.resource(
        "emx://{namespace}/health",
        name="health",
        title="Index health",
        description="What `index_health` reports for the namespace.",
        mime_type=JSON,
        icons=ICONS,
    )
    @explained
    async def health(namespace: str) -> str:
        _checked(namespace)
        return _json(await off_loop(service.health, HealthRequest(namespace=namespace)))

    @server.completion()  # type: ignore[no-untyped-call, untyped-decorator]
    async def complete(
        ref: PromptReference | ResourceTemplateReference,
        argument: CompletionArgument,
        context: CompletionContext | None,
    ) -> Completion | None:
        known = dict((context.arguments or {}) if context is not None else {})
        grant = caller()
        if argument.name == "namespace":
            listed = await off_loop(service.namespaces)
            return _completion(grant.visible([n.namespace for n in listed.namespaces]), argument.value)
        if argument.name == "session":
            namespace = known.get("namespace") or grant.default_namespace
            try:
                check_namespace(namespace)
            except ValueError:
                return None
            if not grant.may_read(namespace):
                return None
            page = await off_loop(service.session_page, namespace, None, 10_000)
            return _completion([s.session for s in page.sessions], argument.value)
        return None

    @server.prompt(
        name="recall_for_task",
        title="Start a task with what memory knows",
        description="The task, followed by the stored memories most relevant to it (as `recall` finds "
        "them), so the work starts from what earlier sessions settled.",
        icons=ICONS,
    )
    @explained
    async def recall_for_task(task: str, namespace: str = "") -> list[Message]:
        namespace = _checked(namespace or caller().default_namespace)
        if blank(task):
            raise ValueError("task is empty; say what the task is.")
        request = parse(RecallRequest, {"query": task, "namespace": namespace, "k": 8})
        found = results(await off_loop(service.recall, request))
        memories = rendering.recall(found) if found.results else "No stored memory matches this task."
        text = (
            f"Task: {task}\n\nMemories from earlier work that may bear on it (most relevant first; each "
            f"line gives when, which session and position, and the match score):\n\n{memories}\n\n"
            "Use what applies, say when a memory decides something, and do not repeat settled work."
        )
        return [UserMessage(text)]

    @server.prompt(
        name="recap_session",
        title="Recap a session",
        description="A session's episodes in order (up to 20,000 characters, the latest kept), with the "
        "request to summarise what was decided, done and left open.",
        icons=ICONS,
    )
    @explained
    async def recap_session(session: str, namespace: str = "") -> list[Message]:
        namespace = _checked(namespace or caller().default_namespace, session)
        first = await off_loop(service.session_episodes, namespace, session, 0, 1)
        total = first.total or 0
        lines: list[str] = []
        used = 0
        start = total
        while start > 0 and used < RECAP_CHARS:  # newest pages first, until the budget is spent
            start = max(0, start - EPISODES_PAGE)
            page = await off_loop(service.session_episodes, namespace, session, start, EPISODES_PAGE)
            chunk = [f"[{e.timestamp[:16].replace('T', ' ')} #{e.position}] {e.text}" for e in page.episodes]
            while chunk and used + len(chunk[-1]) <= RECAP_CHARS:
                used += len(chunk[-1])
                lines.insert(0, chunk.pop())
            if chunk:
                break
        left_out = total - len(lines)
        note = f" (the {left_out} earliest left out for length)" if left_out else ""
        text = (
            f"Recap session {session!r} of namespace {namespace!r}: {total} episodes{note}, in order.\n\n"
            + "\n\n".join(lines)
            + "\n\nSummarise what was decided, what was done, and what is still open, citing positions (#n)."
        )
        return [UserMessage(text)]


def _completion(values: list[str], prefix: str) -> Completion:
    matching = [v for v in values if v.startswith(prefix)]
    return Completion(
        values=matching[:COMPLETIONS], total=len(matching), has_more=len(matching) > COMPLETIONS
    )


def resource_uris(namespace: str, session: str | None = None) -> dict[str, Any]:
    """The URIs of a namespace's resources (for documentation and tests)."""
    uris: dict[str, Any] = {
        "sessions": f"emx://{namespace}/sessions",
        "recent": f"emx://{namespace}/recent",
        "health": f"emx://{namespace}/health",
    }
    if session is not None:
        uris["session"] = session_uri(namespace, session)
    return uris
