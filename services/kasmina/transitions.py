"""The seed state machine: transition table and per-seed transitions (reference/kasmina.md §1, §4.6).

Every function takes a `SlotState` and returns a `SlotChange`: the new state plus the lifecycle events it
caused. `services.kasmina.lifecycle` builds the request-level operations (validation, tick, actions) on these.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from msgspec.structs import replace

from leyline_schemas.enums import (
    FAILURE_STAGES,
    LIVE_STAGES,
    AlphaAlgorithm,
    AlphaCurve,
    AlphaMode,
    BlendId,
    BlueprintAction,
    GateLevel,
    SeedStage,
    Topology,
)
from leyline_schemas.lifecycle import SeedMetrics, SlotState, internal_spec
from leyline_schemas.telemetry import (
    LifecyclePayload,
    SeedFossilized,
    SeedGateEvaluated,
    SeedGerminated,
    SeedPruned,
    SeedStageChanged,
)
from services.kasmina import alpha
from services.kasmina.gates import DEFAULT_MIN_BLENDING_EPOCHS, GateResult, QualityGates

DEFAULT_EMBARGO_EPOCHS_AFTER_PRUNE = 5
MIN_PRUNE_AGE = 5
#: Who asked for a lifecycle change the policy decided (SeedPruned.initiator, SeedInternalLevelChanged.initiator).
POLICY_INITIATOR = "policy"
GOVERNOR_PRUNE_REASONS = frozenset({"governor_nan", "governor_lobotomy", "governor_divergence", "governor_rollback"})

# §1.2 item 4; the order inside each tuple is the default-advance preference (item 5).
VALID_TRANSITIONS: dict[SeedStage, tuple[SeedStage, ...]] = {
    SeedStage.UNKNOWN: (SeedStage.DORMANT,),
    SeedStage.DORMANT: (SeedStage.GERMINATED,),
    SeedStage.GERMINATED: (SeedStage.TRAINING, SeedStage.PRUNED),
    SeedStage.TRAINING: (SeedStage.BLENDING, SeedStage.PRUNED),
    SeedStage.BLENDING: (SeedStage.HOLDING, SeedStage.PRUNED),
    SeedStage.HOLDING: (SeedStage.FOSSILIZED, SeedStage.BLENDING, SeedStage.PRUNED),
    SeedStage.FOSSILIZED: (),
    SeedStage.PRUNED: (SeedStage.EMBARGOED,),
    SeedStage.EMBARGOED: (SeedStage.RESETTING,),
    SeedStage.RESETTING: (SeedStage.DORMANT,),
}

# §4.4 item 85: gated blends ramp linearly so a slow sigmoid start does not compound with a near-zero gate.
BLEND_CURVES: dict[BlendId, AlphaCurve] = {
    BlendId.LINEAR: AlphaCurve.LINEAR,
    BlendId.SIGMOID: AlphaCurve.SIGMOID,
    BlendId.GATED: AlphaCurve.LINEAR,
}


def is_valid_transition(from_stage: SeedStage, to_stage: SeedStage) -> bool:
    """Whether the table of §1.2 allows `from_stage → to_stage`."""
    return to_stage in VALID_TRANSITIONS.get(from_stage, ())


def next_stage(stage: SeedStage) -> SeedStage:
    """The default advance target: the first successor that is not a failure stage (§1.2 item 5)."""
    for candidate in VALID_TRANSITIONS[stage]:
        if candidate not in FAILURE_STAGES:
            return candidate
    raise ValueError(f"I1 transition table: {stage.name} has no stage to advance to")


@dataclass(frozen=True)
class SlotChange:
    """A lifecycle change of one slot: the new state, whether it happened, and the events it emitted."""

    state: SlotState
    applied: bool
    events: list[LifecyclePayload] = field(default_factory=list)
    reason: str = ""
    gate: GateResult | None = None


def _refused(state: SlotState, reason: str) -> SlotChange:
    return SlotChange(state=state, applied=False, reason=reason)


def _transition(state: SlotState, to_stage: SeedStage) -> tuple[SlotState, SeedStageChanged]:
    """Move to `to_stage`, remembering the old stage and dwell and resetting the stage baseline (§1.2 item 7)."""
    if not is_valid_transition(state.stage, to_stage):
        raise ValueError(f"I1 transition table: {state.stage.name} → {to_stage.name} is not a legal transition")
    m = state.metrics
    event = SeedStageChanged(
        slot_id=state.slot_id,
        seed_id=state.seed_id,
        from_stage=state.stage.name,
        to_stage=to_stage.name,
        alpha=state.controller.alpha,
        accuracy_delta=m.current_val_accuracy - m.accuracy_at_stage_start,
        epochs_in_stage=m.epochs_in_current_stage,
    )
    moved = replace(
        state,
        stage=to_stage,
        previous_stage=state.stage,
        previous_epochs_in_stage=m.epochs_in_current_stage,
        metrics=replace(m, accuracy_at_stage_start=m.current_val_accuracy, epochs_in_current_stage=0),
    )
    return moved, event


def _gate_event(state: SlotState, result: GateResult, target: SeedStage) -> SeedGateEvaluated:
    return SeedGateEvaluated(
        slot_id=state.slot_id,
        gate=int(result.gate),
        passed=result.passed,
        target_stage=target.name,
        checks_passed=list(result.checks_passed),
        checks_failed=list(result.checks_failed),
        message=result.message,
    )


def germinate_state(
    slot_id: str,
    seed_id: str,
    blueprint: BlueprintAction,
    blend: BlendId,
    alpha_algorithm: AlphaAlgorithm,
    tempo_epochs: int,
    alpha_target: float,
    epoch: int,
    host_param_count: int,
    accuracy: float,
) -> SlotChange:
    """A fresh seed in GERMINATED; the caller must have checked that the slot is empty (§2.6 item 52)."""
    if (blend is BlendId.GATED) != (alpha_algorithm is AlphaAlgorithm.GATE):
        raise ValueError(f"germinate: blend {blend.value} and algorithm {alpha_algorithm.name} must be chosen together")
    if not 0.0 < alpha_target <= 1.0:
        raise ValueError(f"germinate: alpha_target must lie in (0, 1], got {alpha_target}")
    if tempo_epochs < 0:
        raise ValueError(f"germinate: tempo_epochs must be ≥ 0, got {tempo_epochs}")
    start = accuracy if math.isfinite(accuracy) else 0.0
    internals = internal_spec(blueprint)
    dormant = SlotState(
        slot_id=slot_id,
        seed_id=seed_id,
        blueprint=blueprint,
        blend=blend,
        alpha_algorithm=alpha_algorithm,
        blend_tempo_epochs=tempo_epochs,
        alpha_target_on_blend=alpha_target,
        controller=alpha.hold_at(0.0, curve=BLEND_CURVES[blend]),
        germinated_epoch=epoch,
        metrics=SeedMetrics(
            initial_val_accuracy=start,
            current_val_accuracy=start,
            best_val_accuracy=start,
            accuracy_at_stage_start=start,
            accuracy_at_germination=start,
            host_param_count=host_param_count,
        ),
        internal_kind=internals.kind,
        internal_level=internals.initial_level,
        internal_max_level=internals.max_level,
    )
    gate = QualityGates().check_transition(dormant, SeedStage.GERMINATED)
    if not gate.passed:
        raise ValueError(f"germinate: {gate.message}")
    germinated, _ = _transition(dormant, SeedStage.GERMINATED)
    event = SeedGerminated(
        slot_id=slot_id,
        seed_id=seed_id,
        blueprint=blueprint,
        alpha=0.0,
        blend_tempo_epochs=tempo_epochs,
        alpha_curve=BLEND_CURVES[blend].name,
        internal_level=internals.initial_level,
        internal_max_level=internals.max_level,
    )
    return SlotChange(state=germinated, applied=True, events=[event], gate=gate)


def advance_state(state: SlotState, permissive: bool, topology: Topology = Topology.CNN) -> SlotChange:
    """Advance to the default next stage if its gate passes; a failed gate is a refusal, not an error (§1.4)."""
    target = next_stage(state.stage)
    if target is SeedStage.FOSSILIZED:
        return fossilize_state(state, permissive)
    gate = QualityGates(permissive=permissive).check_transition(state, target)
    gate_event = _gate_event(state, gate, target)
    if not gate.passed:
        return SlotChange(state=state, applied=False, events=[gate_event], reason=gate.message, gate=gate)
    if target is SeedStage.TRAINING:
        # §5 item 96: the incubating seed sees a detached host tensor.
        moved, changed = _transition(replace(state, isolate_gradients=True), target)
    elif target is SeedStage.BLENDING:
        # §4.4 item 85: a fresh ramp from the current alpha to the stored target over the chosen tempo.
        ramp = alpha.retarget(
            alpha.hold_at(state.controller.alpha, curve=BLEND_CURVES[state.blend]),
            state.alpha_target_on_blend,
            state.blend_tempo_epochs,
            steepness=alpha.DEFAULT_STEEPNESS,
        )
        isolate = topology is Topology.CNN
        moved, changed = _transition(replace(state, controller=ramp, isolate_gradients=isolate), target)
    else:
        # §4.6 item 92: HOLDING is full amplitude with the ramp finished.
        full = replace(
            alpha.hold_at(1.0, curve=state.controller.curve, steepness=state.controller.steepness),
            steps_total=state.controller.steps_total,
            steps_done=state.controller.steps_total,
        )
        moved, changed = _transition(replace(state, controller=full), target)
    return SlotChange(state=moved, applied=True, events=[gate_event, changed], gate=gate)


def fossilize_state(state: SlotState, permissive: bool) -> SlotChange:
    """HOLDING → FOSSILIZED when G5 passes; the seed stays applied at alpha 1 for good (§1.6)."""
    if state.stage is not SeedStage.HOLDING:
        return _refused(state, f"fossilize needs HOLDING, seed is {state.stage.name}")
    gate = QualityGates(permissive=permissive).check_transition(state, SeedStage.FOSSILIZED)
    gate_event = _gate_event(state, gate, SeedStage.FOSSILIZED)
    if not gate.passed:
        return SlotChange(state=state, applied=False, events=[gate_event], reason=gate.message, gate=gate)
    full = replace(state.controller, alpha=1.0, alpha_start=1.0, alpha_target=1.0, mode=AlphaMode.HOLD)
    moved, changed = _transition(replace(state, controller=full), SeedStage.FOSSILIZED)
    m = moved.metrics
    fossilized = SeedFossilized(
        slot_id=state.slot_id,
        seed_id=state.seed_id,
        blueprint=state.blueprint,
        improvement=m.current_val_accuracy - m.initial_val_accuracy,
        params_added=m.seed_param_count,
        alpha=1.0,
        epochs_total=m.epochs_total,
        counterfactual=m.counterfactual_contribution,
        internal_level=state.internal_level,
    )
    return SlotChange(state=moved, applied=True, events=[gate_event, changed, fossilized], gate=gate)


def prune_state(state: SlotState, reason: str, initiator: str = "policy") -> SlotChange:
    """Instant prune: the state is kept for the cooldown, alpha drops to 0 in HOLD (§1.5 items 27–28)."""
    if state.stage is SeedStage.FOSSILIZED:
        return _refused(state, "fossilized seeds are permanent")
    if state.stage not in LIVE_STAGES:
        return _refused(state, f"no live seed to prune in {state.slot_id} ({state.stage.name})")
    moved, changed = _transition(state, SeedStage.PRUNED)
    auto_pruned = reason in GOVERNOR_PRUNE_REASONS
    m = moved.metrics
    pruned_event = SeedPruned(
        slot_id=state.slot_id,
        seed_id=state.seed_id,
        blueprint=state.blueprint,
        reason=reason,
        initiator=initiator,
        improvement=m.current_val_accuracy - m.initial_val_accuracy,
        auto_pruned=auto_pruned,
        epochs_total=m.epochs_total,
        counterfactual=m.counterfactual_contribution,
    )
    closed = replace(
        moved.controller, alpha=0.0, alpha_start=0.0, alpha_target=0.0, mode=AlphaMode.HOLD, steps_total=0, steps_done=0
    )
    pruned = replace(
        moved,
        controller=closed,
        isolate_gradients=False,
        prune_reason=reason,
        prune_initiator=initiator,
        auto_pruned=auto_pruned,
    )
    return SlotChange(state=pruned, applied=True, events=[changed, pruned_event])


def schedule_prune_state(
    state: SlotState,
    steps: int,
    curve: AlphaCurve,
    steepness: float,
    reason: str,
    initiator: str = "policy",
) -> SlotChange:
    """Blend a seed out over `steps` ticks, or prune at once where a ramp makes no sense (§1.5 item 29)."""
    if state.stage is SeedStage.FOSSILIZED:
        return _refused(state, "fossilized seeds are permanent")
    if state.stage not in LIVE_STAGES:
        return _refused(state, f"no live seed to prune in {state.slot_id} ({state.stage.name})")
    if steps <= 0 or state.controller.alpha <= 0.0:
        return prune_state(state, reason, initiator)
    if state.controller.mode is not AlphaMode.HOLD:
        return _refused(state, f"alpha controller is ramping ({state.controller.mode.name}); prune waits for HOLD")
    if state.stage in (SeedStage.GERMINATED, SeedStage.TRAINING):
        return prune_state(state, reason, initiator)
    events: list[LifecyclePayload] = []
    if state.stage is SeedStage.HOLDING:
        state, changed = _transition(state, SeedStage.BLENDING)
        events.append(changed)
    ramp = alpha.retarget(state.controller, 0.0, steps, curve, steepness)
    scheduled = replace(state, controller=ramp, prune_reason=reason, prune_initiator=initiator)
    return SlotChange(state=scheduled, applied=True, events=events)


def set_alpha_target_state(
    state: SlotState,
    target: float,
    steps: int,
    curve: AlphaCurve,
    steepness: float,
    alpha_algorithm: AlphaAlgorithm | None = None,
) -> SlotChange:
    """Re-target a blending or holding seed; a partial target from HOLDING re-enters BLENDING (§4.6 items 93–94)."""
    if not 0.0 < target <= 1.0:
        raise ValueError(f"set_alpha_target: target must lie in (0, 1], got {target}; removal is a prune")
    if state.stage is SeedStage.FOSSILIZED:
        return _refused(state, "fossilized seeds are permanent")
    if state.stage not in (SeedStage.BLENDING, SeedStage.HOLDING):
        return _refused(state, f"set_alpha_target needs BLENDING or HOLDING, seed is {state.stage.name}")
    if state.controller.mode is not AlphaMode.HOLD:
        return _refused(state, f"alpha controller is ramping ({state.controller.mode.name})")
    events: list[LifecyclePayload] = []
    if state.stage is SeedStage.HOLDING and target < 1.0 - alpha.ALPHA_EPSILON:
        state, changed = _transition(state, SeedStage.BLENDING)
        events.append(changed)
    algorithm = state.alpha_algorithm if alpha_algorithm is None else alpha_algorithm
    ramp = alpha.retarget(state.controller, target, steps, curve, steepness)
    return SlotChange(state=replace(state, controller=ramp, alpha_algorithm=algorithm), applied=True, events=events)


def record_epoch(metrics: SeedMetrics, accuracy: float) -> SeedMetrics:
    """One epoch of a seed's life: the dwell and age move by one, accuracy is recorded when finite (§6 item 105)."""
    counted = replace(
        metrics,
        epochs_total=metrics.epochs_total + 1,
        epochs_in_current_stage=metrics.epochs_in_current_stage + 1,
    )
    if not math.isfinite(accuracy):
        # A NaN epoch is the governor's business; recording it would poison best/initial for good.
        return counted
    first = metrics.epochs_total == 0
    return replace(
        counted,
        initial_val_accuracy=accuracy if first else metrics.initial_val_accuracy,
        accuracy_at_stage_start=accuracy if first else metrics.accuracy_at_stage_start,
        best_val_accuracy=accuracy if first else max(metrics.best_val_accuracy, accuracy),
        current_val_accuracy=accuracy,
    )


@dataclass(frozen=True)
class TickRules:
    """The per-run knobs the tick applies: gate mode, auto-forward gates and the host topology."""

    permissive: bool = True
    auto_forward_gates: frozenset[int] = frozenset()
    topology: Topology = Topology.CNN


def tick_slot(state: SlotState, rules: TickRules) -> SlotChange:
    """The mechanical part of one tick for a seed whose epoch is already recorded (§1.4 items 21–25, §4.4 item 86).

    `applied` tells whether the stage changed; at most one transition happens per tick.
    """
    stage = state.stage
    if stage is SeedStage.PRUNED:
        moved, changed = _transition(state, SeedStage.EMBARGOED)
        return SlotChange(state=moved, applied=True, events=[changed])
    if stage is SeedStage.EMBARGOED:
        if state.metrics.epochs_in_current_stage < DEFAULT_EMBARGO_EPOCHS_AFTER_PRUNE:
            return SlotChange(state=state, applied=False)
        moved, changed = _transition(state, SeedStage.RESETTING)
        return SlotChange(state=moved, applied=True, events=[changed])
    if stage is SeedStage.RESETTING:
        _, changed = _transition(state, SeedStage.DORMANT)
        return SlotChange(state=SlotState(slot_id=state.slot_id), applied=True, events=[changed])
    if stage is SeedStage.BLENDING:
        return _tick_blending(state, rules)
    if stage is SeedStage.GERMINATED and GateLevel.G1 in rules.auto_forward_gates:
        return advance_state(state, rules.permissive, rules.topology)
    if (
        stage is SeedStage.TRAINING
        and GateLevel.G2 in rules.auto_forward_gates
        and state.metrics.epochs_in_current_stage >= DEFAULT_MIN_BLENDING_EPOCHS
    ):
        return advance_state(state, rules.permissive, rules.topology)
    return SlotChange(state=state, applied=False)


def _tick_blending(state: SlotState, rules: TickRules) -> SlotChange:
    controller, reached = alpha.step(state.controller)
    stepped = replace(state, controller=controller)
    if reached and controller.alpha_target <= alpha.ALPHA_EPSILON:
        # §1.5 item 29: a scheduled blend-out completes as a prune on the tick alpha reaches 0.
        return prune_state(stepped, stepped.prune_reason or "scheduled_prune", stepped.prune_initiator or "policy")
    ready = (
        GateLevel.G3 in rules.auto_forward_gates
        and alpha.at_target(controller)
        # G3 rejects partial targets anyway; skipping them keeps a partial hold from emitting a failed gate per tick.
        and controller.alpha_target >= 1.0 - alpha.ALPHA_EPSILON
        and (rules.permissive or stepped.metrics.epochs_in_current_stage >= DEFAULT_MIN_BLENDING_EPOCHS)
    )
    if ready:
        return advance_state(stepped, rules.permissive, rules.topology)
    return SlotChange(state=stepped, applied=False)
