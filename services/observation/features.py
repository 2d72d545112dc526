"""Obs V3: the flat feature vector and blueprint indices the policy sees (reference/tamiyo_simic.md §1).

Kasmina builds it for every step; Simic rebuilds it from a step's post-mutation slot states to bootstrap a
truncated episode. Its widths are `leyline_schemas.observation`'s.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from leyline_schemas.directives import StepRequest
from leyline_schemas.enums import BLUEPRINT_NULL_INDEX, AlphaMode, LifecycleOp, SeedStage
from leyline_schemas.lifecycle import AlphaControllerState, SlotState
from leyline_schemas.observation import BASE_FEATURES, EMPTY_SLOT_BLUEPRINT, SLOT_FEATURES, observation_size

__all__ = ["BASE_FEATURES", "SLOT_FEATURES", "build_observation", "observation_size"]

HISTORY_LENGTH = 5
SENTINEL = -1.0  # §1.2: "never observed", outside every measured range
GAMMA = 0.995  # §1.16 counterfactual freshness decay
MAX_TEMPO_EPOCHS = 12.0  # §1.12
LOSS_SCALE = 7.0  # §1.3

# §1.10: the ten valid stages in code order map to contiguous one-hot slots; 5 is absent on purpose.
STAGE_INDEX: dict[SeedStage, int] = {stage: i for i, stage in enumerate(SeedStage)}


def stage_index(stage: int) -> int:
    """The one-hot position of a stage code; the reserved 5 and unknown codes raise (§1.10)."""
    try:
        return STAGE_INDEX[SeedStage(stage)]
    except ValueError as err:
        raise ValueError(f"stage code {stage} is not a valid stage (5 is reserved)") from err


def symlog(x: float) -> float:
    """sign(x)·ln(1+|x|) (§1.3)."""
    return math.copysign(math.log1p(abs(x)), x)


def _clip(x: float, bound: float = 1.0) -> float:
    return min(bound, max(-bound, x))


def _loss_feature(loss: float) -> float:
    # A non-finite loss is the governor's case to handle; the policy must still get a finite vector.
    return symlog(loss) / LOSS_SCALE if math.isfinite(loss) else 0.0


def _accuracy_feature(accuracy: float) -> float:
    return accuracy / 100.0 if math.isfinite(accuracy) else 0.0


def _history(values: Sequence[float], *, loss: bool) -> list[float]:
    """The last five values, oldest first, left-padded with the sentinel (§1.6–1.7)."""
    recent = [_loss_feature(v) if loss else _accuracy_feature(v) for v in values[-HISTORY_LENGTH:]]
    return [SENTINEL] * (HISTORY_LENGTH - len(recent)) + recent


def time_to_target(state: AlphaControllerState) -> int:
    """Ticks left until the alpha ramp lands (§6 item 103)."""
    return max(state.steps_total - state.steps_done, 0)


def alpha_velocity(state: AlphaControllerState) -> float:
    """Mean amplitude change per tick of the current ramp, 0 in HOLD (§6 item 103)."""
    if state.mode is AlphaMode.HOLD or state.steps_total <= 0:
        return 0.0
    return (state.alpha_target - state.alpha_start) / state.steps_total


def max_epochs_for(req: StepRequest) -> int:
    """The episode length features are normalised by: the run's lifecycle setting, else the report's."""
    value = req.lifecycle.max_epochs if req.lifecycle.max_epochs > 0 else req.report.max_epochs
    if value <= 0:
        raise ValueError("observation: max_epochs must be positive in the lifecycle config or the report")
    return value


def _fraction(count: float, max_epochs: int) -> float:
    return min(count, max_epochs) / max_epochs


def _health(value: float | None, slot_id: str, name: str, missing: float) -> float:
    if value is None:
        return missing
    if math.isnan(value):
        raise ValueError(f"observation: slot {slot_id} has NaN {name}")
    return min(1.0, max(0.0, value))


def slot_features(state: SlotState, max_epochs: int) -> list[float]:
    """The features of one occupied slot, in `SLOT_FIELDS` order (§1.10–1.16, plans/kasmina2-phase0.md §5.4)."""
    c, m = state.controller, state.metrics
    stage_one_hot = [0.0] * len(STAGE_INDEX)
    stage_one_hot[stage_index(state.stage)] = 1.0
    contribution = m.counterfactual_contribution
    grad_norm = m.gradient_norm
    freshness = SENTINEL if m.epochs_since_counterfactual is None else GAMMA**m.epochs_since_counterfactual
    features = [
        1.0,
        *stage_one_hot,
        c.alpha,
        0.0 if contribution is None else _clip(contribution / 10.0),
        _clip(m.contribution_velocity / 10.0),
        state.blend_tempo_epochs / MAX_TEMPO_EPOCHS,
        c.alpha_target,
        int(c.mode) / 2.0,
        _fraction(c.steps_total, max_epochs),
        _fraction(c.steps_done, max_epochs),
        _fraction(time_to_target(c), max_epochs),
        _clip(alpha_velocity(c)),
        (int(state.alpha_algorithm) - 1) / 2.0,
        _clip(m.interaction_sum / 10.0),
        symlog(grad_norm) / LOSS_SCALE if grad_norm is not None and math.isfinite(grad_norm) else 0.0,
        _health(m.gradient_health, state.slot_id, "gradient_health", 0.0),
        1.0 if m.has_vanishing else 0.0,
        1.0 if m.has_exploding else 0.0,
        _health(m.previous_gradient_health, state.slot_id, "previous_gradient_health", SENTINEL),
        _fraction(m.epochs_in_current_stage, max_epochs),
        freshness,
        _fraction(m.epochs_total, max_epochs),
        # The contract keeps level within [0, max] and max ≥ 1, so this needs no clamp.
        state.internal_level / state.internal_max_level,
    ]
    if len(features) != SLOT_FEATURES:
        raise AssertionError(f"observation: {len(features)} slot features, the layout has {SLOT_FEATURES}")
    return features


def blueprint_index(state: SlotState) -> int:
    """The embedding index of a slot's blueprint, −1 for an empty slot (§1.17)."""
    if not state.occupied:
        return EMPTY_SLOT_BLUEPRINT
    index = int(state.blueprint)
    if not 0 <= index < BLUEPRINT_NULL_INDEX:
        raise ValueError(
            f"observation: slot {state.slot_id} has blueprint index {index} outside [0, {BLUEPRINT_NULL_INDEX - 1}]"
        )
    return index


def build_observation(req: StepRequest, slots: list[SlotState]) -> tuple[list[float], list[int]]:
    """The flat observation (`observation_size(S)` floats) and the per-slot blueprint indices of the ticked slots."""
    num_slots = len(req.slot_config.slots)
    if len(slots) != num_slots:
        raise ValueError(f"observation: {len(slots)} slot states for {num_slots} enabled slots")
    max_epochs = max_epochs_for(req)
    report = req.report
    stages = [state.stage for state in slots]
    last_op = [0.0] * len(LifecycleOp)
    last_op[int(req.last_op)] = 1.0
    features = [
        min(req.epoch / max_epochs, 1.0),
        _loss_feature(report.val_loss),
        _accuracy_feature(report.val_accuracy),
        *_history(report.val_loss_history, loss=True),
        *_history(report.val_accuracy_history, loss=False),
        stages.count(SeedStage.TRAINING) / num_slots,
        stages.count(SeedStage.BLENDING) / num_slots,
        (stages.count(SeedStage.HOLDING) + stages.count(SeedStage.FOSSILIZED)) / num_slots,
        1.0 if req.last_action_succeeded else 0.0,
        *last_op,
    ]
    indices: list[int] = []
    for state in slots:
        features.extend(slot_features(state, max_epochs) if state.occupied else [0.0] * SLOT_FEATURES)
        indices.append(blueprint_index(state))
    return features, indices
