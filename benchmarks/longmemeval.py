"""Recall on long chat histories (LongMemEval-S, development split), beside per-turn baselines.

Each question has its own haystack of about 48 dated chat sessions. Every session is stored with
one `remember` (its turns as `user: ...` / `assistant: ...` lines, the session's date as
timestamp, its id as session) in a store of its own, kept under benchmarks/cache/longmemeval so
that a change of ranking needs no new ingest (`--reingest` after a change of segmentation). The
question is asked with `recall` at default settings and `now` = its question date.

Figures, per question type and overall, on the answer's first 5 items:
- session any@5: some answer session among the sessions of those items;
- turn any@5: some turn marked `has_answer` inside the text of those items (character spans
  overlap; a passage of an episode covers only its own span);
- for knowledge-update questions, "later first": an item of the later answer session comes before
  any item of the earlier one.

Baselines, computed in the same run at the same reading budget (the characters of the method's
first 5 items, question by question): exact MiniLM search over single turns, and BM25 over single
turns (SQLite FTS5, Porter stemming). Each reads turns best first until the next would pass the
budget (at least one).

    .venv/bin/python benchmarks/longmemeval.py [--per-type 5] [--reingest]
    .venv/bin/python benchmarks/longmemeval.py --ingest      # only fill the stores, stratified
    .venv/bin/python benchmarks/longmemeval.py --ingested    # only questions whose store is full

`--per-type N` takes the first N questions of each type (a stratified sample for iterating); the
default is all 135. Filling all stores takes about two hours here: `--ingest` fills them one
question type after another in turn (so that a run stopped early leaves a stratified set) and can
be stopped and resumed; `--ingested` then evaluates the questions whose store is complete.
Writes results/longmemeval.{json,md} (with --per-type or --ingested: longmemeval_sample).
The data is read from --data and never copied.
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import sqlite3
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from common import CACHE, SqliteCachedEncoder, open_with_store, recall, remember, save

from emx_mcp.config import Settings
from emx_mcp.schemas import RecallRequest
from emx_mcp.storage import lexical

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "longmemeval" / "dev.json.gz"
STORES = CACHE / "longmemeval"
K = 5


@dataclass(slots=True)
class Session:
    id: str
    name: str  # the session's name in the store: its id, or id~2 for a repeat in the same haystack
    timestamp: str
    turns: list[tuple[str, bool]]  # (line, has_answer)
    spans: list[tuple[int, int]] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "\n".join(line for line, _ in self.turns)

    def __post_init__(self) -> None:
        at = 0
        for line, _ in self.turns:
            self.spans.append((at, at + len(line)))
            at += len(line) + 1


@dataclass(slots=True)
class Question:
    id: str
    kind: str
    text: str
    now: str
    answer_sessions: list[str]
    sessions: list[Session]


def when(text: str) -> str:
    """'2023/05/20 (Sat) 07:47' as ISO 8601 (UTC: the data gives no zone)."""
    moment = datetime.strptime(text.split(" (")[0] + text.split(")")[1], "%Y/%m/%d %H:%M")
    return moment.strftime("%Y-%m-%dT%H:%M:00Z")


def load(path: Path, per_type: int | None) -> list[Question]:
    with gzip.open(path) as fh:
        raw = json.loads(fh.read())
    taken: dict[str, int] = defaultdict(int)
    out = []
    for q in raw:
        if per_type is not None and taken[q["question_type"]] >= per_type:
            continue
        taken[q["question_type"]] += 1
        seen: dict[str, int] = defaultdict(int)
        sessions = []
        for sid, date, turns in zip(
            q["haystack_session_ids"], q["haystack_dates"], q["haystack_sessions"], strict=True
        ):
            seen[sid] += 1
            name = sid if seen[sid] == 1 else f"{sid}~{seen[sid]}"
            lines = [(f"{t['role']}: {t['content']}", bool(t.get("has_answer"))) for t in turns]
            if lines:
                sessions.append(Session(sid, name, when(date), lines))
        out.append(
            Question(
                q["question_id"],
                q["question_type"],
                q["question"],
                when(q["question_date"]),
                list(q["answer_session_ids"]),
                sessions,
            )
        )
    return out


# -- the method: one store per question --------------------------------------------------------


def open_store(question: Question, encoder: SqliteCachedEncoder, reingest: bool) -> tuple[Any, Any]:
    folder = STORES / question.id
    done = folder / "ingested"
    if reingest or not done.exists():
        shutil.rmtree(folder, ignore_errors=True)
        service, store = open_with_store(Settings(data_dir=folder), encoder)
        for session in sorted(question.sessions, key=lambda s: s.timestamp):
            remember(service, session.text, session=session.name, timestamp=session.timestamp)
        done.write_text("yes\n")
        return service, store
    return open_with_store(Settings(data_dir=folder), encoder)


def episode_offsets(store: Any, question: Question) -> dict[str, tuple[Session, int]]:
    """Event id -> (its session, offset of its text in the session's text): episodes are exact slices."""
    out: dict[str, tuple[Session, int]] = {}
    for session in question.sessions:
        text, cursor = session.text, 0
        for event in store.session_events("default", session.name, 0, 10_000):
            start = text.index(event.text, cursor)
            cursor = start + len(event.text)
            out[event.id] = (session, start)
    return out


Item = tuple[str, frozenset[int], int]  # (session id, evidence turns covered (indexes), characters)


def items_of(hits: list[Any], offsets: dict[str, tuple[Session, int]]) -> list[Item]:
    out = []
    for hit in hits:
        session, start = offsets[hit.event.id]
        a = start + (hit.span[0] if getattr(hit, "span", None) else 0)
        b = a + len(hit.event.text)
        covered = frozenset(
            i
            for i, ((x, y), (_, ev)) in enumerate(zip(session.spans, session.turns, strict=True))
            if ev and x < b and y > a
        )
        out.append((session.id, covered, len(hit.event.text)))
    return out


# -- baselines over single turns ----------------------------------------------------------------


class TurnBaselines:
    def __init__(self, question: Question, encoder: SqliteCachedEncoder) -> None:
        self.turns = [(s.id, line, ev) for s in question.sessions for line, ev in s.turns]
        self.vectors = encoder.encode([line for _, line, _ in self.turns])
        self.query = encoder.encode([question.text])[0]
        self.db = sqlite3.connect(":memory:")
        self.db.execute(lexical.SCHEMA.replace(lexical.TABLE, "turns"))
        self.db.executemany(
            "INSERT INTO turns (rowid, text, context) VALUES (?, ?, '')",
            [(i, line) for i, (_, line, _) in enumerate(self.turns)],
        )

    def dense(self) -> list[int]:
        return np.argsort(-(self.vectors @ self.query), kind="stable").tolist()

    def bm25(self, text: str) -> list[int]:
        words = lexical.terms(text)
        if not words:
            return []
        rows = self.db.execute(
            "SELECT rowid FROM turns WHERE turns MATCH ? ORDER BY bm25(turns) LIMIT 200",
            (lexical.match_expression(words),),
        ).fetchall()
        return [r[0] for r in rows]

    def within(self, order: list[int], budget: int) -> list[Item]:
        out: list[Item] = []
        used = 0
        for i in order:
            session_id, line, evidence = self.turns[i]
            if out and used + len(line) > budget:
                break
            out.append((session_id, frozenset([i]) if evidence else frozenset(), len(line)))
            used += len(line)
        return out


# -- scoring ------------------------------------------------------------------------------------


def later_first(items: list[Item], question: Question) -> bool:
    dates = {s.id: s.timestamp for s in question.sessions}
    answer = sorted(question.answer_sessions, key=lambda s: dates.get(s, ""))
    if len(answer) < 2:
        return False
    earlier, later = answer[0], answer[-1]
    for session_id, _, _ in items:
        if session_id == later:
            return True
        if session_id == earlier:
            return False
    return False


def scores(items: list[Item], question: Question) -> dict[str, float]:
    sessions = list(dict.fromkeys(s for s, _, _ in items))[:K]
    return {
        "session_any": float(bool(set(sessions) & set(question.answer_sessions))),
        "turn_any": float(any(covered for _, covered, _ in items)),
        "chars": float(sum(n for _, _, n in items)),
        "items": float(len(items)),
        "sessions_shown": float(len(set(s for s, _, _ in items))),
    }


def ingested(question: Question) -> bool:
    return (STORES / question.id / "ingested").exists()


def ingest(questions: list[Question], encoder: SqliteCachedEncoder) -> None:
    """Fill the missing stores (and encode the baselines' turns), the question types in turn."""
    by_kind: dict[str, list[Question]] = defaultdict(list)
    for question in questions:
        by_kind[question.kind].append(question)
    queues = list(by_kind.values())
    order = [q[i] for i in range(max(map(len, queues))) for q in queues if i < len(q)]
    for n, question in enumerate(order, 1):
        if ingested(question):
            continue
        service, _ = open_store(question, encoder, reingest=False)
        service.close()
        TurnBaselines(question, encoder)
        encoder.flush()
        print(f"{n}/{len(order)} {question.kind} {question.id}", flush=True)


def evaluate(
    questions: list[Question], encoder: SqliteCachedEncoder, reingest: bool, **options: Any
) -> dict[str, Any]:
    per: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for question in questions:
        service, store = open_store(question, encoder, reingest)
        try:
            offsets = episode_offsets(store, question)
            when = {"now": question.now} if "now" in RecallRequest.model_fields else {}
            found = recall(service, question.text, **when, **options)
        finally:
            service.close()
        own = items_of(found.hits, offsets)[:K]
        budget = sum(n for _, _, n in own)
        base = TurnBaselines(question, encoder)
        rows = {
            "method": own,
            "minilm_turns": base.within(base.dense(), budget),
            "bm25_turns": base.within(base.bm25(question.text), budget),
        }
        result: dict[str, Any] = {"id": question.id, "kind": question.kind}
        for name, items in rows.items():
            result[name] = scores(items, question)
            if question.kind == "knowledge-update":
                all_items = items_of(found.hits, offsets) if name == "method" else items
                result[name]["later_first"] = float(later_first(all_items, question))
        per[question.kind].append(result)
    return summarise(per)


def summarise(per: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    kinds = {**per, "overall": [r for rows in per.values() for r in rows]}
    report: dict[str, Any] = {}
    for kind, rows in kinds.items():
        report[kind] = {"questions": len(rows)}
        for name in ("method", "minilm_turns", "bm25_turns"):
            keys = rows[0][name].keys() if rows else []
            report[kind][name] = {
                key: float(np.mean([r[name][key] for r in rows if key in r[name]])) for key in keys
            }
        ku = [r for r in rows if "later_first" in r["method"]]
        if ku:
            report[kind]["later_first"] = {
                name: float(np.mean([r[name]["later_first"] for r in ku]))
                for name in ("method", "minilm_turns", "bm25_turns")
            }
    report["questions"] = [r for rows in per.values() for r in rows]
    return report


def table(report: dict[str, Any]) -> str:
    lines = [
        "| question type | questions | session any@5 | turn any@5 | MiniLM turns: session / turn | "
        "BM25 turns: session / turn | turn lead over the better baseline | chars read | sessions shown |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    order = [*sorted(k for k in report if k not in ("overall", "questions")), "overall"]
    for kind in order:
        r = report[kind]
        m, d, b = r["method"], r["minilm_turns"], r["bm25_turns"]
        lead = m["turn_any"] - max(d["turn_any"], b["turn_any"])
        lines.append(
            f"| {kind} | {r['questions']} | {m['session_any']:.3f} | **{m['turn_any']:.3f}** | "
            f"{d['session_any']:.3f} / {d['turn_any']:.3f} | {b['session_any']:.3f} / {b['turn_any']:.3f} | "
            f"{lead:+.3f} | {m['chars']:.0f} | {m['sessions_shown']:.1f} |"
        )
    later = report["overall"].get("later_first")
    if later:
        lines.append(
            f"\nKnowledge-update questions, later answer session ranked above the earlier one: "
            f"method {later['method']:.2f}, MiniLM turns {later['minilm_turns']:.2f}, "
            f"BM25 turns {later['bm25_turns']:.2f}."
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--per-type", type=int, default=None)
    parser.add_argument("--reingest", action="store_true")
    parser.add_argument("--ingest", action="store_true", help="only fill the stores")
    parser.add_argument("--ingested", action="store_true", help="only questions whose store is full")
    args = parser.parse_args()
    questions = load(args.data, args.per_type)
    encoder = SqliteCachedEncoder("longmemeval", "onnx")
    try:
        if args.ingest:
            ingest(questions, encoder)
            return
        if args.ingested:
            questions = [q for q in questions if ingested(q)]
        report = evaluate(questions, encoder, args.reingest)
    finally:
        encoder.flush()
    name = "longmemeval" if args.per_type is None and not args.ingested else "longmemeval_sample"
    save(name, report, table(report))


if __name__ == "__main__":
    main()
