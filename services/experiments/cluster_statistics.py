"""Intervals over replicates: pairs inside a replicate share one trained policy, so the replicate is the unit.

Proof-baselines §5: a two-level cluster bootstrap and a t-interval on replicate means; the verdict uses the wider.
The bootstrap's percentile rule is the one in `services.experiments.statistics`, so one pair per replicate gives
exactly that module's paired bootstrap for the same seed and resample count.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from scipy import stats

# An effect of 2.8 standard errors is detected with 80 % power by a two-sided 5 % test (1.96 + 0.84).
DETECTABLE_EFFECT_IN_STANDARD_ERRORS = 2.8

Status = Literal["pass", "fail", "inconclusive"]
Groups = list[list[float]]


def _json_number(value: float, digits: int) -> float | None:
    """JSON has no ∞ or NaN: an unbounded or undefined figure becomes null."""
    return round(value, digits) if math.isfinite(value) else None


@dataclass(frozen=True)
class ClusterInterval:
    """A point estimate of `statistic` with its `level` interval over `n` pairs in `replicates` replicates.

    NaN bounds mean the interval is undefined (a t-interval on fewer than two replicates).
    """

    estimate: float
    low: float
    high: float
    n: int
    replicates: int
    level: float
    method: Literal["cluster_bootstrap", "replicate_t"]
    statistic: Literal["mean", "median"] = "mean"

    @property
    def width(self) -> float:
        return self.high - self.low

    @property
    def defined(self) -> bool:
        return not (math.isnan(self.low) or math.isnan(self.high))

    def as_dict(self, digits: int = 4) -> dict[str, float | int | str | None]:
        return {
            "estimate": _json_number(self.estimate, digits),
            "low": _json_number(self.low, digits),
            "high": _json_number(self.high, digits),
            "n": self.n,
            "replicates": self.replicates,
            "level": self.level,
            "method": self.method,
            "statistic": self.statistic,
        }

    def __str__(self) -> str:
        return f"{self.estimate:.3f} [{self.low:.3f}, {self.high:.3f}]"


def bonferroni_level(m: int, alpha: float = 0.05) -> float:
    """Per-comparison confidence level for m declared comparisons at family-wise error alpha."""
    if m < 1:
        raise ValueError(f"a family holds at least one comparison, got m={m}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha is a probability strictly between 0 and 1, got {alpha}")
    return 1.0 - alpha / m


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"a confidence level lies strictly between 0 and 1, got {level}")


def _groups(values_by_replicate: Mapping[int, Sequence[float]]) -> Groups:
    """Replicates in sorted id order, so the same data and seed always give the same interval."""
    if not values_by_replicate:
        raise ValueError("an interval over replicates needs at least one replicate")
    groups = [[float(v) for v in values_by_replicate[replicate]] for replicate in sorted(values_by_replicate)]
    empty = [replicate for replicate, group in zip(sorted(values_by_replicate), groups, strict=True) if not group]
    if empty:
        raise ValueError(f"every replicate needs at least one pair; empty: {empty}")
    if any(math.isnan(v) for group in groups for v in group):
        raise ValueError("values must not be NaN")
    return groups


def _resampled_statistics(
    groups: Groups, statistic: Callable[[list[float]], float], resamples: int, seed: int
) -> list[float]:
    """Sorted statistics of `resamples` two-level draws: replicates with replacement, then pairs within each.

    A one-pair replicate is taken as is: drawing from one value always gives it, and skipping the draw keeps the
    random stream identical to a plain bootstrap over pairs.
    """
    if resamples < 1:
        raise ValueError(f"a bootstrap needs at least one resample, got {resamples}")
    rng = random.Random(seed)
    draws: list[float] = []
    for _ in range(resamples):
        pooled: list[float] = []
        for group in rng.choices(groups, k=len(groups)):
            pooled.extend(group if len(group) == 1 else rng.choices(group, k=len(group)))
        draws.append(statistic(pooled))
    return sorted(draws)


def _percentile_bounds(sorted_draws: list[float], level: float) -> tuple[float, float]:
    """The percentile rule of `statistics.bootstrap_interval`, so the two modules agree draw for draw."""
    tail = (1.0 - level) / 2.0
    last = len(sorted_draws) - 1
    return sorted_draws[int(tail * last)], sorted_draws[int((1.0 - tail) * last)]


def _bootstrap(
    groups: Groups,
    statistic: Callable[[list[float]], float],
    name: Literal["mean", "median"],
    level: float,
    resamples: int,
    seed: int,
) -> tuple[ClusterInterval, list[float]]:
    _check_level(level)
    draws = _resampled_statistics(groups, statistic, resamples, seed)
    low, high = _percentile_bounds(draws, level)
    pooled = [v for group in groups for v in group]
    interval = ClusterInterval(statistic(pooled), low, high, len(pooled), len(groups), level, "cluster_bootstrap", name)
    return interval, draws


def cluster_paired_difference(
    diffs_by_replicate: Mapping[int, Sequence[float]], level: float, resamples: int = 10_000, seed: int = 0
) -> ClusterInterval:
    """Cluster-bootstrap percentile interval of the mean paired difference over all pairs."""
    return _bootstrap(_groups(diffs_by_replicate), statistics.fmean, "mean", level, resamples, seed)[0]


def cluster_median(
    values_by_replicate: Mapping[int, Sequence[float]], level: float, resamples: int = 10_000, seed: int = 0
) -> ClusterInterval:
    """Cluster-bootstrap percentile interval of the median; ∞ values (censored ratios) sort last and may be a bound."""
    return _bootstrap(_groups(values_by_replicate), statistics.median, "median", level, resamples, seed)[0]


def _replicate_means(groups: Groups) -> list[float]:
    return [statistics.fmean(group) for group in groups]


def _t_standard_error(means: list[float]) -> float:
    return statistics.stdev(means) / math.sqrt(len(means)) if len(means) >= 2 else math.nan


def replicate_t_interval(diffs_by_replicate: Mapping[int, Sequence[float]], level: float) -> ClusterInterval:
    """Student-t interval on the K replicate means (K − 1 degrees of freedom); NaN bounds when K < 2."""
    _check_level(level)
    groups = _groups(diffs_by_replicate)
    means = _replicate_means(groups)
    centre = statistics.fmean(means)
    pairs = sum(len(group) for group in groups)
    if len(means) < 2:
        return ClusterInterval(centre, math.nan, math.nan, pairs, 1, level, "replicate_t")
    half = float(stats.t.ppf((1.0 + level) / 2.0, len(means) - 1)) * _t_standard_error(means)
    return ClusterInterval(centre, centre - half, centre + half, pairs, len(means), level, "replicate_t")


def wider_interval(a: ClusterInterval, b: ClusterInterval) -> ClusterInterval:
    """The wider of two intervals; an undefined one wins (nothing can be concluded), and `a` wins a tie."""
    if not a.defined:
        return a
    if not b.defined:
        return b
    return b if b.width > a.width else a


def status_against_zero(interval: ClusterInterval) -> Status:
    """Pass when the whole interval is above 0, fail when it is below, otherwise (or when undefined) inconclusive."""
    if interval.low > 0:
        return "pass"
    if interval.high < 0:
        return "fail"
    return "inconclusive"


@dataclass(frozen=True)
class ClusterComparison:
    """A paired comparison over replicates: both intervals, the wider one used for the verdict, and its power."""

    estimate: float
    bootstrap: ClusterInterval
    t_interval: ClusterInterval
    used: ClusterInterval
    level: float
    status: Status
    standard_error: float
    minimum_detectable_effect: float

    def as_dict(self, digits: int = 4) -> dict[str, object]:
        return {
            "estimate": _json_number(self.estimate, digits),
            "bootstrap": self.bootstrap.as_dict(digits),
            "t_interval": self.t_interval.as_dict(digits),
            "used": self.used.method,
            "low": _json_number(self.used.low, digits),
            "high": _json_number(self.used.high, digits),
            "level": self.level,
            "status": self.status,
            "standard_error": _json_number(self.standard_error, digits),
            "minimum_detectable_effect": _json_number(self.minimum_detectable_effect, digits),
        }


def cluster_comparison(
    diffs_by_replicate: Mapping[int, Sequence[float]], level: float, resamples: int = 10_000, seed: int = 0
) -> ClusterComparison:
    """Paired Δ over replicates judged on the wider of the cluster bootstrap and the replicate t-interval.

    The standard error is the larger of the bootstrap's and the t-interval's (undefined below two replicates), and the
    minimum detectable effect is 2.8 of them.
    """
    groups = _groups(diffs_by_replicate)
    bootstrap, draws = _bootstrap(groups, statistics.fmean, "mean", level, resamples, seed)
    t_interval = replicate_t_interval(diffs_by_replicate, level)
    used = wider_interval(bootstrap, t_interval)
    bootstrap_error = statistics.stdev(draws) if len(draws) >= 2 else 0.0
    t_error = _t_standard_error(_replicate_means(groups))
    standard_error = math.nan if math.isnan(t_error) else max(bootstrap_error, t_error)
    return ClusterComparison(
        estimate=bootstrap.estimate,
        bootstrap=bootstrap,
        t_interval=t_interval,
        used=used,
        level=level,
        status=status_against_zero(used),
        standard_error=standard_error,
        minimum_detectable_effect=DETECTABLE_EFFECT_IN_STANDARD_ERRORS * standard_error,
    )
