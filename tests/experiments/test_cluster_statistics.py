"""Intervals over replicates (proof-baselines §5, invariants B11 and B12)."""

from __future__ import annotations

import json
import math
import random
import statistics
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.experiments.cluster_statistics import (
    ClusterInterval,
    bonferroni_level,
    cluster_comparison,
    cluster_median,
    cluster_paired_difference,
    replicate_t_interval,
    status_against_zero,
    wider_interval,
)
from services.experiments.statistics import bootstrap_interval, paired_difference

TRUE_MEAN = 0.3


def _simulated(replicates: int, pairs: int, datasets: int, seed: int) -> Iterator[dict[int, list[float]]]:
    """Paired differences with a replicate effect as large as the pair noise (intra-class correlation 0.5)."""
    rng = random.Random(seed)
    for _ in range(datasets):
        shifts = [rng.gauss(0.0, 1.0) for _ in range(replicates)]
        yield {r: [TRUE_MEAN + shifts[r] + rng.gauss(0.0, 1.0) for _ in range(pairs)] for r in range(replicates)}


def _covers(interval: ClusterInterval) -> bool:
    return interval.low <= TRUE_MEAN <= interval.high


def test_bonferroni_level_for_the_four_primary_comparisons() -> None:
    assert bonferroni_level(4) == 0.9875
    assert bonferroni_level(1) == 0.95
    assert bonferroni_level(2, alpha=0.1) == 0.95
    with pytest.raises(ValueError):
        bonferroni_level(0)


finite = st.floats(-100, 100, allow_nan=False)


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.tuples(finite, finite), min_size=1, max_size=12), st.integers(0, 2**16), st.sampled_from([0.9, 0.95])
)
def test_one_pair_per_replicate_equals_the_paired_bootstrap(
    pairs: list[tuple[float, float]], seed: int, level: float
) -> None:
    treatment, control = [t for t, _ in pairs], [c for _, c in pairs]
    paired = paired_difference(treatment, control, confidence=level, seed=seed)
    # Insert replicates in reverse: the cluster bootstrap orders them by id, as the paired lists are.
    by_replicate = {r: [treatment[r] - control[r]] for r in reversed(range(len(pairs)))}
    cluster = cluster_paired_difference(by_replicate, level, resamples=2000, seed=seed)
    assert (cluster.estimate, cluster.low, cluster.high, cluster.n) == (paired.mean, paired.low, paired.high, paired.n)


def test_used_interval_covers_the_true_mean_at_five_replicates() -> None:
    comparisons = [
        cluster_comparison(data, 0.95, resamples=1000, seed=i) for i, data in enumerate(_simulated(5, 4, 200, seed=2))
    ]
    coverage = statistics.fmean(_covers(c.used) for c in comparisons)
    assert 0.90 <= coverage <= 0.99, coverage


def test_cluster_bootstrap_covers_the_true_mean_with_many_replicates() -> None:
    intervals = [
        cluster_paired_difference(data, 0.95, resamples=500, seed=i)
        for i, data in enumerate(_simulated(15, 2, 200, seed=2))
    ]
    coverage = statistics.fmean(_covers(interval) for interval in intervals)
    assert 0.90 <= coverage <= 0.99, coverage


def test_the_coverage_check_catches_a_bootstrap_that_ignores_replicates() -> None:
    # Pooling correlated pairs as if independent is the mistake the cluster bootstrap exists to avoid.
    pooled = [
        bootstrap_interval([v for group in data.values() for v in group], resamples=500, seed=i)
        for i, data in enumerate(_simulated(5, 8, 200, seed=2))
    ]
    coverage = statistics.fmean(interval.low <= TRUE_MEAN <= interval.high for interval in pooled)
    assert coverage < 0.90, coverage


def test_t_interval_on_replicate_means_matches_the_table() -> None:
    # Replicate means 1, 2, 3 (unequal pair counts): s = 1, t(0.975, 2 dof) = 4.303 from the table.
    interval = replicate_t_interval({7: [1.0], 3: [1.5, 2.5], 9: [2.0, 3.0, 4.0]}, 0.95)
    half = 4.303 / math.sqrt(3)
    assert interval.estimate == 2.0 and interval.n == 6 and interval.replicates == 3
    assert interval.low == pytest.approx(2.0 - half, abs=1e-3) and interval.high == pytest.approx(2.0 + half, abs=1e-3)


def test_t_interval_is_undefined_below_two_replicates() -> None:
    interval = replicate_t_interval({0: [0.5, 1.5, 1.0]}, 0.95)
    assert math.isnan(interval.low) and math.isnan(interval.high) and not interval.defined
    assert json.loads(json.dumps(interval.as_dict(), allow_nan=False))["low"] is None


def test_a_single_replicate_can_never_pass() -> None:
    comparison = cluster_comparison({0: [5.0, 5.5, 6.0, 5.2]}, 0.95, resamples=500)
    assert comparison.bootstrap.low > 0  # the within-replicate bootstrap alone would claim a pass
    assert comparison.bootstrap.low < comparison.bootstrap.high  # pairs are resampled inside the replicate
    assert comparison.used is comparison.t_interval and comparison.status == "inconclusive"
    assert math.isnan(comparison.minimum_detectable_effect)
    json.dumps(comparison.as_dict(), allow_nan=False)


def test_comparison_uses_the_wider_interval() -> None:
    # Three replicates: the bootstrap can only mix three means, the t-interval's 4.3 multiplier is far wider.
    data = {0: [0.1, 0.2, 0.15], 1: [0.3, 0.25, 0.35], 2: [0.05, 0.1, 0.0]}
    comparison = cluster_comparison(data, 0.95, resamples=2000)
    assert comparison.t_interval.width > comparison.bootstrap.width
    assert comparison.used == comparison.t_interval and comparison.as_dict()["used"] == "replicate_t"
    assert comparison.status == "inconclusive"  # the bootstrap alone would pass: its lower bound is above 0
    assert comparison.bootstrap.low > 0


def _interval(low: float, high: float, method: str = "cluster_bootstrap") -> ClusterInterval:
    return ClusterInterval(0.0, low, high, 10, 5, 0.95, "replicate_t" if method == "t" else "cluster_bootstrap")


def test_wider_interval_prefers_width_then_the_undefined_then_the_first() -> None:
    narrow, wide = _interval(0.1, 0.2), _interval(0.0, 0.4, "t")
    assert wider_interval(narrow, wide) is wide and wider_interval(wide, narrow) is wide
    undefined = _interval(math.nan, math.nan, "t")
    assert wider_interval(wide, undefined) is undefined and wider_interval(undefined, wide) is undefined
    same = _interval(0.1, 0.2, "t")
    assert wider_interval(narrow, same) is narrow


@settings(max_examples=40, deadline=None)
@given(
    st.dictionaries(st.integers(0, 20), st.lists(finite, min_size=1, max_size=5), min_size=2, max_size=6),
    st.integers(0, 1000),
)
def test_comparison_status_and_power_follow_the_used_interval(data: dict[int, list[float]], seed: int) -> None:
    comparison = cluster_comparison(data, 0.95, resamples=200, seed=seed)
    used = comparison.used
    assert used.width == max(comparison.bootstrap.width, comparison.t_interval.width)
    expected = "pass" if used.low > 0 else "fail" if used.high < 0 else "inconclusive"
    assert comparison.status == expected == status_against_zero(used)
    means = [statistics.fmean(group) for group in data.values()]
    t_error = statistics.stdev(means) / math.sqrt(len(means))
    assert comparison.standard_error >= t_error - 1e-12
    assert comparison.minimum_detectable_effect == 2.8 * comparison.standard_error
    json.dumps(comparison.as_dict(), allow_nan=False)


def test_clear_effects_pass_and_fail() -> None:
    rng = random.Random(5)
    better = {r: [1.0 + rng.gauss(0, 0.1) for _ in range(8)] for r in range(5)}
    worse = {r: [-v for v in values] for r, values in better.items()}
    assert cluster_comparison(better, bonferroni_level(4), resamples=1000).status == "pass"
    assert cluster_comparison(worse, bonferroni_level(4), resamples=1000).status == "fail"


def test_primary_level_is_recorded_and_widens_the_interval() -> None:
    data = next(_simulated(6, 8, 1, seed=9))
    primary = cluster_comparison(data, bonferroni_level(4), resamples=2000)
    secondary = cluster_comparison(data, 0.95, resamples=2000)
    assert primary.level == primary.used.level == 0.9875 and secondary.level == 0.95
    assert primary.used.width > secondary.used.width


def test_same_seed_same_interval_and_insertion_order_does_not_matter() -> None:
    data = next(_simulated(4, 5, 1, seed=3))
    reordered = dict(reversed(list(data.items())))
    assert cluster_paired_difference(data, 0.95, resamples=500, seed=4) == cluster_paired_difference(
        reordered, 0.95, resamples=500, seed=4
    )
    assert cluster_paired_difference(data, 0.95, resamples=500, seed=4) != cluster_paired_difference(
        data, 0.95, resamples=500, seed=5
    )


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(0, 10, allow_nan=False) | st.just(math.inf), min_size=1, max_size=10), st.integers(0, 999))
def test_median_with_one_value_per_replicate_is_the_plain_median_bootstrap(values: list[float], seed: int) -> None:
    interval = cluster_median({r: [v] for r, v in enumerate(values)}, 0.95, resamples=500, seed=seed)
    rng = random.Random(seed)
    draws = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(500))
    assert interval.estimate == statistics.median(values) and interval.statistic == "median"
    assert (interval.low, interval.high) == (draws[int(0.025 * 499)], draws[int(0.975 * 499)])


def test_median_of_ratios_with_censored_pairs() -> None:
    mostly_reached = {0: [0.5, 0.6, math.inf], 1: [0.7, 0.55, 0.65], 2: [0.6, 0.8, 0.5], 3: [0.45, 0.6, 0.7]}
    interval = cluster_median(mostly_reached, bonferroni_level(4), resamples=2000)
    assert interval.estimate == 0.6 and interval.high < 1.0
    mostly_censored = {0: [math.inf, math.inf, 0.5], 1: [math.inf, 0.4, math.inf], 2: [math.inf, math.inf, math.inf]}
    censored = cluster_median(mostly_censored, 0.95, resamples=2000)
    assert censored.estimate == math.inf and censored.high == math.inf
    as_json = json.loads(json.dumps(censored.as_dict(), allow_nan=False))
    assert as_json["estimate"] is None and as_json["high"] is None


def test_inputs_are_checked() -> None:
    with pytest.raises(ValueError, match="at least one replicate"):
        cluster_paired_difference({}, 0.95)
    with pytest.raises(ValueError, match="empty"):
        cluster_paired_difference({0: [1.0], 1: []}, 0.95)
    with pytest.raises(ValueError, match="NaN"):
        cluster_median({0: [math.nan]}, 0.95)
    with pytest.raises(ValueError, match="level"):
        cluster_comparison({0: [1.0], 1: [2.0]}, 1.5)
