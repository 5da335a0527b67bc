"""Recall on real long conversations (LoCoMo): is the evidence in what the agent reads, and at what cost?

Each conversation goes into its own namespace two ways, through the MCP tools (the SDK's
in-memory client over the real server, with the real SQLite, FAISS and model):

- one `remember` per session: its turns as `Speaker: text` lines, the session's date as timestamp;
- one `remember` per turn, in the session it belongs to.

Every question of categories 1-4 is then asked with `recall` (k=10, contiguity 0) and scored at
the turn level: an item holds a turn when their character spans overlap. Reported for k = 1 to
10: evidence found (any / all of a question's evidence turns within the first k items),
session-level any@k, NDCG@10 (LongMemEval's definitions), turns read and tokens read (the
compact text block of the first k items, in characters / 4). In the same run, two baselines that
need no episodes read exactly as many turns, question by question, as the method did: exact
MiniLM search over single turns, and BM25 over single turns (SQLite FTS5 with Porter stemming).

"today" ranks by cosine similarity alone (`mode: semantic`, no minimum score), as the server did
before hybrid retrieval; "default" is what the server does now with default settings.

    .venv/bin/python benchmarks/conversation_recall.py [--data ../shared/data/locomo]

Writes results/conversation_recall.{json,md,png}. The data is read from --data, never copied.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import anyio
import numpy as np
from common import RESULTS, DiskCachedEncoder, open_with_store, save
from locomo import Conversation, Session, Turn, all_at, any_at, load, ndcg_at, session_of
from mcp import Client

from emx_mcp.config import Settings
from emx_mcp.rendering import item
from emx_mcp.schemas import RecalledEvent
from emx_mcp.server import build_server
from emx_mcp.storage import lexical

KS = (1, 2, 3, 5, 10)
CONFIGS: dict[str, dict[str, Any]] = {"today": {"mode": "semantic", "min_score": 0.0}, "default": {}}
INGESTS = ("session", "turn")
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "locomo"

Ranked = list[frozenset[str]]  # the turns each returned item holds, best first


async def call(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


def covered(session: Session, start: int, stop: int) -> frozenset[str]:
    return frozenset(
        t.id for t, (a, b) in zip(session.turns, session.spans, strict=True) if a < stop and b > start
    )


Place = tuple[Session, int]  # an episode's session and the offset of its text in the session's text


def turns_shown(places: dict[str, Place], event_id: str, text: str, span: Any) -> frozenset[str]:
    """The turns a returned item shows: its episode's, or only those its passage (span) overlaps."""
    session, start = places[event_id]
    first = start + (span[0] if span else 0)
    return covered(session, first, first + len(text))


async def ingest(client: Client, store: Any, conversation: Conversation, per: str) -> dict[str, Place]:
    """Store a conversation; return, for each stored item's id, where its text lies."""
    places: dict[str, Place] = {}
    for session in conversation.sessions:
        name = f"s{session.number}"
        if per == "turn":
            for turn, (start, _) in zip(session.turns, session.spans, strict=True):
                stored = await call(
                    client, "remember", text=turn.line, timestamp=session.timestamp, session=name
                )
                places.update((event_id, (session, start)) for event_id in stored["ids"])
            continue
        stored = await call(client, "remember", text=session.text, timestamp=session.timestamp, session=name)
        cursor = 0
        for event in store.events("default", stored["ids"]):  # episodes are slices of the text, in order
            start = session.text.index(event.text, cursor)
            cursor = start + len(event.text)
            places[event.id] = (session, start)
    return places


async def ask(
    client: Client, conversation: Conversation, config: dict[str, Any]
) -> list[list[dict[str, Any]]]:
    answers = []
    for question in conversation.questions:
        found = await call(
            client, "recall", query=question.text, k=10, contiguity=0, max_chars=50_000, **config
        )
        answers.append(found["results"])
    return answers


def tokens(items: list[dict[str, Any]]) -> float:
    return sum(len(item(RecalledEvent(**r))) + 1 for r in items) / 4


def run_conversation(
    conversation: Conversation, per: str, encoder: DiskCachedEncoder, work: Path
) -> dict[str, Any]:
    service, store = open_with_store(Settings(data_dir=work / f"{conversation.name}-{per}"), encoder)

    async def go() -> dict[str, Any]:
        async with Client(build_server(service)) as client:
            places = await ingest(client, store, conversation, per)
            return {name: (places, await ask(client, conversation, cfg)) for name, cfg in CONFIGS.items()}

    try:
        return anyio.run(go)
    finally:
        service.close()


# -- baselines over single turns ----------------------------------------------------------------


class TurnBaselines:
    """Exact MiniLM search and BM25 over the single turns of one conversation."""

    def __init__(self, conversation: Conversation, encoder: DiskCachedEncoder) -> None:
        self.turns: list[Turn] = [t for s in conversation.sessions for t in s.turns]
        self.vectors = encoder.encode([t.line for t in self.turns])
        self.queries = encoder.encode([q.text for q in conversation.questions])
        self.db = sqlite3.connect(":memory:")
        self.db.execute(lexical.SCHEMA.replace(lexical.TABLE, "turns"))
        self.db.executemany(
            "INSERT INTO turns (rowid, text, context) VALUES (?, ?, '')",
            enumerate(t.line for t in self.turns),
        )

    def dense(self, q: int, budget: int) -> Ranked:
        order = np.argsort(-(self.vectors @ self.queries[q]), kind="stable")[:budget]
        return [frozenset([self.turns[i].id]) for i in order]

    def bm25(self, question: str, budget: int) -> Ranked:
        words = lexical.terms(question)
        if not words or budget == 0:
            return []
        rows = self.db.execute(
            "SELECT rowid FROM turns WHERE turns MATCH ? ORDER BY bm25(turns) LIMIT ?",
            (lexical.match_expression(words), budget),
        ).fetchall()
        return [frozenset([self.turns[r[0]].id]) for r in rows]

    def line_chars(self, ranked: Ranked) -> int:
        lines = {t.id: t.line for t in self.turns}
        return sum(len(lines[next(iter(r))]) + 32 for r in ranked)  # a header line like the server's


# -- scoring ------------------------------------------------------------------------------------


def scores(ranked: list[Ranked], questions: list[Any], k: int) -> dict[str, float]:
    sessions = [[frozenset(session_of(t) for t in r) for r in rows] for rows in ranked]
    return {
        "any": float(np.mean([any_at(r, q.evidence, k) for r, q in zip(ranked, questions, strict=True)])),
        "all": float(np.mean([all_at(r, q.evidence, k) for r, q in zip(ranked, questions, strict=True)])),
        "session_any": float(
            np.mean(
                [
                    bool(frozenset(session_of(t) for t in q.evidence) & frozenset().union(*s[:k]))
                    for s, q in zip(sessions, questions, strict=True)
                ]
            )
        ),
        "turns": float(np.mean([len(frozenset().union(*r[:k])) for r in ranked])),
    }


def evaluate(convs: list[Conversation], encoder: DiskCachedEncoder, work: Path) -> dict[str, Any]:
    report: dict[str, Any] = {}
    baselines = {c.name: TurnBaselines(c, encoder) for c in convs}
    for per in INGESTS:
        runs = {c.name: run_conversation(c, per, encoder, work) for c in convs}
        for config in CONFIGS:
            ranked, items, questions, dense, bm25 = [], [], [], {k: [] for k in KS}, {k: [] for k in KS}
            base_tokens = {k: {"dense": [], "bm25": []} for k in KS}
            for c in convs:
                places, answers = runs[c.name][config]
                base = baselines[c.name]
                for q_index, (question, results) in enumerate(zip(c.questions, answers, strict=True)):
                    rows = [turns_shown(places, r["id"], r["text"], r.get("span")) for r in results]
                    ranked.append(rows)
                    items.append(results)
                    questions.append(question)
                    for k in KS:
                        budget = len(frozenset().union(*rows[:k]))
                        d, b = base.dense(q_index, budget), base.bm25(question.text, budget)
                        dense[k].append(d)
                        bm25[k].append(b)
                        base_tokens[k]["dense"].append(base.line_chars(d) / 4)
                        base_tokens[k]["bm25"].append(base.line_chars(b) / 4)
            rows_out = []
            for k in KS:
                own = scores(ranked, questions, k)
                own["tokens"] = float(np.mean([tokens(r[:k]) for r in items]))
                d = scores(dense[k], questions, len(max(dense[k], key=len)) or 1)
                b = scores(bm25[k], questions, len(max(bm25[k], key=len)) or 1)
                d["tokens"] = float(np.mean(base_tokens[k]["dense"]))
                b["tokens"] = float(np.mean(base_tokens[k]["bm25"]))
                rows_out.append({"k": k, "method": own, "minilm_turns": d, "bm25_turns": b})
            report[f"{per}/{config}"] = {
                "questions": len(questions),
                "ndcg_at_10": float(
                    np.mean([ndcg_at(r, q.evidence, 10) for r, q in zip(ranked, questions, strict=True)])
                ),
                "rows": rows_out,
            }
    return report


def table(report: dict[str, Any]) -> str:
    lines = [
        "| ingest | ranking | k | turns read | tokens read | evidence any@k | all@k | session any@k "
        "| NDCG@10 | MiniLM over turns, same turns: any | BM25 over turns, same turns: any "
        "| lead over the better baseline |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in report.items():
        per, config = name.split("/")
        for row in r["rows"]:
            if row["k"] not in (5, 10):
                continue
            m, d, b = row["method"], row["minilm_turns"], row["bm25_turns"]
            lead = m["any"] - max(d["any"], b["any"])
            lines.append(
                f"| one remember per {per} | {config} | {row['k']} | {m['turns']:.1f} | {m['tokens']:.0f} | "
                f"**{m['any']:.3f}** | {m['all']:.3f} | {m['session_any']:.3f} | {r['ndcg_at_10']:.3f} | "
                f"{d['any']:.3f} | {b['any']:.3f} | {lead:+.3f} |"
            )
    questions = next(iter(report.values()))["questions"]
    lines.append(f"\n{questions} questions (categories 1-4) over the conversations of --data.")
    return "\n".join(lines)


def plot(report: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, per in zip(axes, INGESTS, strict=True):
        for config in CONFIGS:
            rows = report[f"{per}/{config}"]["rows"]
            ax.plot(
                [r["method"]["tokens"] for r in rows],
                [r["method"]["any"] for r in rows],
                "o-",
                label=f"emx-mcp, {config}",
            )
        rows = report[f"{per}/default"]["rows"]
        for key, label in (
            ("minilm_turns", "MiniLM over single turns"),
            ("bm25_turns", "BM25 over single turns"),
        ):
            ax.plot([r[key]["tokens"] for r in rows], [r[key]["any"] for r in rows], "x--", label=label)
        ax.set_title(f"one remember per {per} (k = 1, 2, 3, 5, 10)")
        ax.set_xlabel("tokens the agent reads (characters / 4)")
        ax.set_xscale("log")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("evidence found in what was read (any)")
    axes[1].legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / "conversation_recall.png", dpi=120)


def evaluate_with(convs: list[Conversation], backend: str = "torch") -> dict[str, Any]:
    """The report with the model run by `backend` (see common.make_encoder); vectors cached on disk."""
    encoder = DiskCachedEncoder("conversations", backend)
    work = Path(tempfile.mkdtemp(prefix="emx-conversations-"))
    try:
        return evaluate(convs, encoder, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        encoder.flush()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args()
    report = evaluate_with(load(args.data))
    save("conversation_recall", report, table(report))
    plot(report)


if __name__ == "__main__":
    main()
