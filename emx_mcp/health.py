"""Typed store statistics in, one HealthReport out: one small rule per check.

A rule looks at the statistics and returns a Finding or None. The report's status is the worst
severity found ('note' findings add a reason without changing it); `index_health` and
`emx-mcp health` both show this report.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from emx_mcp.schemas import Capacity, DiskUse, HealthReport, ListSizes, TrainingInfo
from emx_mcp.storage.policy import TrainingPolicy
from emx_mcp.storage.store import StoreStats

CAPACITY_WARNING = 0.8

Severity = Literal["note", "warning", "degraded"]


@dataclass(frozen=True, slots=True)
class Limits:
    """The settings the rules compare against."""

    max_events: int
    policy: TrainingPolicy


@dataclass(frozen=True, slots=True)
class Finding:
    severity: Severity
    reason: str


Rule = Callable[[StoreStats, Limits], Finding | None]


def index_matches_log(stats: StoreStats, limits: Limits) -> Finding | None:
    if stats.index.vectors == stats.events_in_log:
        return None
    return Finding(
        "degraded", f"index holds {stats.index.vectors} vectors but the log {stats.events_in_log} events"
    )


def last_training_succeeded(stats: StoreStats, limits: Limits) -> Finding | None:
    error = stats.index.state.last_training_error
    if not error:
        return None
    retry = stats.index.training_retry_in
    after = "" if retry is None else f"; the next attempt in {retry:.0f} s at the earliest"
    return Finding("degraded", f"last training failed: {error}{after}")


def capacity_left(stats: StoreStats, limits: Limits) -> Finding | None:
    used = stats.events_in_store
    if used < CAPACITY_WARNING * limits.max_events:
        return None
    return Finding("warning", f"{used:,} of {limits.max_events:,} events (EMX_MAX_EVENTS) used")


def recall_on_target(stats: StoreStats, limits: Limits) -> Finding | None:
    recall = measured_recall(stats)
    target = limits.policy.target_recall
    if recall is None or recall >= target:
        return None
    return Finding("warning", f"measured recall@10 {recall} is below the target {target}")


def batch_kernels_loaded(stats: StoreStats, limits: Limits) -> Finding | None:
    status = stats.index.batch_kernels
    if not stats.index.trained or not status.startswith("unavailable"):
        return None
    return Finding("warning", f"batch search kernels {status}; FAISS answers batches, slower")


def log_integrity(stats: StoreStats, limits: Limits) -> Finding | None:
    if not stats.integrity.startswith("failed"):
        return None
    return Finding("degraded", f"the event log's SQLite integrity check {stats.integrity}")


def snapshot_written(stats: StoreStats, limits: Limits) -> Finding | None:
    if stats.snapshot_error is None:
        return None
    return Finding(
        "warning",
        f"the last index snapshot could not be written ({stats.snapshot_error}); the event log holds "
        "everything and a restart replays it",
    )


def retraining_in_progress(stats: StoreStats, limits: Limits) -> Finding | None:
    if stats.index.training_queued:
        return Finding(
            "note", "a training waits for another namespace's to finish; reads and writes continue"
        )
    if not stats.index.retraining:
        return None
    return Finding("note", "a retraining is in progress; reads and writes continue")


RULES: tuple[Rule, ...] = (
    index_matches_log,
    last_training_succeeded,
    capacity_left,
    recall_on_target,
    batch_kernels_loaded,
    log_integrity,
    snapshot_written,
    retraining_in_progress,
)


def measured_recall(stats: StoreStats) -> float | None:
    """Recall@10 as measured; 1.0 for an exact (flat) index."""
    return stats.index.state.measured_recall_at_10 if stats.index.trained else 1.0


def report(stats: StoreStats, limits: Limits) -> HealthReport:
    """The health report of one namespace: its index, the store around it, and the rules' findings."""
    findings = [f for rule in RULES if (f := rule(stats, limits)) is not None]
    severities = {f.severity for f in findings}
    status: Literal["ok", "warning", "degraded"] = (
        "degraded" if "degraded" in severities else "warning" if "warning" in severities else "ok"
    )
    index, state = stats.index, stats.index.state
    sizes = index.list_sizes
    policy = limits.policy
    return HealthReport(
        namespace=stats.namespace,
        store="milvus" if stats.store == "milvus" else "embedded",
        status=status,
        reasons=[f.reason for f in findings],
        kind="ivf" if index.trained else "flat",
        index_type=index.index_type,
        vectors=index.vectors,
        buffered=index.buffered,
        events_in_log=stats.events_in_log,
        train_at=policy.train_at,
        nlist=index.nlist,
        nprobe=index.nprobe,
        list_sizes=None
        if sizes is None
        else ListSizes(min=int(sizes.min()), mean=round(float(sizes.mean()), 1), max=int(sizes.max())),
        imbalance=index.imbalance,
        measured_recall_at_10=measured_recall(stats),
        recall_measured_at=state.recall_measured_at,
        recall_probes=state.recall_probes,
        target_recall=policy.target_recall,
        tuned_for_recall=round(policy.calibration_target(state.recall_probes), 4) if index.trained else None,
        training=None
        if not state.trainings
        else TrainingInfo(
            source="stored vectors",
            size=state.training_size,
            seconds=state.training_seconds,
            trained_at=state.trained_at,
            vectors_at_training=state.n_at_training,
            trainings=state.trainings,
        ),
        last_training_error=state.last_training_error,
        retraining=index.retraining,
        trainings_queued=stats.trainings_queued,
        batch_kernels=index.batch_kernels,
        bytes_in_memory=index.bytes_in_memory,
        bytes_on_disk=DiskUse(event_log=stats.event_log_bytes, index_snapshot=stats.snapshot_bytes),
        capacity=Capacity(
            events_in_store=stats.events_in_store,
            max_events=limits.max_events,
            used=round(stats.events_in_store / limits.max_events, 4),
        ),
        integrity=stats.integrity,
    )


def render(h: HealthReport) -> str:
    """The report as a few readable lines (what `emx-mcp health` prints)."""
    mb = 1024 * 1024
    lines = [f"namespace {h.namespace}: {h.status}"]
    lines += [f"  ! {reason}" for reason in h.reasons]
    index = f"ivf ({h.index_type}), nlist {h.nlist}, nprobe {h.nprobe}" if h.kind == "ivf" else "flat (exact)"
    lines.append(f"  index      {index}; {h.vectors:,} vectors ({h.buffered:,} in the exact buffer)")
    lines.append(f"  log        {h.events_in_log:,} events in this namespace; integrity {h.integrity}")
    if h.measured_recall_at_10 is not None:
        measured = f", measured {h.recall_measured_at} on {h.recall_probes} probes" if h.recall_probes else ""
        lines.append(f"  recall@10  {h.measured_recall_at_10} (target {h.target_recall}){measured}")
    if h.training is not None:
        t = h.training
        lines.append(
            f"  training   {t.size:,} {t.source} in {t.seconds} s at {t.trained_at}; {t.trainings} so far"
        )
    if h.retraining:
        lines.append("  retraining in progress")
    if h.encoder is not None:
        e = h.encoder
        state = "ready" if e.ready else "loading"
        lines.append(
            f"  encoder    {e.backend}, {state}; {e.batches:,} shared calls, {e.mean_batch} texts each"
        )
    c = h.capacity
    lines.append(
        f"  capacity   {c.events_in_store:,} of {c.max_events:,} events in all namespaces ({c.used:.1%})"
    )
    d = h.bytes_on_disk
    lines.append(
        f"  size       {h.bytes_in_memory / mb:.1f} MiB in memory; on disk {d.event_log / mb:.1f} MiB "
        f"event log, {d.index_snapshot / mb:.1f} MiB index snapshot"
    )
    return "\n".join(lines)
