"""Request-level lifecycle: validation, the per-epoch tick, action execution (reference/kasmina.md §1.4, §9;
reference/tamiyo_simic.md §2.13; ARCHITECTURE.md §11)."""

from __future__ import annotations

import math

import pytest
from msgspec.structs import replace

from leyline_schemas.decisions import FactoredAction
from leyline_schemas.directives import Advance, Fossilize, Germinate, Prune, SetAlphaTarget, StepRequest
from leyline_schemas.enums import (
    AlphaAlgorithm,
    AlphaCurve,
    AlphaCurveAction,
    AlphaMode,
    AlphaSpeedAction,
    AlphaTargetAction,
    BlendId,
    BlueprintAction,
    GerminationStyle,
    LifecycleOp,
    SeedStage,
    TempoAction,
    Topology,
)
from leyline_schemas.lifecycle import AlphaControllerState, LifecycleConfig, SlotState
from leyline_schemas.reports import SlotReport
from leyline_schemas.telemetry import SeedGateEvaluated, SeedStageChanged
from services.kasmina.lifecycle import (
    DEFAULT_EMBARGO_EPOCHS_AFTER_PRUNE,
    InvalidStepRequest,
    execute,
    tick,
    validate_request,
)

from .factories import empty_slots, report, request, seed

S = SeedStage
Op = LifecycleOp


# ---------------------------------------------------------------- validation


def _with_slot(state: SlotState, index: int = 1) -> StepRequest:
    slots = empty_slots()
    slots[index] = replace(state, slot_id=slots[index].slot_id)
    return request(slots)


@pytest.mark.parametrize(
    ("req", "field"),
    [
        (_with_slot(seed(S.UNKNOWN)), "slots[1].stage"),
        (
            _with_slot(replace(seed(S.BLENDING), controller=AlphaControllerState(alpha=math.nan))),
            "slots[1].controller.alpha",
        ),
        (
            _with_slot(replace(seed(S.BLENDING), controller=AlphaControllerState(alpha=1.5))),
            "slots[1].controller.alpha",
        ),
        (
            _with_slot(replace(seed(S.BLENDING), controller=AlphaControllerState(alpha_target=-0.1))),
            "slots[1].controller.alpha_target",
        ),
        (
            _with_slot(replace(seed(S.BLENDING), controller=AlphaControllerState(steps_total=2, steps_done=3))),
            "slots[1].controller.steps_done",
        ),
        (_with_slot(seed(S.TRAINING, epochs_total=-1)), "slots[1].metrics.epochs_total"),
        (_with_slot(seed(S.TRAINING, dwell=-2)), "slots[1].metrics.epochs_in_current_stage"),
        (_with_slot(replace(seed(S.TRAINING), seed_id="")), "slots[1].seed_id"),
        (_with_slot(replace(SlotState(slot_id="x"), seed_id="ghost")), "slots[1].seed_id"),
        (replace(request(empty_slots()), epoch=11), "report.epoch"),
        (replace(request(empty_slots()), slots=empty_slots(2)), "slots"),
        (
            replace(request(empty_slots()), slots=[SlotState(slot_id="r0c1"), *empty_slots(3)[1:]]),
            "slots[0].slot_id",
        ),
        (
            replace(request(empty_slots()), slots=[*empty_slots(2), SlotState(slot_id="r0c0")]),
            "slots[2].slot_id",
        ),
        (
            request(empty_slots(), epoch_report=report(slots=[SlotReport(slot_id="r9c9")])),
            "report.slots[0].slot_id",
        ),
        (request(empty_slots(), lifecycle=LifecycleConfig(auto_forward_gates=[4])), "lifecycle.auto_forward_gates[0]"),
        (request(empty_slots(), total_seeds=-1), "total_seeds"),
        (
            request(empty_slots(), epoch_report=report(slots=[SlotReport(slot_id="r0c2", gradient_health=math.nan)])),
            "report.slots[0].gradient_health",
        ),
        (_with_slot(seed(S.TRAINING, gradient_health=math.nan)), "slots[1].metrics.gradient_health"),
        (
            _with_slot(replace(seed(S.BLENDING), controller=AlphaControllerState(steps_total=-1))),
            "slots[1].controller.steps_total",
        ),
    ],
)
def test_inconsistent_requests_name_the_offending_field(req: StepRequest, field: str) -> None:
    with pytest.raises(InvalidStepRequest) as caught:
        validate_request(req)
    assert caught.value.field == field


def test_non_finite_host_metrics_are_left_to_the_governor() -> None:
    req = request(empty_slots(), epoch_report=report(val_loss=math.inf, val_accuracy=math.nan))
    validate_request(req)


# ---------------------------------------------------------------- tick


def test_tick_records_accuracy_and_moves_every_counter_exactly_once() -> None:
    before = seed(S.TRAINING, epochs_total=3, dwell=3, accuracy=60.0)
    after = tick(request([before], epoch_report=report(val_accuracy=64.0))).slots[0]
    m = after.metrics
    assert (m.epochs_total, m.epochs_in_current_stage) == (4, 4)
    assert (m.current_val_accuracy, m.best_val_accuracy, m.initial_val_accuracy) == (64.0, 64.0, 50.0)


def test_the_first_tick_sets_initial_and_stage_start_accuracy() -> None:
    fresh = replace(
        seed(S.GERMINATED), metrics=replace(seed(S.GERMINATED).metrics, epochs_total=0, epochs_in_current_stage=0)
    )
    m = tick(request([fresh], epoch_report=report(val_accuracy=33.0))).slots[0].metrics
    assert (m.initial_val_accuracy, m.accuracy_at_stage_start, m.best_val_accuracy) == (33.0, 33.0, 33.0)


def test_a_nan_accuracy_moves_the_counters_but_records_nothing() -> None:
    before = seed(S.TRAINING)
    m = tick(request([before], epoch_report=report(val_accuracy=math.nan))).slots[0].metrics
    assert m.epochs_total == before.metrics.epochs_total + 1
    assert m.current_val_accuracy == before.metrics.current_val_accuracy


def test_tick_copies_measurements_and_updates_contribution_velocity() -> None:
    state = replace(seed(S.BLENDING, contribution=2.0), metrics=replace(seed(S.BLENDING).metrics, gradient_health=0.5))
    state = replace(state, metrics=replace(state.metrics, counterfactual_contribution=2.0, contribution_velocity=1.0))
    fresh = SlotReport(
        slot_id="r0c0",
        contribution=4.0,
        interaction_sum=0.3,
        boost_received=0.2,
        upstream_alpha_sum=0.5,
        downstream_alpha_sum=0.25,
        gradient_norm=2.0,
        gradient_health=0.9,
        seed_gradient_norm_ratio=0.4,
        has_vanishing=False,
        has_exploding=True,
        seed_param_count=1234,
    )
    m = tick(request([state], epoch_report=report(slots=[fresh]))).slots[0].metrics
    assert m.counterfactual_contribution == 4.0 and m.epochs_since_counterfactual == 0
    assert m.contribution_velocity == pytest.approx(0.7 * 1.0 + 0.3 * (4.0 - 2.0))
    assert (m.gradient_health, m.previous_gradient_health, m.seed_gradient_norm_ratio) == (0.9, 0.5, 0.4)
    assert (m.interaction_sum, m.boost_received, m.upstream_alpha_sum, m.downstream_alpha_sum) == (0.3, 0.2, 0.5, 0.25)
    assert (m.gradient_norm, m.has_vanishing, m.has_exploding, m.seed_param_count) == (2.0, False, True, 1234)


def test_a_stale_counterfactual_ages_and_keeps_its_velocity() -> None:
    state = seed(S.BLENDING, contribution=2.0)
    stale = SlotReport(slot_id="r0c0", contribution=None)
    m = tick(request([state], epoch_report=report(slots=[stale]))).slots[0].metrics
    assert (m.counterfactual_contribution, m.epochs_since_counterfactual) == (2.0, 1)
    never = tick(request([seed(S.TRAINING)])).slots[0].metrics
    assert never.epochs_since_counterfactual is None


def test_blending_makes_one_controller_step_per_tick() -> None:
    ramp = AlphaControllerState(alpha=0.0, alpha_target=1.0, mode=AlphaMode.UP, steps_total=4, curve=AlphaCurve.LINEAR)
    state = replace(seed(S.BLENDING), controller=ramp)
    after = tick(request([state])).slots[0]
    assert after.controller.alpha == 0.25 and after.controller.steps_done == 1


def _auto(*gates: int, permissive: bool = True) -> LifecycleConfig:
    return LifecycleConfig(auto_forward_gates=list(gates), permissive_gates=permissive, max_epochs=40)


def test_auto_forward_g1_and_g2_with_g2_waiting_for_the_dwell() -> None:
    germinated = tick(request([seed(S.GERMINATED)], lifecycle=_auto(1))).slots[0]
    assert germinated.stage is S.TRAINING
    assert tick(request([seed(S.GERMINATED)], lifecycle=_auto())).slots[0].stage is S.GERMINATED
    healthy = report(slots=[SlotReport(slot_id="r0c0", gradient_health=0.9)])
    young = seed(S.TRAINING, dwell=8)
    assert tick(request([young], lifecycle=_auto(2), epoch_report=healthy)).slots[0].stage is S.TRAINING
    ready = seed(S.TRAINING, dwell=9)
    assert tick(request([ready], lifecycle=_auto(2), epoch_report=healthy)).slots[0].stage is S.BLENDING


def test_auto_forward_g3_fires_when_the_ramp_lands_at_full_amplitude() -> None:
    last_step = AlphaControllerState(
        alpha=0.8, alpha_start=0.0, alpha_target=1.0, mode=AlphaMode.UP, steps_total=5, steps_done=4
    )
    state = replace(seed(S.BLENDING), controller=last_step)
    result = tick(request([state], lifecycle=_auto(3)))
    assert result.slots[0].stage is S.HOLDING and result.slots[0].controller.alpha == 1.0
    partial = seed(S.BLENDING, alpha=0.5, target=0.5)
    quiet = tick(request([partial], lifecycle=_auto(3)))
    assert quiet.slots[0].stage is S.BLENDING and quiet.events == []
    strict_young = replace(seed(S.BLENDING, dwell=2), controller=last_step)
    assert tick(request([strict_young], lifecycle=_auto(3, permissive=False))).slots[0].stage is S.BLENDING


def test_instant_prune_frees_the_slot_after_exactly_one_plus_embargo_plus_one_ticks() -> None:
    """I2: germinate is refused through PRUNED/EMBARGOED/RESETTING and allowed again at tick 1 + 5 + 1."""
    germinate = FactoredAction(op=Op.GERMINATE, slot=0, blueprint=BlueprintAction.NORM)
    prune = FactoredAction(op=Op.PRUNE, slot=0, alpha_speed=AlphaSpeedAction.INSTANT)
    slots = [seed(S.TRAINING)]
    pruned = execute(prune, request(slots), slots)
    assert pruned.valid and pruned.slots[0].stage is S.PRUNED
    slots = pruned.slots
    assert not execute(germinate, request(slots), slots).valid
    cooldown = 1 + DEFAULT_EMBARGO_EPOCHS_AFTER_PRUNE + 1
    for epoch in range(11, 11 + cooldown):
        req = request(slots, epoch=epoch)
        slots = tick(req).slots
        refused = execute(germinate, req, slots)
        if epoch < 11 + cooldown - 1:
            assert slots[0].stage in (S.EMBARGOED, S.RESETTING)
            assert not refused.valid and refused.effective_op is Op.WAIT and refused.mutations == []
    assert slots[0] == SlotState(slot_id="r0c0")
    assert execute(germinate, request(slots, epoch=epoch), slots).valid


# ---------------------------------------------------------------- execute


def test_wait_is_always_valid_and_changes_nothing() -> None:
    slots = [seed(S.TRAINING)]
    result = execute(FactoredAction(), request(slots), slots)
    assert (result.effective_op, result.valid, result.mutations, result.slots) == (Op.WAIT, True, [], slots)


def test_germinate_maps_the_heads_and_names_the_seed() -> None:
    action = FactoredAction(
        op=Op.GERMINATE,
        slot=1,
        blueprint=BlueprintAction.BOTTLENECK,
        style=GerminationStyle.GATED_GATE,
        tempo=TempoAction.SLOW,
        alpha_target=AlphaTargetAction.SEVENTY,
    )
    slots = empty_slots()
    result = execute(action, request(slots, epoch=7), slots)
    assert result.valid and result.effective_op is Op.GERMINATE and result.target_slot == "r0c1"
    assert result.mutations == [
        Germinate(
            slot_id="r0c1",
            seed_id="r0c1-bottleneck-e7",
            blueprint=BlueprintAction.BOTTLENECK,
            blend=BlendId.GATED,
            alpha_algorithm=AlphaAlgorithm.GATE,
            blend_tempo_epochs=8,
            alpha_target=0.7,
        )
    ]
    assert result.slots[1].stage is S.GERMINATED and result.slots[0] == slots[0]


@pytest.mark.parametrize(
    ("action", "slots", "reason"),
    [
        (FactoredAction(op=Op.GERMINATE, slot=5, blueprint=BlueprintAction.NORM), empty_slots(), "slot index"),
        (FactoredAction(op=Op.GERMINATE, blueprint=BlueprintAction.NOOP), empty_slots(), "blueprint"),
        (FactoredAction(op=Op.GERMINATE, blueprint=BlueprintAction.LORA), empty_slots(), "blueprint"),
        (FactoredAction(op=Op.GERMINATE, blueprint=BlueprintAction.NORM), [seed(S.EMBARGOED)], "empty slot"),
        (FactoredAction(op=Op.ADVANCE), [seed(S.HOLDING)], "advance"),
        (FactoredAction(op=Op.FOSSILIZE), [seed(S.BLENDING)], "HOLDING"),
        (FactoredAction(op=Op.PRUNE), [seed(S.TRAINING, epochs_total=4)], "age"),
        (FactoredAction(op=Op.PRUNE), [seed(S.FOSSILIZED)], "live seed"),
        (FactoredAction(op=Op.PRUNE), [seed(S.BLENDING, target=1.0, mode=AlphaMode.UP)], "HOLD"),
        (FactoredAction(op=Op.SET_ALPHA_TARGET), [seed(S.TRAINING)], "BLENDING or HOLDING"),
        (FactoredAction(op=Op.SET_ALPHA_TARGET), [seed(S.BLENDING, target=1.0, mode=AlphaMode.UP)], "HOLD"),
    ],
)
def test_invalid_actions_become_wait_with_a_reason(action: FactoredAction, slots: list[SlotState], reason: str) -> None:
    result = execute(action, request(slots), slots)
    assert (result.effective_op, result.valid, result.mutations, result.events) == (Op.WAIT, False, [], [])
    assert reason in result.invalid_reason and result.slots == slots


def test_a_failed_gate_is_a_valid_action_without_a_mutation() -> None:
    slots = [seed(S.BLENDING, alpha=0.5, target=0.5)]
    result = execute(FactoredAction(op=Op.ADVANCE), request(slots), slots)
    assert result.valid and result.effective_op is Op.ADVANCE and not result.succeeded
    assert result.mutations == [] and result.slots == slots
    assert [type(e) for e in result.events] == [SeedGateEvaluated]
    assert "G3" in result.invalid_reason


def test_advance_and_fossilize_name_their_mutations() -> None:
    slots = [seed(S.GERMINATED)]
    advanced = execute(FactoredAction(op=Op.ADVANCE), request(slots), slots)
    assert advanced.mutations == [Advance(slot_id="r0c0", from_stage=S.GERMINATED, to_stage=S.TRAINING)]
    assert advanced.succeeded
    holding = [seed(S.HOLDING, contribution=2.0)]
    fossilized = execute(FactoredAction(op=Op.FOSSILIZE), request(holding), holding)
    assert fossilized.mutations == [Fossilize(slot_id="r0c0")] and fossilized.slots[0].stage is S.FOSSILIZED


def test_policy_prune_uses_speed_and_curve_and_is_instant_before_blending() -> None:
    action = FactoredAction(op=Op.PRUNE, alpha_speed=AlphaSpeedAction.FAST, alpha_curve=AlphaCurveAction.SIGMOID_SHARP)
    blending = [seed(S.BLENDING)]
    scheduled = execute(action, request(blending), blending)
    assert scheduled.mutations == [
        Prune(slot_id="r0c0", steps=3, curve=AlphaCurve.SIGMOID, steepness=24.0, reason="policy", initiator="policy")
    ]
    assert scheduled.slots[0].stage is S.BLENDING and scheduled.slots[0].controller.mode is AlphaMode.DOWN
    training = [seed(S.TRAINING)]
    instant = execute(action, request(training), training)
    assert instant.mutations[0].steps == 0 and instant.slots[0].stage is S.PRUNED  # type: ignore[union-attr]


def test_set_alpha_target_maps_target_speed_curve_and_style() -> None:
    action = FactoredAction(
        op=Op.SET_ALPHA_TARGET,
        alpha_target=AlphaTargetAction.HALF,
        alpha_speed=AlphaSpeedAction.MEDIUM,
        alpha_curve=AlphaCurveAction.COSINE,
        style=GerminationStyle.LINEAR_MULTIPLY,
    )
    holding = [seed(S.HOLDING)]
    result = execute(action, request(holding), holding)
    assert result.mutations == [
        SetAlphaTarget(
            slot_id="r0c0",
            target=0.5,
            steps=5,
            curve=AlphaCurve.COSINE,
            steepness=12.0,
            alpha_algorithm=AlphaAlgorithm.MULTIPLY,
        )
    ]
    assert result.slots[0].stage is S.BLENDING
    assert [type(e) for e in result.events] == [SeedStageChanged]


def test_transformer_hosts_accept_only_their_blueprints() -> None:
    slots = empty_slots(1)
    lora = FactoredAction(op=Op.GERMINATE, blueprint=BlueprintAction.LORA)
    assert execute(lora, request(slots, topology=Topology.TRANSFORMER), slots).valid
    conv = FactoredAction(op=Op.GERMINATE, blueprint=BlueprintAction.CONV_HEAVY)
    assert not execute(conv, request(slots, topology=Topology.TRANSFORMER), slots).valid
