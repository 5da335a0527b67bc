"""Recall's weights, chosen on three development sets at once: every variant tried, every set reported.

The sets: the agent-work questions (benchmarks/agent_work.py, filled with and without
`supersedes`), a stratified sample of LongMemEval-S (benchmarks/longmemeval.py; its stores are kept
in benchmarks/cache/longmemeval) and the LoCoMo development conversations
(benchmarks/conversation_recall.py, both ingests). Each store is filled once; each variant then
sets retrieval's constants and asks every question again. A variant is a name and the constants it
changes; the first row is the defaults.

    .venv/bin/python benchmarks/tune_recall.py [--per-type 5] [--only "name;name"]

Writes results/tune_recall.{json,md}: one row per variant with every set's figures.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import agent_work
import conversation_recall as conv
import longmemeval as lme
import numpy as np
from common import DiskCachedEncoder, SqliteCachedEncoder, open_with_store, recall, remember, save
from locomo import Conversation, any_at, load

from emx_mcp import passages, retrieval
from emx_mcp.config import Settings
from emx_mcp.storage import lexical

# name -> {module.CONSTANT: value}
VARIANTS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "lexical: relative BM25 only (before)": {"lexical.COVERAGE_SHARE": 0.0, "lexical.TRUST": 1e-9},
    "lexical: coverage only": {"lexical.COVERAGE_SHARE": 1.0},
    "lexical: coverage 0.5, relative 0.5 trusted 0.3": {"lexical.COVERAGE_SHARE": 0.5},
    "lexical: coverage 0.7, relative 0.3 trusted 0.3": {"lexical.COVERAGE_SHARE": 0.7},
    "lexical: coverage 0.6, relative 0.4 untrusted": {"lexical.TRUST": 1e-9},
    "lexical: coverage 0.6, relative 0.4 trusted 0.5": {"lexical.TRUST": 0.5},
    "context share 0.7": {"lexical.CONTEXT_SHARE": 0.7},
    "semantic 0.5": {"retrieval.SEMANTIC_WEIGHT": 0.5},
    "semantic 0.7": {"retrieval.SEMANTIC_WEIGHT": 0.7},
    "recency off": {"retrieval.RECENCY_MARGIN": 0.0, "retrieval.CHANGE_MARGIN": 0.0},
    "recency 0.03": {"retrieval.RECENCY_MARGIN": 0.03},
    "recency 0.08": {"retrieval.RECENCY_MARGIN": 0.08},
    "change margin off": {"retrieval.CHANGE_MARGIN": 0.0},
    "recency without chains": {"retrieval.RECENCY_CHAINS": False},
    "subject 0.5": {"retrieval.SUBJECT_SIMILARITY": 0.5},
    "subject 0.7": {"retrieval.SUBJECT_SIMILARITY": 0.7},
    "question times as prior": {"retrieval.QUERY_WINDOWS": "prior"},
    "spread 0.02": {"retrieval.SESSION_SPREAD": 0.02},
    "spread 0.05": {"retrieval.SESSION_SPREAD": 0.05},
    "passages off": {"passages.PASSAGE_FROM": 10**9},
    "passages 1000/500": {"passages.PASSAGE_FROM": 1000, "passages.PASSAGE_CHARS": 500},
    "neighbour share 0.4": {"retrieval.NEIGHBOUR_SHARE": 0.4},
}
MODULES = {"retrieval": retrieval, "passages": passages, "lexical": lexical}


@contextmanager
def variant(changes: dict[str, Any]) -> Iterator[None]:
    saved = {}
    for name, value in changes.items():
        module, constant = name.split(".")
        saved[name] = getattr(MODULES[module], constant)
        setattr(MODULES[module], constant, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            module, constant = name.split(".")
            setattr(MODULES[module], constant, value)


# -- LoCoMo: both ingests, any@5 at the turn level, as conversation_recall.py counts it ----------


class Locomo:
    def __init__(self, convs: list[Conversation], work: Path) -> None:
        self.encoder = DiskCachedEncoder("conversations", "torch")
        self.runs: list[tuple[str, Conversation, Any, dict[str, conv.Place]]] = []
        for per in ("session", "turn"):
            for c in convs:
                service, _ = open_with_store(Settings(data_dir=work / f"{c.name}-{per}"), self.encoder)
                self.runs.append((per, c, service, self._ingest(service, c, per)))

    @staticmethod
    def _ingest(service: Any, c: Conversation, per: str) -> dict[str, conv.Place]:
        places: dict[str, conv.Place] = {}
        for session in c.sessions:
            name = f"s{session.number}"
            if per == "turn":
                for turn, (start, _) in zip(session.turns, session.spans, strict=True):
                    for e in remember(service, turn.line, timestamp=session.timestamp, session=name):
                        places[e.event.id] = (session, start)
                continue
            episodes = remember(service, session.text, timestamp=session.timestamp, session=name)
            cursor = 0
            for e in episodes:
                start = session.text.index(e.event.text, cursor)
                cursor = start + len(e.event.text)
                places[e.event.id] = (session, start)
        return places

    def measure(self) -> dict[str, float]:
        found: dict[str, list[float]] = {"session": [], "turn": []}
        for per, c, service, places in self.runs:
            for q in c.questions:
                hits = recall(service, q.text, k=10, contiguity=0, max_chars=50_000).hits
                rows = [conv.turns_shown(places, h.event.id, h.event.text, h.span) for h in hits]
                found[per].append(any_at(rows, q.evidence, 5))
        return {f"locomo {per} any@5": float(np.mean(v)) for per, v in found.items()}

    def close(self) -> None:
        for _, _, service, _ in self.runs:
            service.close()
        self.encoder.flush()


# -- LongMemEval sample -------------------------------------------------------------------------


class LongMemEval:
    def __init__(self, per_type: int) -> None:
        self.encoder = SqliteCachedEncoder("longmemeval", "onnx")
        self.questions = lme.load(lme.DATA, per_type)
        for q in self.questions:  # fill the stores that are not there yet
            service, _ = lme.open_store(q, self.encoder, reingest=False)
            service.close()

    def measure(self) -> dict[str, float]:
        report = lme.evaluate(self.questions, self.encoder, reingest=False)
        overall = report["overall"]
        out = {
            "lme turn any@5": overall["method"]["turn_any"],
            "lme session any@5": overall["method"]["session_any"],
            "lme baseline turn any@5": max(
                overall["minilm_turns"]["turn_any"], overall["bm25_turns"]["turn_any"]
            ),
            "lme sessions shown": overall["method"]["sessions_shown"],
        }
        later = overall.get("later_first")
        if later:
            out["lme later first"] = later["method"]
        return out


# -- agent work ---------------------------------------------------------------------------------


def measure_agent(data: dict[str, Any], encoder: DiskCachedEncoder) -> dict[str, float]:
    report = agent_work.evaluate(data, encoder)
    out: dict[str, float] = {}
    for name, r in report.items():
        short = "with" if name.startswith("with ") else "without"
        out[f"agent first ({short})"] = r["first"] / r["questions"]
        out[f"agent current above old ({short})"] = r["current_above_stale"] / max(1, r["changed_facts"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--per-type", type=int, default=5)
    parser.add_argument("--only", default="")
    args = parser.parse_args()
    chosen = {k: v for k, v in VARIANTS.items() if not args.only or k in args.only.split(";")}
    work = Path(tempfile.mkdtemp(prefix="emx-tune-"))
    agent_data = json.loads(agent_work.DATA.read_text())
    agent_encoder = DiskCachedEncoder("agent_work", "onnx")
    locomo = Locomo(load(conv.DATA), work)
    longmem = LongMemEval(args.per_type)
    rows: dict[str, dict[str, float]] = {}
    try:
        for name, changes in chosen.items():
            with variant(changes):
                row = measure_agent(agent_data, agent_encoder)
                row.update(longmem.measure())
                row.update(locomo.measure())
            rows[name] = row
            print(name, {k: round(v, 3) for k, v in row.items()}, flush=True)
    finally:
        locomo.close()
        agent_encoder.flush()
        shutil.rmtree(work, ignore_errors=True)
    save("tune_recall", {"variants": chosen, "rows": rows}, table(rows, chosen))


def table(rows: dict[str, dict[str, float]], variants: dict[str, dict[str, Any]]) -> str:
    columns = list(next(iter(rows.values())))
    lines = [
        "| variant | changes | " + " | ".join(columns) + " |",
        "| --- | --- |" + " ---: |" * len(columns),
    ]
    for name, row in rows.items():
        changes = ", ".join(f"{k.split('.')[1]}={v}" for k, v in variants[name].items()) or "-"
        lines.append(
            f"| {name} | {changes} | " + " | ".join(f"{row.get(c, float('nan')):.3f}" for c in columns) + " |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
