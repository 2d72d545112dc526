"""The Pareto frontier of episode outcomes and its 2-D hypervolume (reference/tolaria_karn.md §8.10)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

#: The hypervolume reference point: (accuracy in percent, parameter ratio).
REFERENCE_POINT = (0.0, 2.0)


@dataclass(frozen=True)
class OutcomePoint:
    """One finished episode seen as an (accuracy to maximise, parameter ratio to minimise) point."""

    final_accuracy: float
    param_ratio: float
    env_id: int = -1
    episode: int = -1


def dominates(a: OutcomePoint, b: OutcomePoint) -> bool:
    """a dominates b: at least as good on both objectives and strictly better on one."""
    no_worse = a.final_accuracy >= b.final_accuracy and a.param_ratio <= b.param_ratio
    better = a.final_accuracy > b.final_accuracy or a.param_ratio < b.param_ratio
    return no_worse and better


def pareto_frontier(points: Iterable[OutcomePoint]) -> list[OutcomePoint]:
    """The non-dominated points, by accuracy descending; duplicates of a frontier point are all kept."""
    candidates = list(points)
    frontier = [p for p in candidates if not any(dominates(q, p) for q in candidates)]
    return sorted(frontier, key=lambda p: (-p.final_accuracy, p.param_ratio, p.env_id, p.episode))


def hypervolume(points: Sequence[OutcomePoint], reference: tuple[float, float] = REFERENCE_POINT) -> float:
    """Area dominated by `points` and bounded by `reference`, by a sweep in descending accuracy."""
    ref_accuracy, ref_ratio = reference
    area = 0.0
    ceiling = ref_ratio
    for p in sorted(points, key=lambda p: (-p.final_accuracy, p.param_ratio)):
        if p.final_accuracy <= ref_accuracy:
            break
        if p.param_ratio < ceiling:
            area += (p.final_accuracy - ref_accuracy) * (ceiling - p.param_ratio)
            ceiling = p.param_ratio
    return area
