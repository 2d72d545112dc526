"""Masks, canonicalisation and head relevance (reference/tamiyo_simic.md §2.3–2.9, §2.14, §12.2, §12.3, §12.6)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from msgspec.structs import replace

from leyline_schemas.decisions import HEAD_NAMES, ActionMasks
from leyline_schemas.enums import (
    AlphaMode,
    BlueprintAction,
    GerminationStyle,
    LifecycleOp,
    SeedStage,
    Topology,
    blueprints_for,
)
from leyline_schemas.heads import CANONICAL_VALUES, available_heads, causal_heads, is_forced, op_conditioned_mask
from leyline_schemas.lifecycle import LifecycleConfig, SlotState
from services.kasmina.lifecycle import execution_refusal
from services.kasmina.masks import compute_masks

from .factories import SLOT_IDS, empty_slots, seed, slot_config, slot_states

Op = LifecycleOp
S = SeedStage
LIFECYCLE = LifecycleConfig()
EPOCH = 10


def _masks(
    slots: list[SlotState],
    lifecycle: LifecycleConfig = LIFECYCLE,
    total_seeds: int = 0,
    *,
    topology: Topology = Topology.CNN,
    governor_override: bool = False,
) -> ActionMasks:
    config = slot_config(len(slots), topology)
    return compute_masks(slots, config, lifecycle, total_seeds, epoch=EPOCH, governor_override=governor_override)


def test_an_empty_host_offers_wait_and_germinate_everywhere() -> None:
    masks = _masks(empty_slots())
    assert masks.op == [True, True, False, False, False, False, False, False]
    assert masks.slot_by_op[Op.WAIT] == [True, True, True]
    assert masks.slot_by_op[Op.GERMINATE] == [True, True, True]
    assert masks.style == [True] * 4 and masks.alpha_target == [True] * 3


@pytest.mark.parametrize("blocker", [S.GERMINATED, S.TRAINING, S.PRUNED, S.EMBARGOED, S.RESETTING])
def test_germinate_waits_for_sequential_development(blocker: SeedStage) -> None:
    masks = _masks([seed(blocker), *empty_slots(3)[1:]])
    assert not masks.op[Op.GERMINATE] and not any(masks.slot_by_op[Op.GERMINATE])


@pytest.mark.parametrize("scaffold", [S.BLENDING, S.HOLDING, S.FOSSILIZED])
def test_blending_holding_and_fossils_do_not_block_germination(scaffold: SeedStage) -> None:
    masks = _masks([seed(scaffold), *empty_slots(3)[1:]])
    assert masks.slot_by_op[Op.GERMINATE] == [False, True, True]


def test_germinate_respects_the_seed_budget() -> None:
    assert not _masks(empty_slots(), LifecycleConfig(max_seeds=2), total_seeds=2).op[Op.GERMINATE]
    assert _masks(empty_slots(), LifecycleConfig(max_seeds=2), total_seeds=1).op[Op.GERMINATE]
    assert _masks(empty_slots(), LifecycleConfig(max_seeds=0), total_seeds=50).op[Op.GERMINATE]


def test_prune_needs_age_five_and_a_resting_controller() -> None:
    assert not _masks([seed(S.TRAINING, epochs_total=4)]).op[Op.PRUNE]
    assert _masks([seed(S.TRAINING, epochs_total=5)]).op[Op.PRUNE]
    ramping = seed(S.BLENDING, target=1.0, mode=AlphaMode.UP)
    assert not _masks([ramping]).op[Op.PRUNE]
    assert _masks([ramping], governor_override=True).op[Op.PRUNE]


def test_advance_fossilize_and_retarget_follow_the_stage() -> None:
    masks = _masks([seed(S.BLENDING, "r0c0"), seed(S.HOLDING, "r0c1"), seed(S.FOSSILIZED, "r0c2")])
    assert masks.slot_by_op[Op.ADVANCE] == [True, False, False]
    assert masks.slot_by_op[Op.FOSSILIZE] == [False, True, False]
    assert masks.slot_by_op[Op.SET_ALPHA_TARGET] == [True, True, False]
    assert masks.slot_by_op[Op.PRUNE] == [True, True, False]


def test_advance_is_disabled_only_when_all_three_gates_auto_forward() -> None:
    slots = [seed(S.TRAINING)]
    assert _masks(slots, LifecycleConfig(auto_forward_gates=[1, 2])).op[Op.ADVANCE]
    assert not _masks(slots, LifecycleConfig(auto_forward_gates=[1, 2, 3])).op[Op.ADVANCE]


def test_style_and_amplitude_collapse_when_nothing_can_use_them() -> None:
    masks = _masks([seed(S.TRAINING)])
    assert masks.style == [s is GerminationStyle.SIGMOID_ADD for s in GerminationStyle]
    assert masks.alpha_target == [False, False, True]
    assert masks.tempo == [True] * 3 and masks.alpha_speed == [True] * 4 and masks.alpha_curve == [True] * 5


@pytest.mark.parametrize("topology", list(Topology))
def test_blueprint_mask_is_the_topology_set_without_noop(topology: Topology) -> None:
    masks = _masks(empty_slots(), topology=topology)
    legal = {b for b in BlueprintAction if masks.blueprint[b]}
    assert legal == set(blueprints_for(topology)) - {BlueprintAction.NOOP}


def test_causal_head_table_is_exactly_the_reference() -> None:
    expected = {
        Op.WAIT: {"op"},
        Op.GERMINATE: {"op", "slot", "blueprint", "tempo", "style", "alpha_target"},
        Op.SET_ALPHA_TARGET: {"op", "slot", "style", "alpha_target", "alpha_speed", "alpha_curve"},
        Op.PRUNE: {"op", "slot", "alpha_speed", "alpha_curve"},
        Op.FOSSILIZE: {"op", "slot"},
        Op.ADVANCE: {"op", "slot"},
        Op.GROW_INTERNAL: {"op", "slot"},
        Op.SHRINK_INTERNAL: {"op", "slot"},
    }
    assert {op: set(causal_heads(op)) for op in Op} == expected


def test_wait_canonicalises_the_slot_to_the_first_legal_one() -> None:
    masks = _masks(empty_slots())
    assert op_conditioned_mask(masks, Op.WAIT, "slot") == [True, False, False]


def test_irrelevant_blueprint_is_forced_to_noop_even_though_noop_is_never_legal() -> None:
    masks = _masks(empty_slots())
    assert not masks.blueprint[BlueprintAction.NOOP]
    forced = op_conditioned_mask(masks, Op.WAIT, "blueprint")
    assert forced == [b is BlueprintAction.NOOP for b in BlueprintAction]
    assert op_conditioned_mask(masks, Op.GERMINATE, "blueprint") == masks.blueprint


def test_an_empty_row_raises() -> None:
    masks = _masks([seed(S.TRAINING)])
    with pytest.raises(ValueError, match="no legal value"):
        op_conditioned_mask(masks, Op.FOSSILIZE, "slot")
    with pytest.raises(ValueError, match="no action head"):
        op_conditioned_mask(masks, Op.WAIT, "colour")
    bad = replace(masks, style=[False] * 4)
    with pytest.raises(ValueError, match="no legal value"):
        op_conditioned_mask(bad, Op.GERMINATE, "style")


def test_forced_steps_and_available_heads() -> None:
    cooling = _masks([seed(S.EMBARGOED)])
    assert is_forced(cooling) and available_heads(cooling) == {"op"}
    open_host = _masks(empty_slots())
    assert not is_forced(open_host)
    assert available_heads(open_host) == {"op", "slot", "blueprint", "tempo", "style", "alpha_target"}


hosts = st.integers(min_value=1, max_value=4).flatmap(
    lambda n: st.tuples(*[slot_states(SLOT_IDS[i]) for i in range(n)]).map(list)
)
lifecycles = st.builds(
    LifecycleConfig,
    max_seeds=st.integers(0, 3),
    auto_forward_gates=st.lists(st.sampled_from([1, 2, 3]), unique=True),
)


@settings(max_examples=200)
@given(slots=hosts, lifecycle=lifecycles, total_seeds=st.integers(0, 4), topology=st.sampled_from(list(Topology)))
def test_mask_properties_hold_for_any_host(
    slots: list[SlotState], lifecycle: LifecycleConfig, total_seeds: int, topology: Topology
) -> None:
    masks = _masks(slots, lifecycle, total_seeds, topology=topology)
    assert masks.op[Op.WAIT] and masks.slot_by_op[Op.WAIT] == [True] * len(slots)
    assert not masks.blueprint[BlueprintAction.NOOP]
    for op in Op:
        row = masks.slot_by_op[op]
        assert len(row) == len(slots)
        assert masks.op[op] == any(row)
        if not masks.op[op]:
            continue
        blueprint = next(b for b in BlueprintAction if masks.blueprint[b])
        for index, legal in enumerate(row):
            # Masks are never looser than execution: a masked-legal (op, slot) always executes.
            if legal:
                refusal = execution_refusal(op, slots[index], blueprint, topology, lifecycle=lifecycle, epoch=EPOCH)
                assert refusal == ""
        for head in HEAD_NAMES:
            conditioned = op_conditioned_mask(masks, op, head)
            assert any(conditioned)
            if head != "op" and head not in causal_heads(op):
                assert sum(conditioned) == 1
                if head != "slot":
                    assert conditioned.index(True) == CANONICAL_VALUES[head]
    prune_row = masks.slot_by_op[Op.PRUNE]
    for state, legal in zip(slots, prune_row, strict=True):
        if state.metrics.epochs_total < 5 or state.controller.mode is not AlphaMode.HOLD:
            assert not legal
    blockers = {S.GERMINATED, S.TRAINING, S.PRUNED, S.EMBARGOED, S.RESETTING}
    if any(s.stage in blockers for s in slots) or (lifecycle.max_seeds and total_seeds >= lifecycle.max_seeds):
        assert not masks.op[Op.GERMINATE]
    assert is_forced(masks) == (masks.op == [True] + [False] * (len(Op) - 1))
