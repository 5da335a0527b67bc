from __future__ import annotations

import math

import pytest

from emx_mcp.storage.policy import (
    MAX_POINTS_PER_CENTROID,
    MIN_POINTS_PER_CENTROID,
    TrainingPolicy,
    nlist_for,
    training_sample_size,
)


@pytest.mark.parametrize("n", [-5, 0, 1, 38, 39, 77])
def test_nlist_is_one_while_two_centroids_cannot_get_39_points(n: int) -> None:
    assert nlist_for(n) == 1


@pytest.mark.parametrize("n", [78, 100, 1_000, 20_000, 50_000, 400_000, 1_000_000, 10**9])
def test_nlist_follows_sqrt_n_and_never_exceeds_n_over_39(n: int) -> None:
    nlist = nlist_for(n)
    assert 2 <= nlist <= n // MIN_POINTS_PER_CENTROID
    assert nlist <= round(4 * math.sqrt(n))
    if n >= 24_336:  # from here on 4*sqrt(n) <= n/39, so sqrt is the binding limit
        assert nlist == round(4 * math.sqrt(n))


def test_nlist_grows_with_n() -> None:
    values = [nlist_for(n) for n in range(0, 200_000, 997)]
    assert values == sorted(values)


@pytest.mark.parametrize(
    ("n", "nlist", "expected"),
    [(0, 1, 0), (10, 1, 10), (1000, 25, 1000), (100_000, 1265, 100_000), (10**7, 12_649, 12_649 * 256)],
)
def test_training_sample_is_capped_at_256_per_centroid(n: int, nlist: int, expected: int) -> None:
    assert training_sample_size(n, nlist) == expected
    assert training_sample_size(n, nlist) <= MAX_POINTS_PER_CENTROID * nlist


def test_should_train_at_the_threshold_only_once() -> None:
    policy = TrainingPolicy(train_at=1000)
    assert not policy.should_train(0, trained=False)
    assert not policy.should_train(999, trained=False)
    assert policy.should_train(1000, trained=False)
    assert policy.should_train(10**9, trained=False)
    assert not policy.should_train(5000, trained=True)


def test_default_policy_goes_ivf_no_later_than_50k() -> None:
    assert TrainingPolicy().should_train(50_000, trained=False)


def test_should_retrain_on_doubling() -> None:
    policy = TrainingPolicy(train_at=1000)
    assert not policy.should_retrain(1999, 1000, imbalance=1.2, imbalance_at_training=1.2)
    assert policy.should_retrain(2000, 1000, imbalance=1.2, imbalance_at_training=1.2)
    assert not policy.should_retrain(5000, 0, imbalance=1.2, imbalance_at_training=1.2)


def test_should_retrain_on_drifting_balance_but_not_without_growth() -> None:
    policy = TrainingPolicy(train_at=1000)
    assert policy.should_retrain(1200, 1000, imbalance=2.0, imbalance_at_training=1.2)
    assert not policy.should_retrain(1200, 1000, imbalance=1.7, imbalance_at_training=1.2)
    # A naturally unbalanced store is not retrained over and over without new data.
    assert not policy.should_retrain(1050, 1000, imbalance=5.0, imbalance_at_training=1.2)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"train_at": 77},
        {"retrain_growth": 1.0},
        {"retrain_imbalance_growth": 0.9},
        {"target_recall": 0.0},
        {"target_recall": 1.5},
        {"probe_queries": 0},
    ],
)
def test_impossible_policies_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        TrainingPolicy(**kwargs)  # type: ignore[arg-type]


def test_calibration_target_adds_a_margin_that_shrinks_with_more_probes() -> None:
    policy = TrainingPolicy(target_recall=0.95)
    few, many = policy.calibration_target(100), policy.calibration_target(10_000)
    assert 0.95 < many < few <= 1.0
    assert few == pytest.approx(0.95 + 2 * math.sqrt(0.95 * 0.05 / 1000))
    assert TrainingPolicy(target_recall=1.0).calibration_target(500) == 1.0
