"""GROW_INTERNAL / SHRINK_INTERNAL in Kasmina's pure core: validation, masks, execution and the tick
(plans/kasmina2-phase0.md §4.3, §5; invariants 5–17 of §11)."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from msgspec.structs import replace

from leyline_schemas.decisions import HEAD_NAMES, Decision, FactoredAction
from leyline_schemas.directives import Advance, Fossilize, Germinate, Prune, SetAlphaTarget, SetInternalLevel
from leyline_schemas.enums import (
    CNN_BLUEPRINTS,
    INTERNAL_OP_STAGES,
    TRANSFORMER_BLUEPRINTS,
    AlphaMode,
    BlueprintAction,
    DecisionOutcome,
    LifecycleOp,
    SeedInternalKind,
    SeedStage,
    Topology,
)
from leyline_schemas.heads import CANONICAL_VALUES, causal_heads, is_forced, op_conditioned_mask
from leyline_schemas.lifecycle import LifecycleConfig, SlotState
from leyline_schemas.telemetry import SeedGerminated, SeedInternalLevelChanged
from services.kasmina.lifecycle import InvalidStepRequest, execute, tick, validate_request
from services.kasmina.masks import compute_masks
from services.kasmina.step import complete_step, prepare_step

from .factories import empty_slots, request, seed, slot_config

Op = LifecycleOp
S = SeedStage
GROW, SHRINK = Op.GROW_INTERNAL, Op.SHRINK_INTERNAL
LADDER = BlueprintAction.CONV_LADDER
EPOCH = 10
OCCUPIED_STAGES = [s for s in SeedStage if s not in (S.UNKNOWN, S.DORMANT)]


def ladder(stage: SeedStage = S.HOLDING, level: int = 1, **kwargs: object) -> SlotState:
    return seed(stage, blueprint=LADDER, level=level, **kwargs)  # type: ignore[arg-type]


def masks_for(slots: list[SlotState], lifecycle: LifecycleConfig | None = None, epoch: int = EPOCH):  # type: ignore[no-untyped-def]
    return compute_masks(slots, slot_config(len(slots)), lifecycle or LifecycleConfig(), 0, epoch=epoch)


def expected_row(op: LifecycleOp, state: SlotState, lifecycle: LifecycleConfig, epoch: int) -> bool:
    """§5.2 item 2, written out independently of the code under test."""
    mode = state.controller.mode
    boundary = state.internal_level < state.internal_max_level if op is GROW else state.internal_level > 0
    cooldown = lifecycle.internal_op_cooldown_epochs
    cooled = (
        cooldown == 0
        or state.internal_level_changed_epoch < 0
        or epoch - state.internal_level_changed_epoch >= cooldown
    )
    return (
        state.internal_kind is not SeedInternalKind.NONE
        and state.stage in INTERNAL_OP_STAGES
        and mode is not AlphaMode.DOWN
        and boundary
        and (not lifecycle.internal_ops_require_alpha_hold or mode is AlphaMode.HOLD)
        and cooled
    )


# --- Invariant 5: V1–V6 name the field -------------------------------------------------------------------------


@given(level=st.integers(-3, 8), top=st.integers(-2, 6))
def test_v1_v2_level_outside_its_range_is_refused_by_name(level: int, top: int) -> None:
    state = replace(ladder(), internal_level=level, internal_max_level=top)
    req = request([state])
    if top < 1:
        with pytest.raises(InvalidStepRequest) as err:
            validate_request(req)
        assert err.value.field == "slots[0].internal_max_level"
    elif not 0 <= level <= top:
        with pytest.raises(InvalidStepRequest) as err:
            validate_request(req)
        assert err.value.field == "slots[0].internal_level"
    elif top != 4:
        with pytest.raises(InvalidStepRequest) as err:
            validate_request(req)
        assert err.value.field == "slots[0].internal_max_level"  # V4: the max is SEED_INTERNALS'
    else:
        validate_request(req)


@given(level=st.integers(0, 4), top=st.integers(1, 4))
def test_v3_kind_none_needs_level_zero_of_one(level: int, top: int) -> None:
    state = replace(seed(S.TRAINING), internal_level=level, internal_max_level=top)
    if (level, top) == (0, 1):
        validate_request(request([state]))
    else:
        with pytest.raises(InvalidStepRequest) as err:
            validate_request(request([state]))
        assert err.value.field == "slots[0].internal_level"


def test_v4_kind_must_be_the_blueprints() -> None:
    wrong_kind = replace(seed(S.TRAINING), internal_kind=SeedInternalKind.CONV_LADDER, internal_max_level=4)
    with pytest.raises(InvalidStepRequest) as err:
        validate_request(request([wrong_kind]))
    assert err.value.field == "slots[0].internal_kind"
    no_kind = replace(ladder(), internal_kind=SeedInternalKind.NONE, internal_level=0, internal_max_level=1)
    with pytest.raises(InvalidStepRequest) as err:
        validate_request(request([no_kind]))
    assert err.value.field == "slots[0].internal_kind"


def test_v5_an_empty_slot_has_no_kind() -> None:
    empty = replace(SlotState(slot_id="r0c0"), internal_kind=SeedInternalKind.CONV_LADDER, internal_max_level=4)
    with pytest.raises(InvalidStepRequest) as err:
        validate_request(request([empty]))
    assert err.value.field == "slots[0].internal_kind"


@given(changed=st.integers(-5, 20))
def test_v6_the_last_change_lies_between_germination_and_now(changed: int) -> None:
    state = ladder(level_changed_epoch=changed)  # germinated at epoch 1, request at EPOCH
    if changed == -1 or 1 <= changed <= EPOCH:
        validate_request(request([state], epoch=EPOCH))
    else:
        with pytest.raises(InvalidStepRequest) as err:
            validate_request(request([state], epoch=EPOCH))
        assert err.value.field == "slots[0].internal_level_changed_epoch"


# --- Invariant 6: germination sets the internal fields ---------------------------------------------------------


@pytest.mark.parametrize("blueprint", [b for b in CNN_BLUEPRINTS if b is not BlueprintAction.NOOP])
def test_germination_takes_the_internal_spec(blueprint: BlueprintAction) -> None:
    req = request(empty_slots(1))
    result = execute(FactoredAction(op=Op.GERMINATE, slot=0, blueprint=blueprint), req, tick(req).slots)
    state = result.slots[0]
    expected = (SeedInternalKind.CONV_LADDER, 1, 4, -1) if blueprint is LADDER else (SeedInternalKind.NONE, 0, 1, -1)
    got = (state.internal_kind, state.internal_level, state.internal_max_level, state.internal_level_changed_epoch)
    assert got == expected
    event = next(e for e in result.events if isinstance(e, SeedGerminated))
    assert (event.internal_level, event.internal_max_level) == expected[1:3]


# --- Invariant 7 and 15: the rows are exactly the formulas -----------------------------------------------------


@given(
    stage=st.sampled_from(OCCUPIED_STAGES),
    mode=st.sampled_from(list(AlphaMode)),
    blueprint=st.sampled_from([LADDER, BlueprintAction.CONV_LIGHT, BlueprintAction.NORM]),
    level=st.integers(0, 4),
    changed=st.just(-1) | st.integers(1, EPOCH),
    cooldown=st.integers(0, 6),
    hold_only=st.booleans(),
)
def test_internal_rows_equal_the_formulas(
    stage: SeedStage,
    mode: AlphaMode,
    blueprint: BlueprintAction,
    level: int,
    changed: int,
    cooldown: int,
    hold_only: bool,
) -> None:
    state = seed(stage, mode=mode, blueprint=blueprint, level=level if blueprint is LADDER else None)
    state = replace(state, internal_level_changed_epoch=changed if blueprint is LADDER else -1)
    lifecycle = LifecycleConfig(internal_op_cooldown_epochs=cooldown, internal_ops_require_alpha_hold=hold_only)
    masks = masks_for([state, SlotState(slot_id="r0c1")], lifecycle)
    for op in (GROW, SHRINK):
        assert masks.slot_by_op[op] == [expected_row(op, state, lifecycle, EPOCH), False]
        assert masks.op[op] == masks.slot_by_op[op][0]


def test_the_nine_stage_table() -> None:
    legal = {S.TRAINING, S.BLENDING, S.HOLDING}
    for stage in OCCUPIED_STAGES:
        masks = masks_for([ladder(stage, level=2)])
        assert masks.slot_by_op[GROW] == [stage in legal], stage.name
        assert masks.slot_by_op[SHRINK] == [stage in legal], stage.name
    assert masks_for(empty_slots(1)).slot_by_op[GROW] == [False]


def test_boundaries_mask_one_direction_each() -> None:
    assert masks_for([ladder(level=0)]).op[GROW] and not masks_for([ladder(level=0)]).op[SHRINK]
    assert masks_for([ladder(level=4)]).op[SHRINK] and not masks_for([ladder(level=4)]).op[GROW]


@given(changed=st.integers(1, EPOCH), cooldown=st.integers(0, 12))
@example(changed=EPOCH, cooldown=1)
@example(changed=EPOCH - 1, cooldown=1)
@example(changed=EPOCH - 3, cooldown=3)
@example(changed=EPOCH - 2, cooldown=3)
def test_cooldown_masks_exactly_while_it_runs(changed: int, cooldown: int) -> None:
    state = ladder(level=2, level_changed_epoch=changed)
    masks = masks_for([state], LifecycleConfig(internal_op_cooldown_epochs=cooldown))
    cooling = cooldown > 0 and EPOCH - changed < cooldown
    assert masks.op[GROW] is (not cooling) and masks.op[SHRINK] is (not cooling)


@pytest.mark.parametrize("mode", list(AlphaMode))
def test_hold_gating_masks_exactly_the_up_mode(mode: AlphaMode) -> None:
    state = ladder(S.BLENDING, level=2, mode=mode)
    free = masks_for([state]).op[GROW]
    gated = masks_for([state], LifecycleConfig(internal_ops_require_alpha_hold=True)).op[GROW]
    assert free is (mode is not AlphaMode.DOWN)
    assert gated is (mode is AlphaMode.HOLD)


# --- Invariants 8 and 9: no empty row, not forced, causal heads ------------------------------------------------


def test_a_step_where_only_wait_and_an_internal_op_are_legal_is_not_forced() -> None:
    state = ladder(S.TRAINING, level=4, epochs_total=2)  # too young to prune, at max: only SHRINK
    masks = masks_for([state], LifecycleConfig(auto_forward_gates=[1, 2, 3]))  # the tick advances, not the policy
    assert [op for op in Op if masks.op[op]] == [Op.WAIT, SHRINK]
    assert not is_forced(masks)


@pytest.mark.parametrize("op", [GROW, SHRINK])
def test_internal_ops_use_only_op_and_slot(op: LifecycleOp) -> None:
    assert causal_heads(op) == {"op", "slot"}
    masks = masks_for([ladder(level=2), SlotState(slot_id="r0c1")])
    for head in HEAD_NAMES:
        row = op_conditioned_mask(masks, op, head)
        if head == "slot":
            assert row == [True, False]
        elif head != "op":
            assert sum(row) == 1 and row.index(True) == CANONICAL_VALUES[head]


# --- Invariants 10, 11, 13, 17: execution ----------------------------------------------------------------------


def _decide(req_slots: list[SlotState], op: LifecycleOp, slot: int = 0, epoch: int = EPOCH):  # type: ignore[no-untyped-def]
    prepared = prepare_step(request(req_slots, epoch=epoch))
    action = FactoredAction(op=op, slot=slot)
    decision = Decision(policy_id="heuristic", policy_version=0, action=action)
    return complete_step(prepared, decision, DecisionOutcome.APPLIED)


@pytest.mark.parametrize(("op", "level", "to"), [(GROW, 1, 2), (GROW, 3, 4), (SHRINK, 1, 0), (SHRINK, 4, 3)])
def test_an_applied_internal_op_changes_the_level_and_nothing_else(op: LifecycleOp, level: int, to: int) -> None:
    before = ladder(S.HOLDING, level=level)
    directive, result = _decide([before, SlotState(slot_id="r0c1")], op)
    observed = directive.observed_slots[0]
    after = directive.slots[0]
    assert directive.effective_op is op and directive.outcome is DecisionOutcome.APPLIED and result.succeeded
    assert directive.mutations == [
        SetInternalLevel(slot_id="r0c0", seed_id=before.seed_id, from_level=level, to_level=to)
    ]
    assert (after.internal_level, after.internal_level_changed_epoch) == (to, EPOCH)
    assert replace(after, internal_level=level, internal_level_changed_epoch=-1) == observed
    events = [e for e in directive.lifecycle_events if isinstance(e, SeedInternalLevelChanged)]
    assert len(events) == 1
    event = events[0]
    assert (event.from_level, event.to_level, event.max_level, event.active_params) == (level, to, 4, 0)
    assert event.internal_kind is SeedInternalKind.CONV_LADDER and event.blueprint is LADDER


@pytest.mark.parametrize(
    ("state", "op", "words"),
    [
        (ladder(level=4), GROW, "max level"),
        (ladder(level=0), SHRINK, "level 0"),
        (seed(S.HOLDING), GROW, "no microstructured seed"),
        (ladder(S.GERMINATED, level=1), GROW, "TRAINING, BLENDING or HOLDING"),
        (ladder(S.PRUNED, level=1), SHRINK, "TRAINING, BLENDING or HOLDING"),
        (ladder(S.BLENDING, level=1, mode=AlphaMode.DOWN, target=0.0), GROW, "ramping DOWN"),
        (ladder(S.FOSSILIZED, level=2), SHRINK, "FOSSILIZED"),
        (SlotState(slot_id="r0c0"), GROW, "no microstructured seed"),
    ],
)
def test_an_impossible_internal_op_becomes_wait_with_its_reason(state: SlotState, op: LifecycleOp, words: str) -> None:
    req = request([state])
    ticked = tick(req).slots
    result = execute(FactoredAction(op=op, slot=0), req, ticked)
    assert result.effective_op is Op.WAIT and not result.valid
    assert result.mutations == [] and result.events == []
    assert words in result.invalid_reason
    assert result.slots == ticked


@given(ops=st.lists(st.sampled_from([GROW, SHRINK]), max_size=30), start=st.integers(0, 4))
def test_any_sequence_keeps_the_level_in_range_and_counts_it(ops: list[LifecycleOp], start: int) -> None:
    state = ladder(S.HOLDING, level=start, epochs_total=2)
    grows = shrinks = 0
    for epoch, op in enumerate(ops, start=2):
        state = replace(state, metrics=replace(state.metrics, epochs_total=epoch - 1))
        req = request([state], epoch=epoch)
        ticked = tick(req).slots
        result = execute(FactoredAction(op=op, slot=0), req, ticked)
        state = result.slots[0]
        if result.mutations:
            grows += op is GROW
            shrinks += op is SHRINK
        assert 0 <= state.internal_level <= state.internal_max_level
    assert state.internal_level == start + grows - shrinks


def test_each_op_yields_a_mutation_of_its_own_kind() -> None:
    lifecycle = LifecycleConfig(max_epochs=40)
    cases = {
        Op.GERMINATE: ([SlotState(slot_id="r0c0")], Germinate),
        Op.ADVANCE: ([seed(S.TRAINING, gradient_health=0.9, ratio=0.5)], Advance),
        Op.SET_ALPHA_TARGET: ([seed(S.HOLDING)], SetAlphaTarget),
        Op.PRUNE: ([seed(S.HOLDING)], Prune),
        Op.FOSSILIZE: ([seed(S.HOLDING, contribution=5.0)], Fossilize),
        GROW: ([ladder(level=1)], SetInternalLevel),
        SHRINK: ([ladder(level=1)], SetInternalLevel),
    }
    assert set(cases) == set(Op) - {Op.WAIT}
    for op, (slots, kind) in cases.items():
        req = request(slots, lifecycle=lifecycle)
        target = 0.5 if op is Op.SET_ALPHA_TARGET else None
        action = FactoredAction(op=op, slot=0, blueprint=BlueprintAction.NORM)
        if target is not None:
            action = replace(action, alpha_target=0)
        result = execute(action, req, tick(req).slots)
        assert [type(m) for m in result.mutations] == [kind], op.name


# --- Invariant 12: the tick never touches the level ------------------------------------------------------------


@given(
    stage=st.sampled_from([s for s in OCCUPIED_STAGES if s is not S.RESETTING]),
    level=st.integers(0, 4),
    changed=st.just(-1) | st.integers(1, EPOCH),
    dwell=st.integers(0, 12),
)
def test_the_tick_never_changes_the_internal_fields(stage: SeedStage, level: int, changed: int, dwell: int) -> None:
    state = ladder(stage, level=level, level_changed_epoch=changed, dwell=dwell)
    req = request([state], lifecycle=LifecycleConfig(auto_forward_gates=[1, 2, 3]))
    after = tick(req).slots[0]
    fields = ("internal_kind", "internal_level", "internal_max_level", "internal_level_changed_epoch")
    if after.occupied:
        assert [getattr(after, f) for f in fields] == [getattr(state, f) for f in fields]


def test_resetting_to_dormant_clears_the_internal_fields() -> None:
    after = tick(request([ladder(S.RESETTING, level=3, level_changed_epoch=5)])).slots[0]
    assert after == SlotState(slot_id="r0c0")
    assert (after.internal_kind, after.internal_level, after.internal_max_level) == (SeedInternalKind.NONE, 0, 1)


# --- Invariant 16: the blueprint allowlist ---------------------------------------------------------------------


@given(allow=st.sets(st.sampled_from(list(BlueprintAction))), topology=st.sampled_from(list(Topology)))
def test_blueprint_mask_is_the_allowlist_within_the_topology(allow: set[BlueprintAction], topology: Topology) -> None:
    available = set(CNN_BLUEPRINTS if topology is Topology.CNN else TRANSFORMER_BLUEPRINTS) - {BlueprintAction.NOOP}
    lifecycle = LifecycleConfig(blueprints=sorted(allow), max_epochs=40)
    req = request(empty_slots(2), lifecycle=lifecycle, topology=topology)
    usable = allow - {BlueprintAction.NOOP}
    if not allow <= available | {BlueprintAction.NOOP} or (allow and not usable):
        with pytest.raises(InvalidStepRequest) as err:
            validate_request(req)
        assert err.value.field.startswith("lifecycle.blueprints")
        return
    masks = compute_masks(req.slots, req.slot_config, lifecycle, 0, epoch=req.epoch)
    expected = usable or available
    assert {b for b in BlueprintAction if masks.blueprint[b]} == expected
    # Execution agrees with the mask: a blueprint outside it is refused.
    for blueprint in BlueprintAction:
        result = execute(FactoredAction(op=Op.GERMINATE, slot=0, blueprint=blueprint), req, tick(req).slots)
        assert result.valid is (blueprint in expected)


def test_negative_cooldown_is_refused_by_name() -> None:
    with pytest.raises(InvalidStepRequest) as err:
        validate_request(request(empty_slots(1), lifecycle=LifecycleConfig(internal_op_cooldown_epochs=-1)))
    assert err.value.field == "lifecycle.internal_op_cooldown_epochs"
