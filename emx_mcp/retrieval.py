"""Recall: hybrid ranking of episodes, then their neighbours in time, within a reading budget.

Stage one gathers candidates two ways, the episodes whose vectors are nearest the query and
those whose words match it best (storage/lexical.py), and scores each on its own:
`SEMANTIC_WEIGHT` x cosine similarity plus the rest x its coverage, the share of the query's
information (IDF mass) its words hold. A single common word earns little; a rare name or number
much. Then, in this order:

- superseded episodes (a later one replaced them, see `supersede`) are left out, unless asked for;
- of two episodes on the same subject whose scores are within `RECENCY_MARGIN`, the newer ranks
  first when the query is a question (facts change; the latest statement is usually the one
  wanted), by twice the margin when it asks about the current state ("now", "currently"), by
  `CHANGE_MARGIN` more when the newer one says that something changed ("moved", "now"), the
  older first when it asks how things were at first; a few key words are ranked as they score;
- a time the question names ("what failed last Tuesday?") filters, or when vague ("recently")
  lifts the episodes inside it by `TIME_PRIOR`;
- episodes that are one memory stored twice fold into one item (folding.py);
- the k best are chosen, each session's later picks lowered by `SESSION_SPREAD` so that close
  competitors from other sessions get a place.

Stage two adds the episodes next to each match in its session (the contiguity buffer), each
scored on its own merit and shown when it reaches half its match's score. When the items would not
all fit the reading budget, each long episode is shown as its passage that best matches the query
(passages.py). Items come best first until the budget is spent; the rest are counted as left out.
A question about what came right after (or before) an event puts that neighbour first and the
event next to it. An empty query over a window or session lists it in time order.

Weights were chosen on three development sets together (benchmarks/tune_recall.py).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from emx_mcp import folding, passages
from emx_mcp.embedding import Vectors
from emx_mcp.periods import Window
from emx_mcp.questions import Reading
from emx_mcp.schemas import RecallOptions, format_timestamp
from emx_mcp.storage.records import Event, Filters
from emx_mcp.storage.store import Store

# Share of the score that is cosine similarity; the rest is lexical coverage.
SEMANTIC_WEIGHT = 0.6
# Candidates each way, at least; more when k is larger.
CANDIDATES = 50
# A neighbour is shown when its own score reaches this share of its match's.
NEIGHBOUR_SHARE = 0.5
# Two episodes compete closely when their scores differ by at most this...
RECENCY_MARGIN = 0.05
# ... and they are on the same subject when their vectors are at least this similar.
SUBJECT_SIMILARITY = 0.6
# ... widened by this when the newer one says that something changed ("moved to", "now", "switched").
CHANGE_MARGIN = 0.05
# Whether an episode the prior moved up is compared from its new place with the next one above
# (True: a run of close competitors on one subject, each within the margin of the next, is led by
# its newest) or only within the margin of the score it earned (False). Chosen by measurement.
RECENCY_CHAINS = True
# Added to the score of episodes inside a vague time the question names ("recently").
TIME_PRIOR = 0.05
# A definite time named in the question ("last Tuesday") filters ("filter"), or only lifts the
# episodes inside it by TIME_PRIOR ("prior"); vague ones ("recently") always only lift.
QUERY_WINDOWS: Literal["filter", "prior"] = "filter"
# Subtracted from a candidate's score for each episode of its session already chosen.
SESSION_SPREAD = 0.0
# Episodes an empty query lists at most (in time order), and the least text shown of each.
LISTING_SCAN = 2_000
LISTED_CHARS = 300
# Cosine from which an earlier episode counts as on the same subject as a new one (remember's `related`).
RELATED_SIMILARITY = 0.55

# Words that say a fact changed: an episode holding them is likelier the current statement.
CHANGE = re.compile(
    r"\b(?:now|no longer|any ?more|switched|switching|changed|moved|replaced|instead|raised|lowered|"
    r"increased|decreased|upgraded|downgraded|took over|taken over|updated|currently|these days|"
    r"just (?:finished|got|bought|hit|reached|started|moved|switched|wrapped|completed|switched))\b",
    re.IGNORECASE,
)

Via = Literal["similarity", "contiguity", "prediction"]
Mode = Literal["hybrid", "semantic", "lexical"]


@dataclass(frozen=True, slots=True)
class Hit:
    event: Event
    score: float
    via: Via
    neighbour_of: str | None = None  # for contiguity: the id of the match it neighbours
    duplicates: int = 0  # episodes folded into this one (the same memory stored again)
    truncated: bool = False  # the text was cut to fit the reading budget
    span: tuple[int, int] | None = None  # a passage: [start, end) of event.text in the episode's text
    episode_chars: int | None = None  # a passage: the length of the whole episode's text
    superseded_by: str | None = None
    supersedes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class WindowUsed:
    since: str | None
    until: str | None
    said: str
    source: Literal["arguments", "query"]
    use: Literal["filter", "prior"]


@dataclass(frozen=True, slots=True)
class Recalled:
    hits: list[Hit]
    omitted: int  # items that matched but did not fit the reading budget
    order: Literal["relevance", "time"] = "relevance"
    window: WindowUsed | None = None
    note: str | None = None


@dataclass(slots=True)
class _Scored:
    event: Event
    vector: Vectors
    score: float  # its own score, shown
    rank: float  # what orders it: the score with the recency, time and session adjustments
    via: Via = "similarity"
    neighbour_of: str | None = None
    folded: int = 0
    superseded_by: str | None = None
    supersedes: tuple[str, ...] = ()


@dataclass(slots=True)
class _Ranked:
    items: list[_Scored]
    coverage: dict[int, float]  # seq -> lexical coverage, for scoring neighbours
    links: dict[str, list[str]] = field(default_factory=dict)  # old id -> newer ids, among those seen
    best_seen: float | None = None  # the best score before min_score, for an empty answer's reason


def filters_of(options: RecallOptions, window: Window | None = None) -> Filters:
    """The filters of a request, narrowed to `window` (a time the question named) if given."""
    since, until = options.window
    if window is not None:
        if window.start is not None:
            start = format_timestamp(window.start)
            since = start if since is None else max(since, start)
        if window.end is not None:
            end = format_timestamp(window.end)
            until = end if until is None else min(until, end)
    return Filters(session=options.session, since=since, until=until, metadata=options.metadata)


def score(mode: Mode, cosine: float, coverage: float) -> float:
    """An episode's score: cosine, lexical coverage, or the weighted sum of both."""
    if mode == "semantic":
        return cosine
    if mode == "lexical":
        return coverage
    return SEMANTIC_WEIGHT * cosine + (1 - SEMANTIC_WEIGHT) * coverage


def recall(
    store: Store, readings: list[Reading], vectors: Vectors, options: RecallOptions, budget: int
) -> list[Recalled]:
    """For each question read (and its vector (dim,)): its best episodes and neighbours, in `budget` chars."""
    base = filters_of(options)
    width = max(CANDIDATES, 4 * options.top)
    plain = [i for i, r in enumerate(readings) if not r.listing and _query_window(r) is None]
    semantic: dict[int, list[tuple[Event, float]]] = {}
    if plain and options.mode != "lexical":
        found = store.search(options.namespace, np.ascontiguousarray(vectors[plain]), width, base)
        semantic = {i: [(m.event, m.score) for m in matches] for i, matches in zip(plain, found, strict=True)}
    out = []
    for i, (reading, vector) in enumerate(zip(readings, vectors, strict=True)):
        if reading.listing:
            out.append(listing(store, options, reading, budget))
        else:
            out.append(answer(store, options, reading, vector, budget, semantic.get(i)))
    return out


def _query_window(reading: Reading) -> Window | None:
    return None if reading.found is None else reading.found.window


def answer(
    store: Store,
    options: RecallOptions,
    reading: Reading,
    vector: Vectors,
    budget: int,
    semantic: list[tuple[Event, float]] | None,
) -> Recalled:
    """One question's answer: ranked, with neighbours and passages, fitted to the budget."""
    window = _query_window(reading)
    used = _arguments_window(options)
    note = None
    if window is not None and window.exact and QUERY_WINDOWS == "filter":
        ranked = rank(store, options, reading, vector, filters_of(options, window))
        used = _used(window, "filter")
        if not ranked.items:
            note = f"Nothing matched in {window.text!r}, so these come from any time, that period first."
            ranked = rank(store, options, reading, vector, filters_of(options), prior=window)
            used = _used(window, "prior")
    elif window is not None:
        ranked = rank(store, options, reading, vector, filters_of(options), prior=window)
        used = _used(window, "prior")
    else:
        ranked = rank(store, options, reading, vector, filters_of(options), semantic=semantic)
    chosen = ranked.items[: options.top]
    if reading.direction is not None and chosen:
        chosen, note = _sequence(store, options, chosen, reading, vector, ranked)
    elif options.contiguity:
        chosen = chosen + neighbours(store, options, vector, chosen, ranked)
        chosen.sort(key=lambda s: -s.rank)
    hits = [_hit(s) for s in chosen]
    if sum(len(h.event.text) for h in hits) > budget:  # long episodes would crowd the rest out
        hits = passages.shorten(hits, reading.text)
    fitted = fit(hits, budget)
    if not fitted.hits and note is None:
        note = explain_empty(
            store,
            options,
            filters_of(options, window if used and used.use == "filter" else None),
            ranked.best_seen,
        )
    return replace(fitted, window=used, note=note)


def _arguments_window(options: RecallOptions) -> WindowUsed | None:
    since, until = options.window
    if since is None and until is None:
        return None
    said = " to ".join(e for e in options.expressions if e) or "since/until"
    return WindowUsed(since, until, said, "arguments", "filter")


def _used(window: Window, use: Literal["filter", "prior"]) -> WindowUsed:
    since = None if window.start is None else format_timestamp(window.start)
    until = None if window.end is None else format_timestamp(window.end)
    return WindowUsed(since, until, window.text, "query", use)


def rank(
    store: Store,
    options: RecallOptions,
    reading: Reading,
    vector: Vectors,
    filters: Filters,
    prior: Window | None = None,
    semantic: list[tuple[Event, float]] | None = None,
) -> _Ranked:
    """The candidates, scored, cleared of superseded episodes, folded, best first (k plus spare)."""
    ns = options.namespace
    width = max(CANDIDATES, 4 * options.top)
    if semantic is None and options.mode != "lexical":
        semantic = [(m.event, m.score) for m in store.search(ns, vector.reshape(1, -1), width, filters)[0]]
    lexical = store.search_text(ns, reading.text, width, filters) if options.mode != "semantic" else []
    coverage = dict(lexical)
    seqs = list(dict.fromkeys([*(e.seq for e, _ in semantic or []), *coverage]))
    pool = store.events_at(ns, seqs)
    links = _links(store, ns, [e.id for e, _ in pool.values()])
    scored = []
    for seq, (event, v) in pool.items():
        own = score(options.mode, float(v @ vector), coverage.get(seq, 0.0))
        lift = TIME_PRIOR if prior is not None and _inside(event, prior) else 0.0
        newer = links.get(event.id, [])
        superseded = newer[-1] if newer else None
        scored.append(_Scored(event, v, own, own + lift, superseded_by=superseded))
    best = max((s.score for s in scored), default=None)
    _mark_supersedes(scored, links)
    if not options.include_superseded:
        scored = [s for s in scored if s.superseded_by is None]
    scored = [s for s in scored if s.score >= options.min_score]
    scored.sort(key=lambda s: (-s.rank, s.event.seq))
    prefer(scored, reading.prefers)
    items = _spread(_folded(scored), options.top)
    return _Ranked(items, coverage, links, best)


def _links(store: Store, namespace: str, ids: list[str]) -> dict[str, list[str]]:
    """old id -> the ids of the episodes that superseded it (oldest link first), for links touching `ids`."""
    out: dict[str, list[str]] = {}
    for old, new in store.links(namespace, ids) if ids else []:
        out.setdefault(old, []).append(new)
    return out


def _mark_supersedes(scored: list[_Scored], links: dict[str, list[str]]) -> None:
    olds: dict[str, list[str]] = {}
    for old, news in links.items():
        for new in news:
            olds.setdefault(new, []).append(old)
    for s in scored:
        s.supersedes = tuple(olds.get(s.event.id, ()))


def _inside(event: Event, window: Window) -> bool:
    since = None if window.start is None else format_timestamp(window.start)
    until = None if window.end is None else format_timestamp(window.end)
    return (since is None or event.timestamp >= since) and (until is None or event.timestamp <= until)


def prefer(scored: list[_Scored], prefers: Literal["newer", "newest", "older"] | None) -> None:
    """Of two episodes on the same subject whose ranks are within RECENCY_MARGIN, rank the newer first.

    "newest" (a question about the current state) widens the margin to twice RECENCY_MARGIN;
    "older" (how things were at first) ranks the older first instead; None changes nothing.
    `scored` is best first; a winner takes its competitor's rank and a hair more, in place.
    """
    if prefers is None:
        return
    base = RECENCY_MARGIN * (2 if prefers == "newest" else 1)
    sign = -1 if prefers == "older" else 1
    earned = [s.rank for s in scored]
    for i in range(1, len(scored)):
        item = scored[i]
        margin = base + (CHANGE_MARGIN if sign > 0 and CHANGE.search(item.event.text) else 0.0)
        for j in range(i - 1, -1, -1):
            other = scored[j]
            gap = other.rank - item.rank if RECENCY_CHAINS else earned[j] - earned[i]
            if gap > margin:
                break
            if item.event.timestamp == other.event.timestamp:
                continue  # said at the same time (one conversation, one call): neither is newer
            later = item.event.timestamp > other.event.timestamp
            wins = later if sign > 0 else not later
            if wins and float(item.vector @ other.vector) >= SUBJECT_SIMILARITY and other.rank >= item.rank:
                item.rank = other.rank + 1e-6
    scored.sort(key=lambda s: (-s.rank, s.event.seq))


def _folded(scored: list[_Scored]) -> list[_Scored]:
    out = []
    for shown, others in folding.fold(scored, lambda s: s.event, lambda s: s.vector):
        best = max([shown, *others], key=lambda s: s.rank)
        out.append(
            replace(shown, score=max(s.score for s in [shown, *others]), rank=best.rank, folded=len(others))
        )
    out.sort(key=lambda s: (-s.rank, s.event.seq))
    return out


def _spread(items: list[_Scored], k: int) -> list[_Scored]:
    """The k best, each session's later picks lowered by SESSION_SPREAD per earlier pick; the rest after."""
    if SESSION_SPREAD <= 0 or len(items) <= 1:
        return items
    chosen: list[_Scored] = []
    left = list(items)
    per_session: Counter[str] = Counter()
    while left and len(chosen) < k:
        best = max(left, key=lambda s: (s.rank - SESSION_SPREAD * per_session[s.event.session], -s.event.seq))
        left.remove(best)
        chosen.append(best)
        per_session[best.event.session] += 1
    return chosen + left


def neighbours(
    store: Store, options: RecallOptions, vector: Vectors, matches: list[_Scored], ranked: _Ranked
) -> list[_Scored]:
    """The episodes within `contiguity` positions of each match, scored on their own merit."""
    shown = {m.event.seq for m in matches}
    anchors = {(m.event.session, m.event.position): m for m in matches}
    filters = filters_of(options)
    around = store.neighbours(options.namespace, sorted(anchors), options.contiguity, filters)
    nearby = [e for e in around if e.seq not in shown]
    stored = store.events_at(options.namespace, [e.seq for e in nearby])
    links = _links(store, options.namespace, [e.id for e in nearby])
    out: dict[int, _Scored] = {}
    for event in nearby:
        match = _closest_match(anchors, event, options.contiguity)
        newer = links.get(event.id, [])
        if match is None or event.seq not in stored or (newer and not options.include_superseded):
            continue
        v = stored[event.seq][1]
        own = score(options.mode, float(v @ vector), ranked.coverage.get(event.seq, 0.0))
        if own >= max(options.min_score, NEIGHBOUR_SHARE * match.score) and event.seq not in out:
            out[event.seq] = _Scored(
                event,
                v,
                own,
                min(own, match.rank - 1e-6),
                "contiguity",
                match.event.id,
                superseded_by=newer[-1] if newer else None,
            )
    _mark_supersedes(list(out.values()), links)
    return list(out.values())


def _closest_match(anchors: dict[tuple[str, int], _Scored], event: Event, reach: int) -> _Scored | None:
    for distance in range(1, reach + 1):
        for position in (event.position - distance, event.position + distance):
            match = anchors.get((event.session, position))
            if match is not None:
                return match
    return None


def _sequence(
    store: Store,
    options: RecallOptions,
    chosen: list[_Scored],
    reading: Reading,
    vector: Vectors,
    ranked: _Ranked,
) -> tuple[list[_Scored], str | None]:
    """For "what came right after / before X": X's neighbour that way first, then X, then the rest."""
    event = chosen[0]
    step = 1 if reading.direction == "after" else -1
    around = store.neighbours(
        options.namespace, [(event.event.session, event.event.position)], 1, filters_of(options)
    )
    beside = [e for e in around if e.position == event.event.position + step]
    if (
        beside
        and not options.include_superseded
        and beside[0].id in _links(store, options.namespace, [beside[0].id])
    ):
        beside = []
    if not beside:
        where = "last" if step > 0 else "first"
        note = (
            f"The closest match to {reading.text!r} is the {where} episode of its session: nothing comes "
            f"{reading.direction} it there."
        )
        return chosen, note
    neighbour = beside[0]
    stored = store.events_at(options.namespace, [neighbour.seq])
    if neighbour.seq not in stored:
        return chosen, None
    v = stored[neighbour.seq][1]
    own = score(options.mode, float(v @ vector), ranked.coverage.get(neighbour.seq, 0.0))
    first = _Scored(neighbour, v, own, event.rank + 1e-6, "contiguity", event.event.id)
    rest = [s for s in chosen if s.event.seq != neighbour.seq]
    note = (
        f"Read as: what came {reading.direction} {reading.text!r}; that episode follows, then the match "
        "itself."
    )
    return [first, *rest], note


def _hit(s: _Scored) -> Hit:
    return Hit(
        s.event,
        s.score,
        s.via,
        s.neighbour_of,
        duplicates=s.folded,
        superseded_by=s.superseded_by,
        supersedes=s.supersedes,
    )


def fit(hits: list[Hit], max_chars: int) -> Recalled:
    """The hits, best first, while their texts fit in `max_chars`; the first one always, cut if need be."""
    kept: list[Hit] = []
    used = 0
    for hit in hits:
        size = len(hit.event.text)
        if used + size > max_chars:
            if kept:
                break
            text = hit.event.text[:max_chars]
            hit = replace(hit, event=replace(hit.event, text=text), truncated=True)
            size = len(text)
        kept.append(hit)
        used += size
    return Recalled(kept, len(hits) - len(kept))


# -- listing a period or a session --------------------------------------------------------------


def listing(store: Store, options: RecallOptions, reading: Reading, budget: int) -> Recalled:
    """What happened in the window or session, in time order, spread over its sessions within `budget`."""
    window = _query_window(reading)
    filters = filters_of(options, window)
    events, total = store.listing(options.namespace, filters, LISTING_SCAN)
    scanned = len(events)
    links = _links(store, options.namespace, [e.id for e in events])
    if not options.include_superseded:
        events = [e for e in events if e.id not in links]
    used = _used(window, "filter") if window is not None else _arguments_window(options)
    if not events:
        return Recalled([], 0, "time", used, explain_empty(store, options, filters, None))
    cap = options.k if options.k is not None else 100
    picked = _round_robin(events, cap, budget)
    olds: dict[str, list[str]] = {}
    for old, news in links.items():
        for new in news:
            olds.setdefault(new, []).append(old)
    hits = [
        Hit(
            e,
            1.0,
            "similarity",
            truncated=cut,
            superseded_by=links[e.id][-1] if e.id in links else None,
            supersedes=tuple(olds.get(e.id, ())),
        )
        for e, cut in picked
    ]
    note: str | None = None
    if total > scanned:
        note = f"The period holds {total:,} episodes; the first {scanned:,} in time were considered."
    return Recalled(hits, len(events) - len(hits), "time", used, note)


def _round_robin(events: list[Event], cap: int, budget: int) -> list[tuple[Event, bool]]:
    """Up to `cap` episodes in `budget` chars, each session's first, then each one's second...; in time order.

    When the period holds more text than the budget, each episode shows at most its share (never
    under LISTED_CHARS), cut at a word.
    """
    sessions: dict[str, list[Event]] = {}
    for event in events:
        sessions.setdefault(event.session, []).append(event)
    total = sum(len(e.text) for e in events)
    share = budget if total <= budget else max(LISTED_CHARS, budget // max(1, min(cap, len(events))))
    share = min(share, budget)
    picked: list[tuple[Event, bool]] = []
    used = 0
    depth = 0
    while len(picked) < min(cap, len(events)):
        layer = [rows[depth] for rows in sessions.values() if depth < len(rows)]
        if not layer:
            break
        for event in layer:
            text = event.text if len(event.text) <= share else _cut(event.text, share)
            if (picked and used + len(text) > budget) or len(picked) >= cap:
                return sorted(picked, key=lambda p: (p[0].timestamp, p[0].seq))
            picked.append((replace(event, text=text), len(text) < len(event.text)))
            used += len(text)
        depth += 1
    return sorted(picked, key=lambda p: (p[0].timestamp, p[0].seq))


def _cut(text: str, size: int) -> str:
    cut = text.rfind(" ", 0, size)
    return text[: cut if cut > size // 2 else size].rstrip()


# -- empty answers -----------------------------------------------------------------------------


def explain_empty(store: Store, options: RecallOptions, filters: Filters, best_seen: float | None) -> str:
    """Why nothing came back, in one or two sentences an agent can act on."""
    ns = options.namespace
    if store.count(ns) == 0:
        return f"Namespace {ns!r} holds no memories."
    if filters.session is not None and not store.listing(ns, Filters(session=filters.session), 1)[0]:
        return f"Namespace {ns!r} has no session {filters.session[:80]!r}."
    if filters.since is not None or filters.until is not None:
        inside = store.listing(ns, replace(filters, metadata=None), 1)[0]
        if not inside:
            before, after = store.nearest_times(ns, filters.since, filters.until)
            span = f"between {filters.since or 'the start'} and {filters.until or 'now'}"
            near = " and ".join(
                f"{w} {t[:16].replace('T', ' ')}"
                for w, t in (("before it on", before), ("after it on", after))
                if t
            )
            return f"No episode {span}" + (f"; the nearest are {near}." if near else ".")
    if filters.metadata and not store.listing(ns, filters, 1)[0]:
        return "No episode has the metadata asked for."
    if best_seen is not None and best_seen < options.min_score:
        return (
            f"Episodes matched, but the best scored {best_seen:.2f}, below min_score "
            f"{options.min_score:.2f}: "
            "lower min_score or reword the query."
        )
    if options.mode == "lexical":
        return "No episode holds the query's words (common words are not searched); try mode 'hybrid'."
    return "No episode matched."


# -- remember's helpers ------------------------------------------------------------------------


def nearest(store: Store, namespace: str, vector: Vectors, k: int, exclude: set[int]) -> list[Hit]:
    """The k events most similar to one vector (dim,), leaving out the seqs in `exclude`."""
    (matches,) = store.search(namespace, vector.reshape(1, -1), k + len(exclude), Filters())
    kept = [m for m in matches if m.event.seq not in exclude][:k]
    return [Hit(m.event, m.score, "prediction") for m in kept]


@dataclass(frozen=True, slots=True)
class Before:
    """What a new episode meets in the store: the memory it repeats, if any, and episodes on its subject."""

    duplicate: tuple[str, float] | None
    related: list[tuple[Event, float]]


RELATED_SEARCHED = 4


def before_storing(store: Store, namespace: str, texts: list[str], vectors: Vectors) -> list[Before]:
    """For each new episode (its text and vector (n, dim)): a stored memory it repeats, and related ones."""
    if len(vectors) == 0:
        return []
    found = store.search(namespace, np.ascontiguousarray(vectors), RELATED_SEARCHED, Filters())
    seqs = list(dict.fromkeys(m.event.seq for matches in found for m in matches))
    stored = store.events_at(namespace, seqs)
    out = []
    for text, vector, matches in zip(texts, vectors, found, strict=True):
        candidates = [stored[m.event.seq] for m in matches if m.event.seq in stored]
        twin = folding.duplicate_of(text, vector, candidates)
        duplicate = None
        if twin is not None:
            duplicate = (twin.id, round(float(stored[twin.seq][1] @ vector), 4))
        related = [(m.event, round(m.score, 4)) for m in matches if m.score >= RELATED_SIMILARITY]
        out.append(Before(duplicate, related))
    return out
