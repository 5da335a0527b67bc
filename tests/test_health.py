"""Each health rule on its own, and the report they make together."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

from emx_mcp import health
from emx_mcp.storage.index import IndexState, IndexStats
from emx_mcp.storage.policy import TrainingPolicy
from emx_mcp.storage.store import StoreStats

LIMITS = health.Limits(max_events=1000, policy=TrainingPolicy(target_recall=0.95))


def stats(
    index: dict[str, Any] | None = None, state: dict[str, Any] | None = None, **store: Any
) -> StoreStats:
    """A healthy trained namespace of 100 events, with the given fields changed."""
    index_stats = IndexStats(
        trained=True,
        index_type="ivf_flat",
        vectors=100,
        buffered=4,
        nlist=10,
        nprobe=3,
        list_sizes=np.full(10, 9, dtype=np.int64),
        imbalance=1.0,
        state=IndexState(nprobe=3, measured_recall_at_10=0.96, recall_probes=100, trainings=1),
        retraining=False,
        batch_kernels="ready",
        bytes_in_memory=1000,
        batch_searches=0,
        training_queued=False,
        training_retry_in=None,
    )
    index_stats = dataclasses.replace(
        index_stats, **(index or {}), state=dataclasses.replace(index_stats.state, **(state or {}))
    )
    fields: dict[str, Any] = {
        "namespace": "default",
        "index": index_stats,
        "events_in_log": 100,
        "events_in_store": 100,
        "event_log_bytes": 10,
        "snapshot_bytes": 10,
        "integrity": "ok",
        "snapshot_error": None,
        "trainings_queued": 0,
    }
    return StoreStats(**{**fields, **store})


def test_a_healthy_namespace_has_no_findings() -> None:
    assert [rule(stats(), LIMITS) for rule in health.RULES] == [None] * len(health.RULES)
    report = health.report(stats(), LIMITS)
    assert report.status == "ok" and report.reasons == []


@pytest.mark.parametrize(
    ("rule", "sick", "severity", "words"),
    [
        (
            health.index_matches_log,
            stats(events_in_log=99),
            "degraded",
            "index holds 100 vectors but the log 99",
        ),
        (health.last_training_succeeded, stats(state={"last_training_error": "boom"}), "degraded", "boom"),
        (health.capacity_left, stats(events_in_store=800), "warning", "800 of 1,000 events"),
        (health.recall_on_target, stats(state={"measured_recall_at_10": 0.9}), "warning", "0.9 is below"),
        (
            health.batch_kernels_loaded,
            stats(index={"batch_kernels": "unavailable: no numba"}),
            "warning",
            "no numba",
        ),
        (health.log_integrity, stats(integrity="failed: page 3"), "degraded", "page 3"),
        (health.snapshot_written, stats(snapshot_error="disk full"), "warning", "disk full"),
        (health.retraining_in_progress, stats(index={"retraining": True}), "note", "retraining"),
    ],
)
def test_each_rule_finds_its_problem(rule: health.Rule, sick: StoreStats, severity: str, words: str) -> None:
    assert rule(stats(), LIMITS) is None
    finding = rule(sick, LIMITS)
    assert finding is not None and finding.severity == severity and words in finding.reason


def test_rules_that_do_not_apply_to_a_flat_index() -> None:
    flat = stats(
        index={"trained": False, "batch_kernels": "unavailable: x"}, state={"measured_recall_at_10": None}
    )
    assert health.recall_on_target(flat, LIMITS) is None  # exact search has recall 1
    assert health.batch_kernels_loaded(flat, LIMITS) is None  # a flat index has no use for them
    assert health.report(flat, LIMITS).measured_recall_at_10 == 1.0


def test_the_worst_finding_sets_the_status_and_notes_do_not() -> None:
    assert health.report(stats(index={"retraining": True}), LIMITS).status == "ok"
    assert health.report(stats(events_in_store=900), LIMITS).status == "warning"
    both = health.report(stats(events_in_store=900, integrity="failed: x"), LIMITS)
    assert both.status == "degraded" and len(both.reasons) == 2


def test_the_readable_rendering_shows_status_and_reasons() -> None:
    text = health.render(health.report(stats(events_in_store=900), LIMITS))
    assert text.startswith("namespace default: warning") and "! 900 of 1,000 events" in text
    assert "ivf (ivf_flat), nlist 10, nprobe 3" in text
