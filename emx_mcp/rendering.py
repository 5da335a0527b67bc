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

SESSION_SHOWN = 6  # leading characters of a session id in item headers


def second(timestamp: str) -> str:
    """'2026-11-21T13:47:13.150668Z' as '2026-11-21T13:47:13Z'."""
    return timestamp[:19] + "Z" if len(timestamp) >= 19 else timestamp


def _minute(timestamp: str) -> str:
    return timestamp[:16].replace("T", " ")


def item(event: RecalledEvent) -> str:
    parts = [
        _minute(event.timestamp),
        f"{event.session[:SESSION_SHOWN]}#{event.position}",
        f"{event.score:.2f}",
    ]
    if event.duplicates:
        parts.append(f"+{event.duplicates} alike")
    if event.truncated:
        parts.append("cut")
    return f"[{' · '.join(parts)}]\n{event.text}"


def recall(result: RecallResult) -> str:
    head = _count(len(result.results), "memory", "memories") if result.results else "No memory matched."
    if result.omitted:
        head += f" ({result.omitted} more left out by max_chars)"
    return "\n".join([head + ":" if result.results else head, *(item(e) for e in result.results)])


def recall_batch(result: RecallBatchResult) -> str:
    return "\n\n".join(f"Query {i + 1}: {recall(r)}" for i, r in enumerate(result.results))


def remember(result: RememberResult) -> str:
    first, last = result.positions
    where = f"position {first}" if first == last else f"positions {first}-{last}"
    lines = [
        f"Stored {result.stored} episode(s) in session {result.session}, {where}, at {result.timestamp}."
    ]
    for e in result.episodes:
        note = f"; nearly the same as {e.duplicate_of.id}" if e.duplicate_of else ""
        lines.append(f"#{e.position} {e.id} ({e.sentences} sentences{note}): {e.preview}")
    rest = result.stored - len(result.episodes)
    if rest:
        lines.append(f"... and {rest} more: ids in the structured result.")
    return "\n".join(lines)


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
    )


def results(found: Recalled) -> RecallResult:
    return RecallResult(results=[recalled(h) for h in found.hits], omitted=found.omitted)
