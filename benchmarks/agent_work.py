"""Recall on an agent's own work: does the right memory come first for the questions an agent asks?

The set (benchmarks/data/agent_work.json, invented for this benchmark) is three weeks of a coding
agent's memories about one project: the user's profile and preferences, design decisions, a
1,400-word meeting transcript, a failed deploy and its fix, an exact duplicate, near-identical
ticket numbers, and facts that changed. Each memory is stored with one `remember` (its session and
timestamp), through the real server and the SDK's in-memory client with the real model. Each
question is asked with `recall` and default settings, `now` set to the question's present.

A question is answered first when the first item is one of its expected memories (and holds the
phrase given for it, for a long memory such as the meeting, or where two memories answer); it is
in the answer when one of them is among the items (every one of them, for a listing). For a
changed fact, the current value must rank above the superseded one (absent counts as below).
The store is filled twice: once as an agent that says what a memory replaces (`supersedes`),
once as one that does not.

Arguments the server does not take (an older version) are left out of the calls, so the same
script measures the code before a change.

    .venv/bin/python benchmarks/agent_work.py

Writes results/agent_work.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import anyio
from common import DiskCachedEncoder, open_service, save
from mcp import Client

from emx_mcp.config import Settings
from emx_mcp.server import build_server

DATA = Path(__file__).resolve().parent / "data" / "agent_work.json"


async def call(client: Client, tool: str, accepted: set[str], **arguments: Any) -> dict[str, Any]:
    result = await client.call_tool(tool, {k: v for k, v in arguments.items() if k in accepted})
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


async def fill(
    client: Client, memories: list[dict[str, Any]], links: bool, takes: set[str]
) -> dict[str, str]:
    """Store every memory; return event id -> memory key."""
    ids: dict[str, list[str]] = {}
    owner: dict[str, str] = {}
    for memory in memories:
        extra: dict[str, Any] = {}
        if links and memory.get("supersedes"):
            extra["supersedes"] = [i for key in memory["supersedes"] for i in ids[key]]
        stored = await call(
            client,
            "remember",
            takes,
            text=memory["text"],
            session=memory["session"],
            timestamp=memory["timestamp"],
            **extra,
        )
        ids[memory["key"]] = stored["ids"]
        owner.update((i, memory["key"]) for i in stored["ids"])
    return owner


def judge(question: dict[str, Any], results: list[dict[str, Any]], owner: dict[str, str]) -> dict[str, Any]:
    keys = [owner.get(r["id"], "?") for r in results]
    expect, phrases = set(question["expect"]), question.get("contains", {})

    def right(i: int) -> bool:
        return keys[i] in expect and phrases.get(keys[i], "") in results[i]["text"]

    first = bool(results) and right(0)
    answered = expect <= set(keys) if question.get("listing") else any(right(i) for i in range(len(results)))
    out: dict[str, Any] = {"first": first, "answered": answered, "returned": keys}
    if question.get("stale"):
        current = next((i for i in range(len(keys)) if keys[i] in expect), len(keys) + 1)
        stale = next((i for i in range(len(keys)) if keys[i] in question["stale"]), len(keys) + 2)
        out["current_above_stale"] = current < stale
    return out


async def run(service: Any, data: dict[str, Any], links: bool) -> list[dict[str, Any]]:
    async with Client(build_server(service)) as client:
        tools = {t.name: set(t.input_schema["properties"]) for t in (await client.list_tools()).tools}
        owner = await fill(client, data["memories"], links, tools["remember"])
        out = []
        for question in data["questions"]:
            found = await call(
                client, "recall", tools["recall"], query=question["question"], now=question["now"]
            )
            out.append({**question, **judge(question, found["results"], owner)})
        return out


def evaluate(data: dict[str, Any], encoder: DiskCachedEncoder) -> dict[str, Any]:
    report: dict[str, Any] = {}
    for links in (True, False):
        work = Path(tempfile.mkdtemp(prefix="emx-agent-work-"))
        service = open_service(Settings(data_dir=work), encoder)
        try:
            answers = anyio.run(run, service, data, links)
        finally:
            service.close()
            shutil.rmtree(work, ignore_errors=True)
        changed = [a for a in answers if "current_above_stale" in a]
        report["with supersedes" if links else "without supersedes"] = {
            "questions": len(answers),
            "first": sum(a["first"] for a in answers),
            "answered": sum(a["answered"] for a in answers),
            "current_above_stale": sum(a["current_above_stale"] for a in changed),
            "changed_facts": len(changed),
            "answers": answers,
        }
    return report


def table(report: dict[str, Any]) -> str:
    lines = [
        "| store filled | questions | right memory first | in the answer | current value above the old |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, r in report.items():
        n = r["questions"]
        lines.append(
            f"| {name} | {n} | {r['first']} ({r['first'] / n:.0%}) "
            f"| {r['answered']} ({r['answered'] / n:.0%}) "
            f"| {r['current_above_stale']} of {r['changed_facts']} |"
        )
    kinds = sorted({a["kind"] for a in next(iter(report.values()))["answers"]})
    lines += ["", "| kind | " + " | ".join(report) + " |", "| --- |" + " ---: |" * len(report)]
    for kind in kinds:
        cells = []
        for r in report.values():
            of_kind = [a for a in r["answers"] if a["kind"] == kind]
            cells.append(f"{sum(a['first'] for a in of_kind)} of {len(of_kind)} first")
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    missed = [
        f"- {name}: {a['question']!r} gave {a['returned'][:4]}"
        for name, r in report.items()
        for a in r["answers"]
        if not a["first"]
    ]
    if missed:
        lines += ["", "Not first:", *missed]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args()
    data = json.loads(args.data.read_text())
    encoder = DiskCachedEncoder("agent_work", "onnx")
    try:
        report = evaluate(data, encoder)
    finally:
        encoder.flush()
    save("agent_work", report, table(report))


if __name__ == "__main__":
    main()
