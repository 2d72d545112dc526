"""Random and WAIT policies: legal actions only, exact uniform log-probs, canonical irrelevant heads (§2.7–2.8)."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leyline_schemas.decisions import ActionMasks, DecisionRequest, FactoredAction
from leyline_schemas.enums import (
    AlphaCurveAction,
    AlphaSpeedAction,
    AlphaTargetAction,
    BlueprintAction,
    GerminationStyle,
    LifecycleOp,
    TempoAction,
    Topology,
)
from services.tamiyo.simple_policies import decision_rng, random_decision, wait_decision

HEAD_SIZES = {"blueprint": 13, "style": 4, "tempo": 3, "alpha_target": 3, "alpha_speed": 4, "alpha_curve": 5}
CANONICAL = FactoredAction()
RELEVANT = {
    "blueprint": {LifecycleOp.GERMINATE},
    "tempo": {LifecycleOp.GERMINATE},
    "style": {LifecycleOp.GERMINATE, LifecycleOp.SET_ALPHA_TARGET},
    "alpha_target": {LifecycleOp.GERMINATE, LifecycleOp.SET_ALPHA_TARGET},
    "alpha_speed": {LifecycleOp.SET_ALPHA_TARGET, LifecycleOp.PRUNE},
    "alpha_curve": {LifecycleOp.SET_ALPHA_TARGET, LifecycleOp.PRUNE},
}


def make_request(masks: ActionMasks, *, epoch: int = 7, n_slots: int = 3) -> DecisionRequest:
    return DecisionRequest(
        run_id="run",
        env_id=1,
        episode=2,
        epoch=epoch,
        policy_id="random",
        topology=Topology.CNN,
        slot_ids=[f"r0c{i}" for i in range(n_slots)],
        observation=[],
        blueprint_indices=[-1] * n_slots,
        masks=masks,
        slots=[],
    )


def full_masks(n_slots: int = 3, ops: tuple[bool, ...] = (True,) * 6) -> ActionMasks:
    return ActionMasks(
        op=list(ops),
        slot_by_op=[[True] * n_slots for _ in range(6)],
        **{head: [True] * size for head, size in HEAD_SIZES.items()},
    )


def nonempty_row(size: int) -> st.SearchStrategy[list[bool]]:
    # Force one legal value instead of filtering, which would discard most draws.
    rows = st.lists(st.booleans(), min_size=size, max_size=size)
    return st.tuples(rows, st.integers(min_value=0, max_value=size - 1)).map(
        lambda pair: [ok or i == pair[1] for i, ok in enumerate(pair[0])]
    )


@st.composite
def random_masks(draw: st.DrawFn) -> ActionMasks:
    n_slots = draw(st.integers(min_value=1, max_value=4))
    return ActionMasks(
        op=draw(nonempty_row(6)),
        slot_by_op=[draw(nonempty_row(n_slots)) for _ in range(6)],
        **{head: draw(nonempty_row(size)) for head, size in HEAD_SIZES.items()},
    )


@settings(max_examples=100, deadline=None)
@given(masks=random_masks(), seed=st.integers(min_value=0, max_value=2**32))
def test_random_policy_emits_only_legal_actions_with_uniform_log_probs(masks: ActionMasks, seed: int) -> None:
    request = make_request(masks, n_slots=len(masks.slot_by_op[0]))
    decision = random_decision(request, random.Random(seed))
    action = decision.action
    op = action.op
    assert masks.op[op]
    assert decision.log_probs.op == pytest.approx(-math.log(sum(masks.op)))
    slot_row = masks.slot_by_op[op]
    assert slot_row[action.slot]
    if op is LifecycleOp.WAIT:
        assert action.slot == slot_row.index(True)
        assert decision.log_probs.slot == 0.0
    else:
        assert decision.log_probs.slot == pytest.approx(-math.log(sum(slot_row)))
    for head, ops in RELEVANT.items():
        value = getattr(action, head)
        log_prob = getattr(decision.log_probs, head)
        if op in ops:
            row = getattr(masks, head)
            assert row[value], head
            assert log_prob == pytest.approx(-math.log(sum(row))), head
        else:
            assert value == getattr(CANONICAL, head), head
            assert log_prob == 0.0, head


def test_sampling_is_uniform_over_legal_ops_and_slots() -> None:
    masks = full_masks(ops=(True, True, False, True, False, False))
    rng = random.Random(0)
    draws = [random_decision(make_request(masks), rng).action for _ in range(3000)]
    ops = Counter(a.op for a in draws)
    assert set(ops) == {LifecycleOp.WAIT, LifecycleOp.GERMINATE, LifecycleOp.PRUNE}
    assert all(abs(count / 3000 - 1 / 3) < 0.04 for count in ops.values())
    slots = Counter(a.slot for a in draws if a.op is not LifecycleOp.WAIT)
    total = sum(slots.values())
    assert all(abs(count / total - 1 / 3) < 0.05 for count in slots.values())


def test_canonical_values_for_irrelevant_heads() -> None:
    masks = full_masks(ops=(False, False, False, False, True, False))
    action = random_decision(make_request(masks), random.Random(3)).action
    assert action.op is LifecycleOp.FOSSILIZE
    assert action.blueprint is BlueprintAction.NOOP
    assert action.tempo is TempoAction.STANDARD
    assert action.style is GerminationStyle.SIGMOID_ADD
    assert action.alpha_target is AlphaTargetAction.FULL
    assert action.alpha_speed is AlphaSpeedAction.INSTANT
    assert action.alpha_curve is AlphaCurveAction.LINEAR


def test_seeded_from_the_request_so_it_is_reproducible() -> None:
    masks = full_masks()
    first = random_decision(make_request(masks))
    assert random_decision(make_request(masks)) == first
    assert decision_rng(make_request(masks)).random() == decision_rng(make_request(masks)).random()
    actions = {random_decision(make_request(masks, epoch=e)).action for e in range(20)}
    assert len(actions) > 1


def test_confidence_is_the_joint_probability() -> None:
    decision = random_decision(make_request(full_masks()))
    log_probs = decision.log_probs
    joint = sum(getattr(log_probs, head) for head in ("op", "slot", *HEAD_SIZES))
    assert decision.confidence == pytest.approx(math.exp(joint))


@pytest.mark.parametrize("head", ["op", "slot", "blueprint"])
def test_an_empty_mask_row_raises_naming_the_head(head: str) -> None:
    masks = full_masks(ops=(False, True, False, False, False, False))
    if head == "op":
        masks = full_masks(ops=(False,) * 6)
    elif head == "slot":
        rows = [list(row) for row in masks.slot_by_op]
        rows[LifecycleOp.GERMINATE] = [False, False, False]
        masks = ActionMasks(op=masks.op, slot_by_op=rows, **{name: getattr(masks, name) for name in HEAD_SIZES})
    else:
        heads = {name: getattr(masks, name) for name in HEAD_SIZES} | {"blueprint": [False] * 13}
        masks = ActionMasks(op=masks.op, slot_by_op=masks.slot_by_op, **heads)
    with pytest.raises(ValueError, match=f"'{head}'"):
        random_decision(make_request(masks), random.Random(0))


def test_wait_policy_always_waits_on_the_canonical_slot() -> None:
    decision = wait_decision(make_request(full_masks()))
    assert decision.action == FactoredAction(op=LifecycleOp.WAIT, slot=0)
    assert decision.policy_id == "wait" and decision.log_probs.op == 0.0
