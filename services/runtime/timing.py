"""Timing figures every bench reports: p50, p99 and mean of repeated calls (stdlib only, so any service may use it)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def percentiles(samples: list[float]) -> dict[str, float]:
    """p50, p99, mean and sample count (`n`, as a float) of `samples`; nearest-rank on the sorted samples."""
    ordered = sorted(samples)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    return {"p50": pick(0.5), "p99": pick(0.99), "mean": statistics.fmean(ordered), "n": float(len(ordered))}


def time_calls(fn: Callable[[], object], iterations: int, warmup: int = 3) -> list[float]:
    """Seconds each of `iterations` calls of `fn` took, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(iterations):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return samples
