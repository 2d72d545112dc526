"""How good a contribution probe is, on held-out oracle labels (plans/counterfactual-oracle.md §8 Phase 1, §9).

Pearson r of μ against the normalised target, harm AUROC, the calibration ratio z = mean((y − μ)²/σ²), the MAE of
the most and least confident quartiles, and intervals by an episode-clustered bootstrap (steps within an episode
are correlated, so episodes are resampled whole). An undefined statistic is None, never 0 (Choice 15, O19).
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

Row = TypeVar("Row")


def pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    """The correlation of two equal-length series; None when either is constant or there are fewer than 2 points."""
    if len(x) != len(y):
        raise ValueError(f"pearson needs equal lengths, got {len(x)} and {len(y)}")
    if len(x) < 2:
        return None
    mx, my = statistics.fmean(x), statistics.fmean(y)
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    if sxx <= 0.0 or syy <= 0.0:
        return None
    return sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True)) / math.sqrt(sxx * syy)


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """P(score of a positive > score of a negative), ties counting ½ (Mann–Whitney); None without both classes."""
    if len(scores) != len(labels):
        raise ValueError(f"auroc needs equal lengths, got {len(scores)} and {len(labels)}")
    positives = sum(1 for label in labels if label)
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        return None
    # Average ranks (1-based) with ties shared, then the rank-sum form of the U statistic.
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    ranks = [0.0] * len(scores)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    rank_sum = sum(r for r, label in zip(ranks, labels, strict=True) if label)
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def calibration_ratio(y: Sequence[float], mu: Sequence[float], variance: Sequence[float]) -> float | None:
    """z = mean((y − μ)²/σ²): 1 for a calibrated probe, above 1 overconfident, below 1 underconfident."""
    if not y:
        return None
    return statistics.fmean((a - m) ** 2 / v for a, m, v in zip(y, mu, variance, strict=True))


def mae_by_confidence(
    y: Sequence[float], mu: Sequence[float], variance: Sequence[float]
) -> tuple[float | None, float | None]:
    """(MAE of the lowest-σ quartile, MAE of the highest-σ quartile); None for a quartile with no point."""
    order = sorted(range(len(y)), key=lambda i: variance[i])
    quarter = len(order) // 4
    if quarter == 0:
        return None, None
    low, high = order[:quarter], order[-quarter:]
    return (
        statistics.fmean(abs(y[i] - mu[i]) for i in low),
        statistics.fmean(abs(y[i] - mu[i]) for i in high),
    )


@dataclass(frozen=True)
class ClusteredInterval:
    """A statistic over all rows, and its percentile interval from resampling episodes whole."""

    estimate: float | None
    low: float | None
    high: float | None
    episodes: int
    rows: int
    level: float
    #: Resamples on which the statistic was undefined (e.g. one harm class only); they are left out.
    undefined_draws: int

    def as_dict(self, digits: int = 4) -> dict[str, float | int | None]:
        def r(v: float | None) -> float | None:
            return None if v is None else round(v, digits)

        return {
            "estimate": r(self.estimate),
            "low": r(self.low),
            "high": r(self.high),
            "episodes": self.episodes,
            "rows": self.rows,
            "level": self.level,
            "undefined_draws": self.undefined_draws,
        }


def episode_bootstrap(
    rows_by_episode: Mapping[object, Sequence[Row]],
    statistic: Callable[[Sequence[Row]], float | None],
    *,
    resamples: int = 10_000,
    level: float = 0.95,
    seed: int = 0,
) -> ClusteredInterval:
    """The statistic of every row, and its interval from `resamples` draws of whole episodes with replacement."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    episodes = [list(rows) for rows in rows_by_episode.values() if rows]
    everything = [row for rows in episodes for row in rows]
    estimate = statistic(everything) if everything else None
    if not episodes:
        return ClusteredInterval(None, None, None, 0, 0, level, 0)
    rng = random.Random(seed)
    draws: list[float] = []
    undefined = 0
    for _ in range(resamples):
        sample = [row for _ in episodes for row in episodes[rng.randrange(len(episodes))]]
        value = statistic(sample)
        if value is None or not math.isfinite(value):
            undefined += 1
        else:
            draws.append(value)
    if not draws:
        return ClusteredInterval(estimate, None, None, len(episodes), len(everything), level, undefined)
    draws.sort()
    tail = (1.0 - level) / 2.0
    low = draws[min(len(draws) - 1, math.floor(tail * len(draws)))]
    high = draws[min(len(draws) - 1, math.ceil((1.0 - tail) * len(draws)) - 1)]
    return ClusteredInterval(estimate, low, high, len(episodes), len(everything), level, undefined)
