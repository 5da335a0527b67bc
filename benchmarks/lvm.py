"""Does the next-episode predictor beat the baselines? Wikipedia and SOTU sessions, split by session.

For each corpus (see lvm_data.py) the sessions are split three ways, by whole sessions: 80% go to
`train.train`, which trains on most of them and picks the epoch and the method (model, blend or
baseline) on the rest (validation), exactly as `emx-mcp train-lvm` does; 20% are test sessions
that neither trained nor chose anything. On the test sessions, for the LVM, every blend with
copy-last, copy-last, analog, and the method validation chose: Hit@1/5/10 and MRR against the
whole memory of the corpus (context excluded) with 95% bootstrap intervals over sessions, the
paired interval of (chosen - copy-last), and in-batch Hit@5 (batches of 256, as published
next-vector work reports). Also: training time and `predict_next` latency through the in-memory
MCP client. `--alpha` takes one or more InfoNCE weights, each trained and reported in one run.

    .venv/bin/python benchmarks/lvm.py [--alpha 0.05 1.0]   (those two weights by default)
"""

from __future__ import annotations

import argparse
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
from emx_mcp.lvm.predictor import checkpoint_path
from emx_mcp.server import build_server
from emx_mcp.service import MemoryService
from emx_mcp.storage.embedded import EmbeddedStore

RESAMPLES = 1000
TEST_FRACTION = 0.2
TEST_SEED = 99


def bootstrap(ranked: dict[str, np.ndarray], sessions: list[str], rng: np.random.Generator) -> dict[str, Any]:
    """Point estimates and 95% intervals, resampling whole sessions; plus chosen minus copy-last."""
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
    diffs = [a["hit@5"] - b["hit@5"] for a, b in zip(draws["chosen"], draws["copy_last"], strict=True)]
    out["chosen_minus_copy_last_hit@5"] = {
        "value": round(out["chosen"]["hit@5"]["value"] - out["copy_last"]["hit@5"]["value"], 4),
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


def corpus(
    service: MemoryService, store: EmbeddedStore, namespace: str, alpha: float, rng: np.random.Generator
) -> dict[str, Any]:
    sessions = [Session(n, s, v) for n, s, v in store.sessions(namespace)]
    development, test = split_sessions(sessions, TEST_FRACTION, TEST_SEED)
    config = train.TrainConfig(alpha=alpha)
    print(
        f"{namespace}, alpha {alpha}: {len(sessions)} sessions; {len(development)} for training and "
        f"validation, {len(test)} for test; training ...",
        flush=True,
    )
    model, outcome = train.train(development, config, progress=lambda m: print(f"  {m}", flush=True))
    train.save(
        checkpoint_path(service.settings.data_dir, namespace), model, outcome, service.model_id, config
    )
    test_w = windows(test, config.context)
    memory = evaluate.Memory.of(sessions)
    index = {s.name: i for i, s in enumerate(sessions)}
    model_pred = train.predict(model, test_w)
    predictions = {
        "copy_last": evaluate.copy_last(test_w),
        "analog": evaluate.analog(test_w, memory, index),
        **{
            ("lvm" if w == 1.0 else f"blend_{w}"): evaluate.blend(model_pred, test_w.last, w)
            for w in train.BLEND_WEIGHTS
        },
    }
    chosen = (
        outcome.method
        if outcome.method in ("copy_last", "analog")
        else ("lvm" if outcome.blend_weight == 1.0 else f"blend_{outcome.blend_weight}")
    )
    predictions["chosen"] = predictions[chosen]
    ranked = {m: evaluate.ranks(p, test_w, memory) for m, p in predictions.items()}
    stats = bootstrap(ranked, test_w.sessions, rng)
    for m, p in predictions.items():
        stats[m]["in_batch_hit@5"] = round(evaluate.in_batch_hit(p, test_w.targets, 5), 4)
    return {
        "alpha": alpha,
        "sessions": len(sessions),
        "episodes": int(sum(len(s.seqs) for s in sessions)),
        "train_sessions": outcome.train_sessions,
        "validation_sessions": outcome.validation_sessions,
        "test_sessions": len(test),
        "test_windows": len(test_w),
        "best_epoch": outcome.best_epoch,
        "training_seconds": outcome.seconds,
        "chosen_method": chosen,
        "validation_hit@5": {m: round(v["hit@5"], 4) for m, v in outcome.metrics.items()},
        "test": stats,
        "predict_next_latency": anyio.run(latency, service, namespace, [s.name for s in test]),
    }


def table(report: dict[str, Any]) -> str:
    lines = []
    for name, r in report.items():
        val, lat = r["validation_hit@5"], r["predict_next_latency"]
        summary = [
            f"**{name}**: {r['sessions']} sessions,",
            f"{r['episodes']:,} episodes; {r['train_sessions']} training / {r['validation_sessions']}",
            f"validation / {r['test_sessions']} test sessions ({r['test_windows']:,} test examples);",
            f"training {r['training_seconds']} s",
            f"(best epoch {r['best_epoch']}); predict_next p50 {lat['p50_ms']} ms, p95 {lat['p95_ms']} ms.",
            f"Validation Hit@5: model {val['lvm']}, copy-last {val['copy_last']}, analog {val['analog']};",
            f"chosen: **{r['chosen_method']}**.",
        ]
        lines += [
            " ".join(summary),
            "",
            "| method (test sessions) | hit@1 | hit@5 | hit@10 | MRR | in-batch hit@5 |",
            "| --- | --- | --- | --- | --- | ---: |",
        ]
        for method, m in r["test"].items():
            if method.startswith("chosen"):
                continue
            cells = [
                f"{m[k]['value']} [{m[k]['ci'][0]}, {m[k]['ci'][1]}]"
                for k in ("hit@1", "hit@5", "hit@10", "mrr")
            ]
            lines.append(f"| {method} | {' | '.join(cells)} | {m['in_batch_hit@5']} |")
        d = r["test"]["chosen_minus_copy_last_hit@5"]
        lines += [
            "",
            f"chosen ({r['chosen_method']}) minus copy-last, test hit@5: {d['value']} "
            f"[{d['ci'][0]}, {d['ci'][1]}] (paired, 95%)",
            "",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--alpha", type=float, nargs="+", default=[train.TrainConfig().alpha, 1.0])
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    work = Path(tempfile.mkdtemp(prefix="emx-lvm-"))
    report = {}
    try:
        service, store = build(work)
        for alpha in args.alpha:
            for name, ns in (("Wikipedia", "wiki"), ("SOTU", "sotu")):
                report[f"{name}, alpha {alpha}"] = corpus(service, store, ns, alpha, rng)
        service.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    save("lvm", report, table(report))


if __name__ == "__main__":
    main()
