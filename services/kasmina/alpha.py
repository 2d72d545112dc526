"""The alpha controller of a slot: pure functions over `AlphaControllerState` (reference/kasmina.md §4.2–4.3)."""

from __future__ import annotations

import math

from msgspec.structs import replace

from leyline_schemas.enums import AlphaCurve, AlphaMode
from leyline_schemas.lifecycle import AlphaControllerState

MIN_SIGMOID_STEEPNESS = 0.1
DEFAULT_STEEPNESS = 12.0
ALPHA_EPSILON = 1e-6


def clamp_unit(value: float) -> float:
    """Clamp to [0, 1]; a NaN is a broken invariant, never an amplitude."""
    if math.isnan(value):
        raise ValueError("alpha invariant: NaN is not an amplitude")
    return min(1.0, max(0.0, value))


def _sigmoid(x: float) -> float:
    # Two branches so exp() only ever sees a non-positive argument and cannot overflow.
    if x >= 0.0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def curve_progress(curve: AlphaCurve, t: float, steepness: float = DEFAULT_STEEPNESS) -> float:
    """Progress p(t) in [0, 1] of a ramp at fraction t, exactly 0 at t ≤ 0 and 1 at t ≥ 1 (§4.2 item 76)."""
    if t <= 0.0:
        return 0.0
    if t >= 1.0:
        return 1.0
    if curve is AlphaCurve.LINEAR:
        p = t
    elif curve is AlphaCurve.COSINE:
        p = 0.5 * (1.0 - math.cos(math.pi * t))
    else:
        k = max(steepness, MIN_SIGMOID_STEEPNESS)
        low, high = _sigmoid(-k / 2.0), _sigmoid(k / 2.0)
        p = (_sigmoid(k * (t - 0.5)) - low) / (high - low)
    return min(1.0, max(0.0, p))


def hold_at(
    alpha: float, *, curve: AlphaCurve = AlphaCurve.LINEAR, steepness: float = DEFAULT_STEEPNESS
) -> AlphaControllerState:
    """A controller resting at `alpha` in HOLD with no ramp."""
    value = clamp_unit(alpha)
    return AlphaControllerState(
        alpha=value, alpha_start=value, alpha_target=value, mode=AlphaMode.HOLD, curve=curve, steepness=steepness
    )


def normalized(state: AlphaControllerState) -> AlphaControllerState:
    """The construction invariants of §4.3 item 77: amplitudes in [0, 1], steps ≥ 0 and done ≤ total."""
    total = max(0, state.steps_total)
    return replace(
        state,
        alpha=clamp_unit(state.alpha),
        alpha_start=clamp_unit(state.alpha_start),
        alpha_target=clamp_unit(state.alpha_target),
        steepness=max(state.steepness, MIN_SIGMOID_STEEPNESS),
        steps_total=total,
        steps_done=min(max(0, state.steps_done), total),
    )


def retarget(
    state: AlphaControllerState,
    target: float,
    steps: int,
    curve: AlphaCurve | None = None,
    steepness: float | None = None,
) -> AlphaControllerState:
    """Start a ramp from the current alpha to `target` over `steps` ticks; only legal in HOLD (§4.3 item 78)."""
    if state.mode is not AlphaMode.HOLD:
        # Retargeting mid-ramp would let a policy dither; the reference refuses it outright.
        raise ValueError(f"alpha controller: retarget is only legal in HOLD, mode is {state.mode.name}")
    new_target = clamp_unit(target)
    new_curve = state.curve if curve is None else curve
    new_steepness = state.steepness if steepness is None else max(steepness, MIN_SIGMOID_STEEPNESS)
    if not math.isfinite(new_steepness):
        raise ValueError("alpha controller: steepness must be finite")
    if steps <= 0 or new_target == state.alpha:
        return hold_at(new_target, curve=new_curve, steepness=new_steepness)
    mode = AlphaMode.UP if new_target > state.alpha else AlphaMode.DOWN
    return replace(
        state,
        alpha_start=state.alpha,
        alpha_target=new_target,
        mode=mode,
        curve=new_curve,
        steepness=new_steepness,
        steps_total=steps,
        steps_done=0,
    )


def step(state: AlphaControllerState) -> tuple[AlphaControllerState, bool]:
    """Advance one tick; returns the new state and whether the target was reached on this tick (§4.3 item 79)."""
    if state.mode is AlphaMode.HOLD or state.steps_total <= 0:
        return state, False
    done = state.steps_done + 1
    if done >= state.steps_total:
        return replace(state, alpha=state.alpha_target, mode=AlphaMode.HOLD, steps_done=state.steps_total), True
    p = curve_progress(state.curve, done / state.steps_total, state.steepness)
    raw = state.alpha_start + (state.alpha_target - state.alpha_start) * p
    # Clamp between start and target so floating error can never overshoot or reverse the ramp.
    low, high = sorted((state.alpha_start, state.alpha_target))
    return replace(state, alpha=min(high, max(low, raw)), steps_done=done), False


def at_target(state: AlphaControllerState) -> bool:
    """Whether the controller rests at its target in HOLD."""
    return state.mode is AlphaMode.HOLD and abs(state.alpha - state.alpha_target) <= ALPHA_EPSILON
