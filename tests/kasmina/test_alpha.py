"""The alpha controller: curve math and the HOLD/UP/DOWN state machine (reference/kasmina.md §4.2–4.3, I6)."""

from __future__ import annotations

import math

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leyline_schemas.enums import AlphaCurve, AlphaMode
from leyline_schemas.lifecycle import AlphaControllerState
from services.kasmina import alpha
from services.observation.features import alpha_velocity, time_to_target

unit = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
curves = st.sampled_from(list(AlphaCurve))
steepness = st.floats(min_value=0.1, max_value=1e6, allow_nan=False)


@pytest.mark.parametrize("curve", list(AlphaCurve))
def test_every_curve_starts_at_zero_and_ends_at_one(curve: AlphaCurve) -> None:
    assert alpha.curve_progress(curve, 0.0) == 0.0
    assert alpha.curve_progress(curve, 1.0) == 1.0
    assert alpha.curve_progress(curve, 0.5) == pytest.approx(0.5)


@settings(max_examples=100)
@given(k=steepness)
def test_sigmoid_is_exactly_zero_and_one_at_the_endpoints_for_any_steepness(k: float) -> None:
    assert alpha.curve_progress(AlphaCurve.SIGMOID, 0.0, k) == 0.0
    assert alpha.curve_progress(AlphaCurve.SIGMOID, 1.0, k) == 1.0
    assert 0.0 <= alpha.curve_progress(AlphaCurve.SIGMOID, 0.3, k) <= 1.0


def test_sigmoid_steepness_below_the_minimum_behaves_like_the_minimum() -> None:
    at_min = alpha.curve_progress(AlphaCurve.SIGMOID, 0.3, alpha.MIN_SIGMOID_STEEPNESS)
    assert alpha.curve_progress(AlphaCurve.SIGMOID, 0.3, 0.0) == at_min
    assert alpha.curve_progress(AlphaCurve.SIGMOID, 0.3, -5.0) == at_min


def test_huge_sigmoid_steepness_does_not_overflow() -> None:
    assert alpha.curve_progress(AlphaCurve.SIGMOID, 0.2, 1e308) == 0.0
    assert alpha.curve_progress(AlphaCurve.SIGMOID, 0.8, 1e308) == 1.0


def test_cosine_has_zero_slope_at_both_ends() -> None:
    h = 1e-4
    assert alpha.curve_progress(AlphaCurve.COSINE, h) / h < 1e-3
    assert (1.0 - alpha.curve_progress(AlphaCurve.COSINE, 1.0 - h)) / h < 1e-3


@settings(max_examples=100)
@given(curve=curves, k=steepness, a=unit, b=unit)
def test_curves_are_monotone_in_t(curve: AlphaCurve, k: float, a: float, b: float) -> None:
    lo, hi = sorted((a, b))
    assert alpha.curve_progress(curve, lo, k) <= alpha.curve_progress(curve, hi, k)


def test_retarget_outside_hold_raises() -> None:
    ramping = alpha.retarget(alpha.hold_at(0.0), 1.0, 5)
    assert ramping.mode is AlphaMode.UP
    with pytest.raises(ValueError, match="only legal in HOLD"):
        alpha.retarget(ramping, 0.5, 3)


def test_retarget_sets_mode_by_direction_and_restarts_the_count() -> None:
    up = alpha.retarget(alpha.hold_at(0.2), 0.9, 4, AlphaCurve.COSINE, 6.0)
    assert (up.mode, up.alpha_start, up.alpha_target, up.steps_total, up.steps_done) == (AlphaMode.UP, 0.2, 0.9, 4, 0)
    assert (up.curve, up.steepness) == (AlphaCurve.COSINE, 6.0)
    down = alpha.retarget(alpha.hold_at(0.7), 0.1, 3)
    assert down.mode is AlphaMode.DOWN


def test_retarget_keeps_curve_and_steepness_when_not_given() -> None:
    base = alpha.hold_at(0.5, curve=AlphaCurve.SIGMOID, steepness=24.0)
    moved = alpha.retarget(base, 1.0, 3)
    assert (moved.curve, moved.steepness) == (AlphaCurve.SIGMOID, 24.0)


def test_zero_steps_is_an_instant_change_in_hold() -> None:
    instant = alpha.retarget(alpha.hold_at(0.0), 0.7, 0)
    assert (instant.alpha, instant.mode, instant.steps_total) == (0.7, AlphaMode.HOLD, 0)


def test_retarget_to_the_current_alpha_snaps_into_hold() -> None:
    same = alpha.retarget(alpha.hold_at(0.5), 0.5, 5)
    assert same.mode is AlphaMode.HOLD and same.alpha == 0.5


def test_retarget_clamps_the_target() -> None:
    assert alpha.retarget(alpha.hold_at(0.5), 3.0, 2).alpha_target == 1.0
    assert alpha.retarget(alpha.hold_at(0.5), -1.0, 2).alpha_target == 0.0


def test_step_in_hold_is_a_no_op() -> None:
    held = alpha.hold_at(0.4)
    assert alpha.step(held) == (held, False)


@settings(max_examples=200)
@given(start=unit, target=unit, steps=st.integers(min_value=1, max_value=12), curve=curves, k=steepness)
def test_ramp_is_monotone_and_lands_exactly_on_target(
    start: float, target: float, steps: int, curve: AlphaCurve, k: float
) -> None:
    state = alpha.retarget(alpha.hold_at(start), target, steps, curve, k)
    lo, hi = sorted((start, target))
    previous = start
    for tick in range(1, steps + 1):
        state, reached = alpha.step(state)
        assert lo <= state.alpha <= hi
        # Monotone toward the target: never moves away from it.
        assert (state.alpha - previous) * (target - start) >= 0.0
        previous = state.alpha
        assert reached is (tick == steps and start != target)
    assert state.alpha == target
    assert state.mode is AlphaMode.HOLD
    assert alpha.step(state) == (state, False)


def test_time_to_target_and_velocity() -> None:
    state = alpha.retarget(alpha.hold_at(0.0), 1.0, 4)
    assert time_to_target(state) == 4
    assert alpha_velocity(state) == 0.25
    state, _ = alpha.step(state)
    assert time_to_target(state) == 3
    assert alpha_velocity(alpha.hold_at(0.3)) == 0.0


def test_normalized_applies_the_construction_invariants() -> None:
    raw = AlphaControllerState(alpha=1.5, alpha_start=-0.2, alpha_target=2.0, steps_total=-3, steps_done=7)
    fixed = alpha.normalized(raw)
    assert (fixed.alpha, fixed.alpha_start, fixed.alpha_target) == (1.0, 0.0, 1.0)
    assert (fixed.steps_total, fixed.steps_done) == (0, 0)
    assert alpha.normalized(AlphaControllerState(steps_total=3, steps_done=9)).steps_done == 3


def test_nan_is_never_an_amplitude() -> None:
    with pytest.raises(ValueError, match="NaN"):
        alpha.hold_at(math.nan)


@settings(max_examples=50)
@given(start=unit, target=unit, steps=st.integers(min_value=0, max_value=8), curve=curves, ticks=st.integers(0, 8))
def test_controller_state_round_trips_losslessly(
    start: float, target: float, steps: int, curve: AlphaCurve, ticks: int
) -> None:
    state = alpha.retarget(alpha.hold_at(start), target, steps, curve)
    for _ in range(ticks):
        state, _ = alpha.step(state)
    encoded = msgspec.msgpack.encode(state)
    assert msgspec.msgpack.decode(encoded, type=AlphaControllerState) == state
