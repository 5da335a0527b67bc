"""The text block of each tool result: a compact rendering for the model that reads it.

The structured content keeps every field; the text is what most clients show the model, so it
spends its characters on memory text: one header line per item (date, session, position, score),
then the text.
"""

from __future__ import annotations

import base64

from mcp.types import Icon

from emx_mcp.retrieval import Hit, Recalled
from emx_mcp.schemas import (
    ForgetResult,
    PredictNextResult,
    RecallBatchResult,
    RecalledEvent,
    RecallResult,
    RememberResult,
    ResolvedWindow,
    SupersedeResult,
)

# One small mark for the server, its tools, resources and prompts (clients show it beside them).
ICON_SVG = (
    "<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 32 32'><rect width='32' height='32' rx='7' "
    "fill='#2d4a7a'/><circle cx='11' cy='16' r='4' fill='#fff'/>"
    "<circle cx='21' cy='10' r='3' fill='#9cc3ff'/><circle cx='21' cy='22' r='3' fill='#9cc3ff'/>"
    "<path d='M14 15l5-4M14 17l5 4' stroke='#fff' "
    "stroke-width='1.6'/></svg>"
)
ICONS = [
    Icon(
        src="data:image/svg+xml;base64," + base64.b64encode(ICON_SVG.encode()).decode(),
        mime_type="image/svg+xml",
        sizes=["any"],
    )
]


def second(timestamp: str) -> str:
    """'2026-11-21T13:47:13.150668Z' as '2026-11-21T13:47:13Z'."""
    return timestamp[:19] + "Z" if len(timestamp) >= 19 else timestamp


def _minute(timestamp: str) -> str:
    return timestamp[:16].replace("T", " ")


def preview(text: str, size: int) -> str:
    """The text's first `size` characters, with an ellipsis when cut."""
    return text if len(text) <= size else text[: size - 1] + "\u2026"


def item(event: RecalledEvent) -> str:
    """One header line an agent can act on (when, id, session#position, score, marks), then the text."""
    parts = [_minute(event.timestamp), event.id, f"{event.session}#{event.position}", f"{event.score:.2f}"]
    if event.via == "contiguity" and event.neighbour_of:
        parts.append(f"next to {event.neighbour_of}")
    if event.superseded_by:
        parts.append(f"superseded by {event.superseded_by}")
    if event.supersedes:
        parts.append("updates " + ", ".join(event.supersedes[:3]))
    if event.duplicates:
        parts.append(f"+{event.duplicates} same")
    if event.span is not None and event.episode_chars is not None:
        parts.append(f"chars {event.span[0]:,}-{event.span[1]:,} of {event.episode_chars:,}")
    if event.truncated:
        parts.append("cut")
    return f"[{' · '.join(parts)}]\n{event.text}"


def window_line(result: RecallResult) -> str | None:
    w = result.window
    if w is None:
        return None
    since = _minute(w.since) if w.since else "the start"
    until = _minute(w.until) if w.until else "now"
    origin = "in the question" if w.source == "query" else "since/until"
    use = "only that time" if w.use == "filter" else "that time first"
    return f"Time: {w.said!r} ({origin}) = {since} to {until} UTC; {use}."


def recall(result: RecallResult) -> str:
    if result.results:
        order = " in time order" if result.order == "time" else ""
        head = _count(len(result.results), "memory", "memories") + order
        if result.omitted:
            limit = "k or max_chars" if result.order == "time" else "max_chars"
            head += f" ({result.omitted} more left out by {limit})"
        head += ":"
    else:
        head = "No memory matched."
    lines = [head]
    window = window_line(result)
    if window:
        lines.append(window)
    if result.note:
        lines.append(result.note)
    return "\n".join([*lines, *(item(e) for e in result.results)])


def recall_batch(result: RecallBatchResult) -> str:
    return "\n\n".join(f"Query {i + 1}: {recall(r)}" for i, r in enumerate(result.results))


def remember(result: RememberResult) -> str:
    first, last = result.positions
    where = f"position {first}" if first == last else f"positions {first}-{last}"
    stored = _count(result.stored, "episode", "episodes")
    lines = [f"Stored {stored} in session {result.session}, {where}, at {result.timestamp}."]
    for e in result.episodes:
        note = f"; the same as {e.duplicate_of.id}" if e.duplicate_of else ""
        lines.append(
            f"#{e.position} {e.id} ({_count(e.sentences, 'sentence', 'sentences')}{note}): {e.preview}"
        )
    rest = result.stored - len(result.episodes)
    if rest:
        lines.append(f"... and {rest} more: ids in the structured result.")
    if result.supersedes:
        lines.append("Supersedes " + ", ".join(result.supersedes) + " (recall now leaves them out).")
    if result.related:
        lines.append(
            "Earlier memories on the same subject (if this replaces one, call supersede with its id):"
        )
        lines += [f"- {r.id} {r.timestamp[:10]}: {r.preview}" for r in result.related]
    return "\n".join(lines)


def supersede(result: SupersedeResult) -> str:
    lines = []
    if result.linked:
        count = _count(len(result.linked), "memory", "memories")
        lines.append(f"Marked {count} superseded by {result.by}: {', '.join(result.linked)}.")
    if result.already:
        lines.append(f"Already superseded by {result.by}: {', '.join(result.already)}.")
    return " ".join(lines)


def predict_next(result: PredictNextResult) -> str:
    head = (
        f"{_count(len(result.predictions), 'memory', 'memories')} likely needed next (method {result.method})"
    )
    if result.omitted:
        head += f"; {result.omitted} more left out by max_chars"
    return "\n".join([head + ":", *(item(e) for e in result.predictions)])


def forget(result: ForgetResult) -> str:
    listed = ", ".join(result.ids)
    more = f" and {result.removed - len(result.ids)} more" if result.removed > len(result.ids) else ""
    return (
        f"Forgot {_count(result.removed, 'event', 'events')}: {listed}{more}."
        if result.removed
        else "Forgot nothing."
    )


def _count(n: int, one: str, many: str) -> str:
    return f"{n:,} {one if n == 1 else many}"


def recalled(hit: Hit) -> RecalledEvent:
    e = hit.event
    return RecalledEvent(
        id=e.id,
        text=e.text,
        score=round(hit.score, 4),
        session=e.session,
        position=e.position,
        timestamp=second(e.timestamp),
        metadata=e.metadata,
        via=hit.via,
        neighbour_of=hit.neighbour_of,
        duplicates=hit.duplicates,
        truncated=hit.truncated,
        span=None if hit.span is None else list(hit.span),
        episode_chars=hit.episode_chars,
        superseded_by=hit.superseded_by,
        supersedes=list(hit.supersedes),
    )


def results(found: Recalled) -> RecallResult:
    window = None
    if found.window is not None:
        w = found.window
        window = ResolvedWindow(since=w.since, until=w.until, said=w.said, source=w.source, use=w.use)
    return RecallResult(
        results=[recalled(h) for h in found.hits],
        omitted=found.omitted,
        order=found.order,
        window=window,
        note=found.note,
    )
