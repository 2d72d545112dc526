"""Per-seed transitions: the table, germinate, advance, prune, scheduled prune, retarget, fossilize.

Reference/kasmina.md §1.2–1.6 and §4.6; invariants I1, I7, I9 and I10 (state side).
"""

from __future__ import annotations

import pytest
from msgspec.structs import replace

from leyline_schemas.enums import (
    AlphaAlgorithm,
    AlphaCurve,
    AlphaMode,
    BlendId,
    BlueprintAction,
    SeedStage,
    Topology,
)
from leyline_schemas.lifecycle import SlotState
from leyline_schemas.telemetry import SeedGateEvaluated, SeedGerminated, SeedPruned, SeedStageChanged
from services.kasmina.transitions import (
    GOVERNOR_PRUNE_REASONS,
    VALID_TRANSITIONS,
    TickRules,
    advance_state,
    fossilize_state,
    germinate_state,
    next_stage,
    prune_state,
    schedule_prune_state,
    set_alpha_target_state,
    tick_slot,
)

from .factories import seed

S = SeedStage


def test_transition_table_matches_the_reference_exactly() -> None:
    assert VALID_TRANSITIONS == {
        S.UNKNOWN: (S.DORMANT,),
        S.DORMANT: (S.GERMINATED,),
        S.GERMINATED: (S.TRAINING, S.PRUNED),
        S.TRAINING: (S.BLENDING, S.PRUNED),
        S.BLENDING: (S.HOLDING, S.PRUNED),
        S.HOLDING: (S.FOSSILIZED, S.BLENDING, S.PRUNED),
        S.FOSSILIZED: (),
        S.PRUNED: (S.EMBARGOED,),
        S.EMBARGOED: (S.RESETTING,),
        S.RESETTING: (S.DORMANT,),
    }
    # Order matters: the default advance out of HOLDING finalises the seed.
    assert [next_stage(s) for s in (S.GERMINATED, S.TRAINING, S.BLENDING, S.HOLDING)] == [
        S.TRAINING,
        S.BLENDING,
        S.HOLDING,
        S.FOSSILIZED,
    ]


@pytest.mark.parametrize("stage", [S.FOSSILIZED, S.PRUNED, S.EMBARGOED])
def test_advance_never_targets_a_failure_stage_or_leaves_a_fossil(stage: SeedStage) -> None:
    with pytest.raises(ValueError, match="I1"):
        next_stage(stage)


def test_germinate_builds_a_germinated_seed_with_its_baseline() -> None:
    change = germinate_state(
        "r0c1", "r0c1-norm-e3", BlueprintAction.NORM, BlendId.LINEAR, AlphaAlgorithm.MULTIPLY, 8, 0.7, 3, 500, 42.0
    )
    state = change.state
    assert change.applied and state.stage is S.GERMINATED and state.previous_stage is S.DORMANT
    assert (state.seed_id, state.blueprint, state.blend, state.alpha_algorithm) == (
        "r0c1-norm-e3",
        BlueprintAction.NORM,
        BlendId.LINEAR,
        AlphaAlgorithm.MULTIPLY,
    )
    assert (state.blend_tempo_epochs, state.alpha_target_on_blend, state.germinated_epoch) == (8, 0.7, 3)
    assert state.controller.alpha == 0.0 and state.controller.mode is AlphaMode.HOLD
    assert not state.isolate_gradients
    m = state.metrics
    assert (m.accuracy_at_germination, m.current_val_accuracy, m.host_param_count, m.epochs_total) == (
        42.0,
        42.0,
        500,
        0,
    )
    assert isinstance(change.events[0], SeedGerminated)


def test_germinate_rejects_a_mismatched_gate_and_a_zero_target() -> None:
    with pytest.raises(ValueError, match="together"):
        germinate_state("r0c0", "s", BlueprintAction.NORM, BlendId.GATED, AlphaAlgorithm.ADD, 5, 1.0, 0, 0, 0.0)
    with pytest.raises(ValueError, match="alpha_target"):
        germinate_state("r0c0", "s", BlueprintAction.NORM, BlendId.LINEAR, AlphaAlgorithm.ADD, 5, 0.0, 0, 0, 0.0)
    with pytest.raises(ValueError, match="G0"):
        germinate_state("r0c0", "", BlueprintAction.NORM, BlendId.LINEAR, AlphaAlgorithm.ADD, 5, 1.0, 0, 0, 0.0)


def test_advance_to_training_isolates_gradients_and_resets_the_stage_baseline() -> None:
    state = seed(S.GERMINATED, dwell=4, accuracy=61.0, stage_start_accuracy=57.0)
    change = advance_state(state, permissive=False)
    moved = change.state
    assert moved.stage is S.TRAINING and moved.isolate_gradients
    assert (moved.previous_stage, moved.previous_epochs_in_stage) == (S.GERMINATED, 4)
    assert (moved.metrics.epochs_in_current_stage, moved.metrics.accuracy_at_stage_start) == (0, 61.0)
    gate, changed = change.events
    assert isinstance(gate, SeedGateEvaluated) and gate.passed and gate.gate == 1
    assert isinstance(changed, SeedStageChanged) and changed.accuracy_delta == pytest.approx(4.0)


@pytest.mark.parametrize(
    ("blend", "curve"),
    [(BlendId.LINEAR, AlphaCurve.LINEAR), (BlendId.SIGMOID, AlphaCurve.SIGMOID), (BlendId.GATED, AlphaCurve.LINEAR)],
)
@pytest.mark.parametrize(("topology", "isolate"), [(Topology.CNN, True), (Topology.TRANSFORMER, False)])
def test_advance_to_blending_starts_the_ramp(
    blend: BlendId, curve: AlphaCurve, topology: Topology, isolate: bool
) -> None:
    state = replace(seed(S.TRAINING, gradient_health=0.9, blend=blend), blend_tempo_epochs=8, alpha_target_on_blend=0.7)
    moved = advance_state(state, permissive=True, topology=topology).state
    c = moved.controller
    assert moved.stage is S.BLENDING and moved.isolate_gradients is isolate
    assert (c.mode, c.curve, c.alpha_start, c.alpha_target, c.steps_total, c.steps_done) == (
        AlphaMode.UP,
        curve,
        0.0,
        0.7,
        8,
        0,
    )


def test_blending_to_holding_forces_full_alpha() -> None:
    nearly = seed(S.BLENDING, alpha=1.0 - 5e-7, target=1.0)
    moved = advance_state(nearly, permissive=True).state
    assert moved.stage is S.HOLDING
    assert (moved.controller.alpha, moved.controller.alpha_start, moved.controller.mode) == (1.0, 1.0, AlphaMode.HOLD)


def test_a_failed_gate_changes_nothing_but_reports_the_gate() -> None:
    partial = seed(S.BLENDING, alpha=0.5, target=0.5)
    change = advance_state(partial, permissive=True)
    assert not change.applied and change.state == partial
    assert change.gate is not None and not change.gate.passed
    assert [type(e) for e in change.events] == [SeedGateEvaluated]


def test_fossilize_needs_holding_and_g5_then_holds_alpha_at_one() -> None:
    assert not fossilize_state(seed(S.BLENDING, contribution=3.0), permissive=True).applied
    assert not fossilize_state(seed(S.HOLDING), permissive=True).applied
    change = fossilize_state(seed(S.HOLDING, contribution=3.0), permissive=False)
    assert change.applied and change.state.stage is S.FOSSILIZED and change.state.controller.alpha == 1.0
    assert [type(e).__name__ for e in change.events] == ["SeedGateEvaluated", "SeedStageChanged", "SeedFossilized"]


@pytest.mark.parametrize("stage", [S.GERMINATED, S.TRAINING, S.BLENDING, S.HOLDING])
def test_prune_keeps_the_state_and_closes_the_controller_at_zero(stage: SeedStage) -> None:
    state = seed(stage, contribution=0.4)
    change = prune_state(state, "policy", "policy")
    pruned = change.state
    assert pruned.stage is S.PRUNED and pruned.previous_stage is stage
    assert (pruned.seed_id, pruned.blueprint) == (state.seed_id, state.blueprint)
    assert pruned.metrics.counterfactual_contribution == 0.4
    c = pruned.controller
    assert (c.alpha, c.alpha_start, c.alpha_target, c.mode, c.steps_total, c.steps_done) == (
        0.0,
        0.0,
        0.0,
        AlphaMode.HOLD,
        0,
        0,
    )
    assert not pruned.isolate_gradients and not pruned.auto_pruned
    assert (pruned.prune_reason, pruned.prune_initiator) == ("policy", "policy")
    assert [type(e) for e in change.events] == [SeedStageChanged, SeedPruned]


@pytest.mark.parametrize("reason", [*sorted(GOVERNOR_PRUNE_REASONS), "policy", "governor", "scheduled_prune"])
def test_auto_pruned_only_for_governor_reasons(reason: str) -> None:
    pruned = prune_state(seed(S.TRAINING), reason, "governor").state
    assert pruned.auto_pruned is (reason in GOVERNOR_PRUNE_REASONS)


def test_prune_refuses_fossils_and_empty_slots() -> None:
    fossil = seed(S.FOSSILIZED)
    assert prune_state(fossil, "policy").state == fossil and not prune_state(fossil, "policy").applied
    assert not prune_state(seed(S.EMBARGOED), "policy").applied


def test_schedule_prune_refuses_fossils_and_ramping_controllers() -> None:
    assert not schedule_prune_state(seed(S.FOSSILIZED), 3, AlphaCurve.LINEAR, 12.0, "policy").applied
    ramping = seed(S.BLENDING, alpha=0.5, target=1.0, mode=AlphaMode.UP)
    refused = schedule_prune_state(ramping, 3, AlphaCurve.LINEAR, 12.0, "policy")
    assert not refused.applied and "HOLD" in refused.reason


@pytest.mark.parametrize(
    ("state", "steps"),
    [(seed(S.BLENDING), 0), (seed(S.BLENDING, alpha=0.0), 5), (seed(S.GERMINATED), 5), (seed(S.TRAINING), 5)],
)
def test_schedule_prune_is_instant_where_no_ramp_makes_sense(state: SlotState, steps: int) -> None:
    change = schedule_prune_state(state, steps, AlphaCurve.LINEAR, 12.0, "policy")
    assert change.state.stage is S.PRUNED


def test_schedule_prune_from_holding_reenters_blending_and_ramps_down() -> None:
    change = schedule_prune_state(seed(S.HOLDING), 3, AlphaCurve.COSINE, 6.0, "policy", "policy")
    state = change.state
    assert [type(e) for e in change.events] == [SeedStageChanged]
    assert state.stage is S.BLENDING and state.previous_stage is S.HOLDING
    assert (state.controller.mode, state.controller.alpha_target, state.controller.steps_total) == (
        AlphaMode.DOWN,
        0.0,
        3,
    )
    assert (state.controller.curve, state.controller.steepness) == (AlphaCurve.COSINE, 6.0)
    assert (state.prune_reason, state.prune_initiator) == ("policy", "policy")


def test_scheduled_prune_fires_on_the_tick_alpha_reaches_zero() -> None:
    state = schedule_prune_state(seed(S.BLENDING, alpha=0.6), 3, AlphaCurve.LINEAR, 12.0, "policy", "policy").state
    rules = TickRules(permissive=True)
    for _ in range(2):
        change = tick_slot(state, rules)
        state = change.state
        assert state.stage is S.BLENDING and 0.0 < state.controller.alpha < 0.6
    change = tick_slot(state, rules)
    assert change.state.stage is S.PRUNED
    pruned_event = change.events[-1]
    assert isinstance(pruned_event, SeedPruned) and (pruned_event.reason, pruned_event.initiator) == (
        "policy",
        "policy",
    )


def test_partial_target_from_holding_reenters_blending() -> None:
    change = set_alpha_target_state(seed(S.HOLDING), 0.5, 3, AlphaCurve.LINEAR, 12.0, AlphaAlgorithm.MULTIPLY)
    state = change.state
    assert change.applied and state.stage is S.BLENDING
    assert (state.controller.mode, state.controller.alpha_target, state.alpha_algorithm) == (
        AlphaMode.DOWN,
        0.5,
        AlphaAlgorithm.MULTIPLY,
    )


def test_full_target_from_holding_stays_in_holding() -> None:
    change = set_alpha_target_state(seed(S.HOLDING), 1.0, 3, AlphaCurve.LINEAR, 12.0)
    assert change.applied and change.state.stage is S.HOLDING and change.state.controller.mode is AlphaMode.HOLD


def test_set_alpha_target_refusals() -> None:
    assert not set_alpha_target_state(seed(S.FOSSILIZED), 0.5, 3, AlphaCurve.LINEAR, 12.0).applied
    assert not set_alpha_target_state(seed(S.TRAINING), 0.5, 3, AlphaCurve.LINEAR, 12.0).applied
    ramping = seed(S.BLENDING, alpha=0.5, target=1.0, mode=AlphaMode.UP)
    assert not set_alpha_target_state(ramping, 0.7, 3, AlphaCurve.LINEAR, 12.0).applied
    with pytest.raises(ValueError, match="prune"):
        set_alpha_target_state(seed(S.BLENDING), 0.0, 3, AlphaCurve.LINEAR, 12.0)
