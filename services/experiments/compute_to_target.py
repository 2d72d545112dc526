"""Compute to target: training FLOPs a treatment needs to reach static-final accuracy (proof-baselines §4).

A curve is one episode's per-epoch (cumulative training FLOPs, validation accuracy), in epoch order.
"""

from __future__ import annotations

import bisect
import itertools
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

Curve = Sequence[tuple[float, float]]

TRAILING_WINDOW = 3


def trailing_mean(values: Sequence[float], window: int = TRAILING_WINDOW) -> list[float]:
    """Mean of each epoch's value with the `window − 1` before it; the first epochs average what exists so far."""
    if window < 1:
        raise ValueError(f"a trailing window holds at least one epoch, got {window}")
    return [statistics.fmean(values[max(0, t - window + 1) : t + 1]) for t in range(len(values))]


@dataclass(frozen=True)
class CTTResult:
    """One pair's compute to target; a treatment that never reaches A* has ratio ∞ (censored)."""

    target_accuracy: float
    treatment_flops: float
    static_flops: float
    ratio: float
    reached: bool
    treatment_epoch: int | None
    static_epoch: int

    def as_dict(self) -> dict[str, float | int | bool | None]:
        """JSON has no ∞: a censored pair's FLOPs and ratio become null, with `reached` false."""
        return {
            "target_accuracy": self.target_accuracy,
            "treatment_flops": self.treatment_flops if self.reached else None,
            "static_flops": self.static_flops,
            "ratio": self.ratio if self.reached else None,
            "reached": self.reached,
            "treatment_epoch": self.treatment_epoch,
            "static_epoch": self.static_epoch,
        }


def _check_curve(curve: Curve, name: str, window: int) -> None:
    if len(curve) < window:
        raise ValueError(f"{name} needs at least {window} epochs for a {window}-epoch trailing mean, got {len(curve)}")
    flops = [point[0] for point in curve]
    if any(later < earlier for earlier, later in itertools.pairwise(flops)):
        raise ValueError(f"{name} cumulative FLOPs must not decrease from one epoch to the next")


def _first_epoch_reaching(curve: Curve, target: float, window: int) -> int | None:
    """First epoch with a full trailing window whose mean is ≥ target (a partial one would let a lucky epoch count)."""
    smoothed = trailing_mean([accuracy for _, accuracy in curve], window)
    return next((t for t in range(window - 1, len(curve)) if smoothed[t] >= target), None)


def compute_to_target(
    treatment: Curve, static_final: Curve, delta: float = 0.0, window: int = TRAILING_WINDOW
) -> CTTResult:
    """R = C_T / C_S with A* = static-final's final trailing-mean accuracy − delta."""
    if delta < 0:
        raise ValueError(f"delta lowers the target, it cannot be negative, got {delta}")
    _check_curve(treatment, "treatment curve", window)
    _check_curve(static_final, "static-final curve", window)
    target = trailing_mean([accuracy for _, accuracy in static_final], window)[-1] - delta
    static_epoch = _first_epoch_reaching(static_final, target, window)
    if static_epoch is None:  # unreachable with delta ≥ 0: the last window equals A* + delta
        raise AssertionError("static-final must reach its own target")
    static_flops = float(static_final[static_epoch][0])
    if static_flops <= 0:
        raise ValueError("static-final reached its target at zero training FLOPs; the ratio is undefined")
    treatment_epoch = _first_epoch_reaching(treatment, target, window)
    if treatment_epoch is None:
        return CTTResult(target, math.inf, static_flops, math.inf, False, None, static_epoch)
    treatment_flops = float(treatment[treatment_epoch][0])
    return CTTResult(
        target, treatment_flops, static_flops, treatment_flops / static_flops, True, treatment_epoch, static_epoch
    )


def accuracy_at_compute(curve: Curve, flops: float) -> float:
    """Accuracy at `flops` by linear interpolation of the raw accuracy-vs-cumulative-FLOPs curve.

    Outside the logged range the curve is held flat (first or last accuracy): no extrapolation beyond what was
    measured. Where several epochs share one FLOP figure, the last of them counts.
    """
    _check_curve(curve, "accuracy curve", 1)
    xs = [float(x) for x, _ in curve]
    ys = [float(y) for _, y in curve]
    if flops < xs[0]:
        return ys[0]
    if flops >= xs[-1]:
        return ys[-1]
    right = bisect.bisect_right(xs, flops)
    left = right - 1
    if xs[left] == flops:
        return ys[left]
    fraction = (flops - xs[left]) / (xs[right] - xs[left])
    return ys[left] + fraction * (ys[right] - ys[left])
