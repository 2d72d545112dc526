"""Compute to target and the equal-compute view (proof-baselines §4, invariant B10)."""

from __future__ import annotations

import itertools
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.experiments.compute_to_target import accuracy_at_compute, compute_to_target, trailing_mean


def _curve(per_epoch_flops: list[float], accuracies: list[float]) -> list[tuple[float, float]]:
    return list(zip(itertools.accumulate(per_epoch_flops), accuracies, strict=True))


# Static-final: final 3-epoch mean 0.75, first full window reaching it is epoch 3 (cumulative 400).
STATIC = _curve([100] * 6, [0.25, 0.75, 0.75, 0.75, 0.75, 0.75])
# Treatment: one lucky epoch (1.0) at epoch 1; its 3-epoch mean first reaches 0.75 at epoch 3 (cumulative 650).
# With a 1-epoch mean both curves reach at epoch 1 (ratio 150/200); with 2 epochs at epoch 2 (350/300).
TREATMENT = _curve([50, 100, 200, 300, 300, 300], [0.25, 1.0, 0.5, 0.75, 0.75, 0.75])


def test_known_crossing_gives_the_exact_ratio() -> None:
    result = compute_to_target(TREATMENT, STATIC)
    assert result.target_accuracy == 0.75
    assert (result.treatment_epoch, result.static_epoch) == (3, 3)
    assert (result.treatment_flops, result.static_flops) == (650.0, 400.0)
    assert result.reached and result.ratio == 650 / 400


def test_trailing_mean_spans_three_epochs() -> None:
    assert trailing_mean([0.0, 3.0, 6.0, 9.0, 0.0]) == [0.0, 1.5, 3.0, 6.0, 5.0]
    # The shorter windows would give other crossings on the same curves (see TREATMENT).
    assert compute_to_target(TREATMENT, STATIC, window=1).ratio == 150 / 200
    assert compute_to_target(TREATMENT, STATIC, window=2).ratio == 350 / 300


def test_a_lucky_first_epoch_does_not_count_as_reaching() -> None:
    # The partial window at epoch 0 is 1.0 ≥ 0.75, but only full 3-epoch windows may reach.
    early_spike = _curve([10] * 5, [1.0, 0.25, 0.5, 0.75, 1.0])
    result = compute_to_target(early_spike, STATIC)
    assert result.treatment_epoch == 4 and result.treatment_flops == 50.0


def test_a_treatment_that_never_reaches_is_censored() -> None:
    short_of_target = _curve([10] * 6, [0.25, 0.5, 0.5, 0.625, 0.75, 0.75])  # last window 0.7083 < 0.75
    result = compute_to_target(short_of_target, STATIC)
    assert not result.reached and result.ratio == math.inf and result.treatment_epoch is None
    as_json = json.dumps(result.as_dict(), allow_nan=False)
    assert json.loads(as_json)["ratio"] is None


def test_delta_lowers_the_target_for_both_curves() -> None:
    result = compute_to_target(TREATMENT, STATIC, delta=0.25)
    # A* = 0.5: static's window at epoch 2 is 0.5833 (cumulative 300); treatment's is 0.5833 (cumulative 350).
    assert result.target_accuracy == 0.5 and result.ratio == 350 / 300
    with pytest.raises(ValueError, match="negative"):
        compute_to_target(TREATMENT, STATIC, delta=-0.1)


def test_curves_must_be_long_enough_and_cumulative() -> None:
    with pytest.raises(ValueError, match="at least 3 epochs"):
        compute_to_target(TREATMENT[:2], STATIC)
    with pytest.raises(ValueError, match="must not decrease"):
        compute_to_target([(10.0, 0.5), (5.0, 0.5), (20.0, 0.5)], STATIC)


accuracies = st.lists(st.integers(0, 64).map(lambda k: k / 64), min_size=3, max_size=12)
flops = st.integers(1, 1000).map(float)


def _flops_for(accuracy: list[float]) -> st.SearchStrategy[list[float]]:
    return st.lists(flops, min_size=len(accuracy), max_size=len(accuracy))


@settings(max_examples=150, deadline=None)
@given(treatment_acc=accuracies, static_acc=accuracies, data=st.data())
def test_ratio_is_cumulative_flops_at_the_first_full_window_reaching_the_target(
    treatment_acc: list[float], static_acc: list[float], data: st.DataObject
) -> None:
    treatment = _curve(data.draw(_flops_for(treatment_acc)), treatment_acc)
    static = _curve(data.draw(_flops_for(static_acc)), static_acc)
    result = compute_to_target(treatment, static)
    target = sum(static_acc[-3:]) / 3  # multiples of 1/64 sum exactly, so this equals the module's mean
    windows = [sum(treatment_acc[t - 2 : t + 1]) / 3 for t in range(2, len(treatment_acc))]
    reaching = [t + 2 for t, mean in enumerate(windows) if mean >= target]
    if result.reached:
        assert result.treatment_epoch is not None and reaching and result.treatment_epoch == reaching[0]
        assert result.ratio == treatment[result.treatment_epoch][0] / result.static_flops
    else:
        assert not reaching
    # Scaling every FLOP figure by the same power of two leaves the ratio unchanged.
    scaled = compute_to_target([(x * 8, a) for x, a in treatment], [(x * 8, a) for x, a in static])
    assert scaled.ratio == result.ratio


@given(accuracies, st.lists(flops, min_size=12, max_size=12))
def test_a_treatment_identical_to_static_final_has_ratio_one(acc: list[float], per_epoch: list[float]) -> None:
    curve = _curve(per_epoch[: len(acc)], acc)
    assert compute_to_target(curve, curve).ratio == 1.0


def test_accuracy_at_compute_interpolates_and_clamps() -> None:
    curve = [(100.0, 0.5), (300.0, 0.75), (300.0, 0.875), (500.0, 1.0)]
    assert accuracy_at_compute(curve, 200.0) == 0.625
    assert accuracy_at_compute(curve, 100.0) == 0.5
    assert accuracy_at_compute(curve, 300.0) == 0.875  # the last epoch at a shared FLOP figure counts
    assert accuracy_at_compute(curve, 400.0) == 0.9375
    assert accuracy_at_compute(curve, 10.0) == 0.5  # held at the first accuracy, no extrapolation
    assert accuracy_at_compute(curve, 10_000.0) == 1.0  # held at the last accuracy
    with pytest.raises(ValueError):
        accuracy_at_compute([], 1.0)


@given(st.lists(st.tuples(flops, st.floats(0, 1)), min_size=1, max_size=10), st.floats(0, 20_000))
def test_interpolated_accuracy_lies_between_its_neighbours(steps: list[tuple[float, float]], at: float) -> None:
    curve = list(zip(itertools.accumulate(x for x, _ in steps), (a for _, a in steps), strict=True))
    value = accuracy_at_compute(curve, at)
    below = [a for x, a in curve if x <= at] or [curve[0][1]]
    above = [a for x, a in curve if x >= at] or [curve[-1][1]]
    low, high = sorted((below[-1], above[0]))
    assert low - 1e-12 <= value <= high + 1e-12
