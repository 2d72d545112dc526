"""Coalitions and Shapley values of the seeds at an episode's last epoch (reference/tamiyo_simic.md §8.5–8.6).

Terminal Shapley is telemetry only: the per-step leave-one-out contribution is what rewards use.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass

Coalition = frozenset[str]
FULL_FACTORIAL_MAX = 4
DEFAULT_SAMPLES = 20


@dataclass(frozen=True)
class ShapleyEstimate:
    mean: float
    std: float
    samples: int


def full_factorial(slots: list[str]) -> list[Coalition]:
    """All 2^n coalitions, smallest first."""
    return [frozenset(c) for k in range(len(slots) + 1) for c in _combinations(slots, k)]


def _combinations(slots: list[str], k: int) -> Iterable[tuple[str, ...]]:
    from itertools import combinations

    return combinations(slots, k)


def permutations(slots: list[str], samples: int, seed: int) -> list[list[str]]:
    """`samples` orders drawn with a local RNG: half random, half their reverses (antithetic pairs)."""
    rng = random.Random(seed)
    orders: list[list[str]] = []
    for _ in range(max(1, samples // 2)):
        order = list(slots)
        rng.shuffle(order)
        orders.extend([order, list(reversed(order))])
    return orders


def monte_carlo_coalitions(slots: list[str], samples: int, seed: int) -> list[Coalition]:
    """The leave-one-out set (all-on, each-off, all-off) plus every prefix of the sampled orders, deduplicated."""
    wanted: list[Coalition] = [frozenset(slots), frozenset()]
    wanted += [frozenset(s for s in slots if s != off) for off in slots]
    for order in permutations(slots, samples, seed):
        wanted += [frozenset(order[:i]) for i in range(len(order) + 1)]
    seen: set[Coalition] = set()
    unique = []
    for coalition in wanted:
        if coalition not in seen:
            seen.add(coalition)
            unique.append(coalition)
    return unique


def coalitions_for(slots: list[str], samples: int = DEFAULT_SAMPLES, seed: int = 0) -> tuple[str, list[Coalition]]:
    """Strategy "auto": full factorial up to four seeds, Monte-Carlo permutation Shapley beyond."""
    if len(slots) <= FULL_FACTORIAL_MAX:
        return "full_factorial", full_factorial(slots)
    return "shapley", monte_carlo_coalitions(slots, samples, seed)


def shapley_values(
    slots: list[str], value: Callable[[Coalition], float | None], samples: int = DEFAULT_SAMPLES, seed: int = 0
) -> dict[str, ShapleyEstimate]:
    """Mean marginal f(S∪{i}) − f(S) along sampled orders, counted only where both coalitions were evaluated.

    Under full factorial every order is enumerated exactly, so the means sum to f(all) − f(∅).
    """
    if len(slots) <= FULL_FACTORIAL_MAX:
        from itertools import permutations as all_orders

        orders = [list(o) for o in all_orders(slots)]
    else:
        orders = permutations(slots, min(samples, 100), seed)
    marginals: dict[str, list[float]] = {s: [] for s in slots}
    for order in orders:
        prefix: set[str] = set()
        for slot in order:
            before = value(frozenset(prefix))
            prefix.add(slot)
            after = value(frozenset(prefix))
            if before is not None and after is not None:
                marginals[slot].append(after - before)
    estimates = {}
    for slot, values in marginals.items():
        mean = math.fsum(values) / len(values) if values else 0.0
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        estimates[slot] = ShapleyEstimate(mean=mean, std=std, samples=len(values))
    return estimates
