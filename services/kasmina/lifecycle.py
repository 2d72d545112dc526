"""Kasmina's lifecycle authority for one step: validate the request, tick every slot, execute the policy's action.

The per-seed state machine lives in `services.kasmina.transitions` and is re-exported here; this module is
what the bus adapter calls (ARCHITECTURE.md §5, reference/tamiyo_simic.md §2.13).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from msgspec.structs import replace

from leyline_schemas.decisions import FactoredAction
from leyline_schemas.directives import (
    Advance,
    Fossilize,
    Germinate,
    Mutation,
    Prune,
    SetAlphaTarget,
    SetInternalLevel,
    StepRequest,
)
from leyline_schemas.enums import (
    ALPHA_CURVE_SHAPES,
    ALPHA_SPEED_STEPS,
    ALPHA_TARGET_VALUES,
    INTERNAL_OPS,
    LIVE_STAGES,
    STYLE_TO_BLEND,
    TEMPO_EPOCHS,
    AlphaMode,
    BlueprintAction,
    LifecycleOp,
    SeedStage,
    Topology,
    blueprint_name,
)
from leyline_schemas.lifecycle import LifecycleConfig, SeedMetrics, SlotState, allowed_blueprints
from leyline_schemas.reports import SlotReport
from leyline_schemas.telemetry import LifecyclePayload
from services.kasmina.gates import GateResult
from services.kasmina.internal_ops import internal_level_change, internal_op_refusals
from services.kasmina.transitions import (
    DEFAULT_EMBARGO_EPOCHS_AFTER_PRUNE,
    MIN_PRUNE_AGE,
    POLICY_INITIATOR,
    VALID_TRANSITIONS,
    SlotChange,
    TickRules,
    advance_state,
    fossilize_state,
    germinate_state,
    is_valid_transition,
    next_stage,
    prune_state,
    record_epoch,
    schedule_prune_state,
    set_alpha_target_state,
    tick_slot,
)
from services.kasmina.validation import InvalidStepRequest, validate_request

__all__ = [
    "DEFAULT_EMBARGO_EPOCHS_AFTER_PRUNE",
    "MIN_PRUNE_AGE",
    "VALID_TRANSITIONS",
    "ActionResult",
    "InvalidStepRequest",
    "SlotChange",
    "TickResult",
    "advance_state",
    "allowed_blueprints",
    "execute",
    "execution_refusal",
    "fossilize_state",
    "germinate_state",
    "is_valid_transition",
    "next_stage",
    "prune_state",
    "schedule_prune_state",
    "set_alpha_target_state",
    "tick",
    "validate_request",
]

CONTRIBUTION_VELOCITY_DECAY = 0.7  # reference/kasmina.md §5 item 101


def apply_slot_report(metrics: SeedMetrics, report: SlotReport | None) -> SeedMetrics:
    """Copy this epoch's measurements of a slot into its seed's metrics (reference/kasmina.md §5 items 101–102)."""
    stale_age = None if metrics.epochs_since_counterfactual is None else metrics.epochs_since_counterfactual + 1
    if report is None:
        return replace(metrics, epochs_since_counterfactual=stale_age)
    c = report.contribution
    if c is not None and math.isfinite(c):
        previous = metrics.counterfactual_contribution
        # v ← 0.7·v + 0.3·(c_t − c_{t−1}), only on a fresh measurement; the first one has no delta yet.
        velocity = metrics.contribution_velocity
        if previous is not None:
            velocity = CONTRIBUTION_VELOCITY_DECAY * velocity + (1.0 - CONTRIBUTION_VELOCITY_DECAY) * (c - previous)
        counterfactual: float | None = c
        age: int | None = 0
    else:
        counterfactual, velocity, age = metrics.counterfactual_contribution, metrics.contribution_velocity, stale_age
    return replace(
        metrics,
        counterfactual_contribution=counterfactual,
        contribution_velocity=velocity,
        epochs_since_counterfactual=age,
        interaction_sum=report.interaction_sum,
        boost_received=report.boost_received,
        upstream_alpha_sum=report.upstream_alpha_sum,
        downstream_alpha_sum=report.downstream_alpha_sum,
        seed_gradient_norm_ratio=report.seed_gradient_norm_ratio,
        gradient_norm=report.gradient_norm,
        previous_gradient_health=metrics.gradient_health,
        gradient_health=report.gradient_health,
        has_vanishing=report.has_vanishing,
        has_exploding=report.has_exploding,
        seed_param_count=report.seed_param_count,
    )


@dataclass
class TickResult:
    """The slots after one mechanical tick and the lifecycle events it caused."""

    slots: list[SlotState]
    events: list[LifecyclePayload] = field(default_factory=list)


def tick(req: StepRequest) -> TickResult:
    """The once-per-epoch tick of every slot: the single place where a seed's dwell moves (ARCHITECTURE.md §11)."""
    rules = TickRules(
        permissive=req.lifecycle.permissive_gates,
        auto_forward_gates=frozenset(req.lifecycle.auto_forward_gates),
        topology=req.slot_config.topology,
    )
    reports = {report.slot_id: report for report in req.report.slots}
    slots: list[SlotState] = []
    events: list[LifecyclePayload] = []
    for state in req.slots:
        if not state.occupied:
            slots.append(state)
            continue
        metrics = apply_slot_report(record_epoch(state.metrics, req.report.val_accuracy), reports.get(state.slot_id))
        change = tick_slot(replace(state, metrics=metrics), rules)
        slots.append(change.state)
        events.extend(change.events)
    return TickResult(slots=slots, events=events)


@dataclass
class ActionResult:
    """A policy action after execution-time validation: the effective op, the mutation and the new slots.

    A valid ADVANCE or FOSSILIZE whose gate fails keeps its op (the policy chose it legally and is credited for
    it) but carries no mutation and only the SeedGateEvaluated event; `succeeded` is then False.
    """

    effective_op: LifecycleOp
    valid: bool
    invalid_reason: str
    target_slot: str
    mutations: list[Mutation]
    slots: list[SlotState]
    events: list[LifecyclePayload]
    gate: GateResult | None = None

    @property
    def succeeded(self) -> bool:
        """Whether the action did what it asked for (WAIT always does)."""
        return self.valid and (self.effective_op is LifecycleOp.WAIT or bool(self.mutations))


def execution_refusal(
    op: LifecycleOp,
    state: SlotState,
    blueprint: BlueprintAction,
    topology: Topology,
    *,
    lifecycle: LifecycleConfig,
    epoch: int,
) -> str:
    """Why (op, slot) cannot run on this state, or "" when it can (reference/tamiyo_simic.md §2.13)."""
    stage, mode = state.stage, state.controller.mode
    if op is LifecycleOp.WAIT:
        return ""
    if op in INTERNAL_OPS:
        return "; ".join(internal_op_refusals(op, state, lifecycle, epoch))
    if op is LifecycleOp.GERMINATE:
        if state.occupied:
            return f"germinate needs an empty slot; {state.slot_id} holds a seed in {stage.name}"
        if blueprint not in allowed_blueprints(lifecycle.blueprints, topology):
            return f"blueprint {blueprint.name} is not available on this {topology.value} host"
    elif op is LifecycleOp.ADVANCE:
        if stage not in (SeedStage.GERMINATED, SeedStage.TRAINING, SeedStage.BLENDING):
            return f"advance needs GERMINATED, TRAINING or BLENDING; {state.slot_id} is {stage.name}"
    elif op is LifecycleOp.FOSSILIZE:
        if stage is not SeedStage.HOLDING:
            return f"fossilize needs HOLDING; {state.slot_id} is {stage.name}"
    elif op is LifecycleOp.PRUNE:
        if stage not in LIVE_STAGES or not is_valid_transition(stage, SeedStage.PRUNED):
            return f"prune needs a live seed; {state.slot_id} is {stage.name}"
        if mode is not AlphaMode.HOLD:
            return f"prune waits for alpha HOLD; {state.slot_id} is ramping {mode.name}"
        if state.metrics.epochs_total < MIN_PRUNE_AGE:
            return f"prune needs age ≥ {MIN_PRUNE_AGE}; {state.slot_id} is {state.metrics.epochs_total} epochs old"
    elif op is LifecycleOp.SET_ALPHA_TARGET:
        if stage not in (SeedStage.BLENDING, SeedStage.HOLDING):
            return f"set_alpha_target needs BLENDING or HOLDING; {state.slot_id} is {stage.name}"
        if mode is not AlphaMode.HOLD:
            return f"set_alpha_target waits for alpha HOLD; {state.slot_id} is ramping {mode.name}"
    else:
        raise ValueError(f"execution_refusal: no rule for op {op.name}")
    return ""


def _change_for(action: FactoredAction, req: StepRequest, state: SlotState) -> tuple[SlotChange, Mutation]:
    """Run the lifecycle change for a validated action and name the mutation Tolaria must apply."""
    slot_id = state.slot_id
    op = action.op
    if op is LifecycleOp.GERMINATE:
        blend, algorithm = STYLE_TO_BLEND[action.style]
        tempo = TEMPO_EPOCHS[action.tempo]
        target = ALPHA_TARGET_VALUES[action.alpha_target]
        seed_id = f"{slot_id}-{blueprint_name(action.blueprint)}-e{req.epoch}"
        host_params = req.slot_config.host_param_count or req.report.host_params
        change = germinate_state(
            slot_id,
            seed_id,
            action.blueprint,
            blend,
            algorithm,
            tempo,
            target,
            req.epoch,
            host_params,
            req.report.val_accuracy,
        )
        return change, Germinate(
            slot_id=slot_id,
            seed_id=seed_id,
            blueprint=action.blueprint,
            blend=blend,
            alpha_algorithm=algorithm,
            blend_tempo_epochs=tempo,
            alpha_target=target,
        )
    if op is LifecycleOp.ADVANCE:
        change = advance_state(state, req.lifecycle.permissive_gates, req.slot_config.topology)
        return change, Advance(slot_id=slot_id, from_stage=state.stage, to_stage=change.state.stage)
    if op is LifecycleOp.FOSSILIZE:
        return fossilize_state(state, req.lifecycle.permissive_gates), Fossilize(slot_id=slot_id)
    if op in INTERNAL_OPS:
        change = internal_level_change(state, op, req.epoch)
        return change, SetInternalLevel(
            slot_id=slot_id,
            seed_id=state.seed_id,
            from_level=state.internal_level,
            to_level=change.state.internal_level,
        )
    if op not in (LifecycleOp.PRUNE, LifecycleOp.SET_ALPHA_TARGET):
        raise ValueError(f"_change_for: no lifecycle change for op {op.name}")
    curve, steepness = ALPHA_CURVE_SHAPES[action.alpha_curve]
    steps = ALPHA_SPEED_STEPS[action.alpha_speed]
    if op is LifecycleOp.PRUNE:
        change = schedule_prune_state(state, steps, curve, steepness, POLICY_INITIATOR, POLICY_INITIATOR)
        # Seeds that cannot ramp (pre-blending, or alpha already 0) are pruned at once: tell Tolaria so.
        instant = change.state.stage is SeedStage.PRUNED
        return change, Prune(
            slot_id=slot_id,
            steps=0 if instant else steps,
            curve=curve,
            steepness=steepness,
            reason=POLICY_INITIATOR,
            initiator=POLICY_INITIATOR,
        )
    target = ALPHA_TARGET_VALUES[action.alpha_target]
    algorithm = STYLE_TO_BLEND[action.style][1]
    change = set_alpha_target_state(state, target, steps, curve, steepness, algorithm)
    return change, SetAlphaTarget(
        slot_id=slot_id, target=target, steps=steps, curve=curve, steepness=steepness, alpha_algorithm=algorithm
    )


def execute(action: FactoredAction, req: StepRequest, ticked: list[SlotState]) -> ActionResult:
    """Validate the policy's action against the ticked slots and apply it; an invalid action becomes WAIT."""
    slots = list(ticked)
    if action.op is LifecycleOp.WAIT:
        return ActionResult(LifecycleOp.WAIT, True, "", "", [], slots, [])

    def invalid(reason: str, target_slot: str = "") -> ActionResult:
        return ActionResult(LifecycleOp.WAIT, False, reason, target_slot, [], slots, [])

    if not 0 <= action.slot < len(slots):
        return invalid(f"slot index {action.slot} is not one of the {len(slots)} enabled slots")
    state = slots[action.slot]
    reason = execution_refusal(
        action.op, state, action.blueprint, req.slot_config.topology, lifecycle=req.lifecycle, epoch=req.epoch
    )
    if reason:
        return invalid(reason, state.slot_id)
    change, mutation = _change_for(action, req, state)
    slots[action.slot] = change.state
    mutations: list[Mutation] = [mutation] if change.applied else []
    # A refusal after validation is a gate that said no: the action was legal, its effect is a wait.
    return ActionResult(action.op, True, change.reason, state.slot_id, mutations, slots, change.events, change.gate)
