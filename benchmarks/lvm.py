"""Does the next-episode predictor beat the baselines? Wikipedia and SOTU sessions, split by session.

For each corpus (see lvm_data.py) the predictor is trained exactly as `emx-mcp train-lvm` does
(default settings, 20% of sessions held out). On the held-out sessions, for the LVM, every blend
with copy-last, copy-last and analog: Hit@1/5/10 and MRR against the whole memory (context
excluded) with 95% bootstrap confidence intervals over sessions, the paired interval of the best
learned method minus copy-last, and in-batch Hit@5 (batches of 256, as published next-vector work
reports). Also: training time and `predict_next` latency through the in-memory MCP client.

    .venv/bin/python benchmarks/lvm.py
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import anyio
import numpy as np
from common import percentile, save
from lvm_data import build
from mcp import Client

from emx_mcp.lvm import evaluate, train
from emx_mcp.lvm.data import Session, split_sessions, windows
from emx_mcp.server import build_server
from emx_mcp.service import MemoryService

RESAMPLES = 1000


def bootstrap(ranked: dict[str, np.ndarray], sessions: list[str], rng: np.random.Generator) -> dict[str, Any]:
    """Point estimates and 95% intervals, resampling whole sessions; plus best-learned minus copy-last."""
    by_session: dict[str, list[int]] = defaultdict(list)
    for i, name in enumerate(sessions):
        by_session[name].append(i)
    names = list(by_session)
    draws: dict[str, list[dict[str, float]]] = {m: [] for m in ranked}
    for _ in range(RESAMPLES):
        picked = rng.choice(len(names), len(names), replace=True)
        rows = np.concatenate([by_session[names[p]] for p in picked])
        for method, r in ranked.items():
            draws[method].append(evaluate.summarize(r[rows]))
    out: dict[str, Any] = {}
    for method, r in ranked.items():
        point = evaluate.summarize(r)
        out[method] = {
            key: {
                "value": round(point[key], 4),
                "ci": [
                    round(percentile([d[key] for d in draws[method]], 2.5), 4),
                    round(percentile([d[key] for d in draws[method]], 97.5), 4),
                ],
            }
            for key in point
        }
    learned = [m for m in ranked if m not in ("copy_last", "analog")]
    best = max(learned, key=lambda m: out[m]["hit@5"]["value"])
    diffs = [a["hit@5"] - b["hit@5"] for a, b in zip(draws[best], draws["copy_last"], strict=True)]
    out["best_learned_minus_copy_last_hit@5"] = {
        "method": best,
        "value": round(out[best]["hit@5"]["value"] - out["copy_last"]["hit@5"]["value"], 4),
        "ci": [round(percentile(diffs, 2.5), 4), round(percentile(diffs, 97.5), 4)],
    }
    return out


async def latency(service: MemoryService, namespace: str, sessions: list[str]) -> dict[str, float]:
    async with Client(build_server(service)) as client:
        await client.call_tool("predict_next", {"session": sessions[0], "namespace": namespace})  # load model
        times = []
        for i in range(200):
            start = time.perf_counter()
            result = await client.call_tool(
                "predict_next", {"session": sessions[i % len(sessions)], "namespace": namespace}
            )
            times.append((time.perf_counter() - start) * 1000)
            assert not result.is_error, result.content
    return {"p50_ms": round(percentile(times, 50), 2), "p95_ms": round(percentile(times, 95), 2)}


def corpus(service: MemoryService, namespace: str, rng: np.random.Generator) -> dict[str, Any]:
    sessions = [Session(n, s, v) for n, s, v in service.event_log.sessions(namespace)]
    config = train.TrainConfig()
    print(
        f"{namespace}: {len(sessions)} sessions, {sum(len(s.seqs) for s in sessions)} episodes; training ...",
        flush=True,
    )
    model, outcome = train.train(sessions, config, progress=lambda m: print(f"  {m}", flush=True))
    train.save(service.predictors.path(namespace), model, outcome, service.encoder.model_id, config)
    _, held = split_sessions(sessions, config.validation, config.seed)
    val = windows(held, config.context)
    memory = evaluate.Memory.of(sessions)
    index = {s.name: i for i, s in enumerate(sessions)}
    model_pred = train.predict(model, val)
    predictions = {
        "copy_last": evaluate.copy_last(val),
        "analog": evaluate.analog(val, memory, index),
        **{
            ("lvm" if w == 1.0 else f"blend_{w}"): evaluate.blend(model_pred, val.last, w)
            for w in train.BLEND_WEIGHTS
        },
    }
    ranked = {m: evaluate.ranks(p, val, memory) for m, p in predictions.items()}
    stats = bootstrap(ranked, val.sessions, rng)
    for m, p in predictions.items():
        stats[m]["in_batch_hit@5"] = round(evaluate.in_batch_hit(p, val.targets, 5), 4)
    return {
        "sessions": len(sessions),
        "episodes": int(sum(len(s.seqs) for s in sessions)),
        "train_sessions": outcome.train_sessions,
        "validation_sessions": outcome.validation_sessions,
        "validation_windows": outcome.validation_windows,
        "best_epoch": outcome.best_epoch,
        "training_seconds": outcome.seconds,
        "chosen_method": outcome.method,
        "blend_weight": outcome.blend_weight,
        "metrics": stats,
        "predict_next_latency": anyio.run(latency, service, namespace, [s.name for s in held]),
    }


def table(report: dict[str, Any]) -> str:
    lines = []
    for name, r in report.items():
        lines += [
            f"**{name}**: {r['sessions']} sessions, {r['episodes']} episodes; "
            f"{r['train_sessions']} training / {r['validation_sessions']} validation sessions "
            f"({r['validation_windows']} validation examples); "
            f"training {r['training_seconds']} s (best epoch {r['best_epoch']}); predict_next p50 "
            f"{r['predict_next_latency']['p50_ms']} ms, p95 {r['predict_next_latency']['p95_ms']} ms; "
            f"chosen: **{r['chosen_method']}**",
            "",
            "| method | hit@1 | hit@5 | hit@10 | MRR | in-batch hit@5 |",
            "| --- | --- | --- | --- | --- | ---: |",
        ]
        for method, m in r["metrics"].items():
            if method.startswith("best_"):
                continue
            cells = [
                f"{m[k]['value']} [{m[k]['ci'][0]}, {m[k]['ci'][1]}]"
                for k in ("hit@1", "hit@5", "hit@10", "mrr")
            ]
            lines.append(f"| {method} | {' | '.join(cells)} | {m['in_batch_hit@5']} |")
        d = r["metrics"]["best_learned_minus_copy_last_hit@5"]
        lines += [
            "",
            f"{d['method']} minus copy-last, hit@5: {d['value']} [{d['ci'][0]}, {d['ci'][1]}] (paired, 95%)",
            "",
        ]
    return "\n".join(lines)


def main() -> None:
    rng = np.random.default_rng(0)
    work = Path(tempfile.mkdtemp(prefix="emx-lvm-"))
    try:
        service = build(work)
        report = {name: corpus(service, ns, rng) for name, ns in (("Wikipedia", "wiki"), ("SOTU", "sotu"))}
        service.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    save("lvm", report, table(report))


if __name__ == "__main__":
    main()
