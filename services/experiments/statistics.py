"""Bootstrap confidence intervals for the learning benchmark and A/B verdicts."""

from __future__ import annotations

import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Interval:
    """A mean with its bootstrap confidence interval over `n` values."""

    mean: float
    low: float
    high: float
    n: int

    def as_dict(self, digits: int = 4) -> dict[str, float | int]:
        return {
            "mean": round(self.mean, digits),
            "low": round(self.low, digits),
            "high": round(self.high, digits),
            "n": self.n,
        }

    def __str__(self) -> str:
        return f"{self.mean:.3f} [{self.low:.3f}, {self.high:.3f}]"


def bootstrap_interval(
    values: Sequence[float], *, confidence: float = 0.95, resamples: int = 2000, seed: int = 0
) -> Interval:
    """Percentile bootstrap of the mean; a single value gives a zero-width interval."""
    data = [float(v) for v in values]
    if not data:
        raise ValueError("a bootstrap interval needs at least one value")
    mean = statistics.fmean(data)
    if len(data) == 1:
        return Interval(mean, mean, mean, 1)
    rng = random.Random(seed)
    n = len(data)
    means = sorted(statistics.fmean(rng.choices(data, k=n)) for _ in range(resamples))
    tail = (1.0 - confidence) / 2.0
    low = means[int(tail * (resamples - 1))]
    high = means[int((1.0 - tail) * (resamples - 1))]
    return Interval(mean, low, high, n)


def paired_difference(
    treatment: Sequence[float], control: Sequence[float], *, confidence: float = 0.95, seed: int = 0
) -> Interval:
    """Bootstrap interval of the mean of treatment − control over paired values (same seeds, same envs)."""
    if len(treatment) != len(control):
        raise ValueError(f"paired samples need equal lengths, got {len(treatment)} and {len(control)}")
    return bootstrap_interval(
        [t - c for t, c in zip(treatment, control, strict=True)], confidence=confidence, seed=seed
    )
