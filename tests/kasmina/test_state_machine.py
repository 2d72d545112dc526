"""Property test of whole episodes: random reports and random (masked or raw) actions through tick → masks →
execute never break the lifecycle (reference/kasmina.md §1.2, §9; ARCHITECTURE.md §11)."""

from __future__ import annotations

import math
import random

from hypothesis import given, settings
from hypothesis import strategies as st
from msgspec.structs import replace

from leyline_schemas.decisions import HEAD_NAMES, ActionMasks, FactoredAction
from leyline_schemas.enums import (
    AlphaCurveAction,
    AlphaSpeedAction,
    AlphaTargetAction,
    BlueprintAction,
    GerminationStyle,
    LifecycleOp,
    SeedStage,
    TempoAction,
    Topology,
)
from leyline_schemas.heads import op_conditioned_mask
from leyline_schemas.lifecycle import AlphaControllerState, LifecycleConfig, SlotState
from leyline_schemas.reports import SlotReport
from services.kasmina.lifecycle import execute, is_valid_transition, tick
from services.kasmina.masks import compute_masks
from services.observation.features import build_observation, observation_size

from .factories import SLOT_IDS, report, request, slot_states

EPOCHS = 40
# Favour the ops that move a seed forward so episodes reach BLENDING, HOLDING and FOSSILIZED often.
OP_WEIGHTS = {
    LifecycleOp.WAIT: 2.0,
    LifecycleOp.GERMINATE: 3.0,
    LifecycleOp.SET_ALPHA_TARGET: 1.0,
    LifecycleOp.PRUNE: 0.3,
    LifecycleOp.FOSSILIZE: 3.0,
    LifecycleOp.ADVANCE: 6.0,
    LifecycleOp.GROW_INTERNAL: 1.0,
    LifecycleOp.SHRINK_INTERNAL: 1.0,
}


def _alpha_in_unit_interval(controller: AlphaControllerState) -> bool:
    values = (controller.alpha, controller.alpha_start, controller.alpha_target)
    return all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in values)


def _assert_legal_step(before: SlotState, after: SlotState) -> None:
    assert after.stage == before.stage or is_valid_transition(before.stage, after.stage), (before.stage, after.stage)
    assert _alpha_in_unit_interval(after.controller)


def _assert_ticked_once(before: SlotState, after: SlotState) -> None:
    """The dwell and age of every seed move exactly once per tick, and a transition resets the dwell."""
    if not before.occupied:
        assert after == before
        return
    moved = before.metrics.epochs_in_current_stage + 1
    if not after.occupied:
        assert before.stage is SeedStage.RESETTING
    elif after.stage == before.stage:
        assert after.metrics.epochs_in_current_stage == moved
        assert after.metrics.epochs_total == before.metrics.epochs_total + 1
    else:
        assert (after.previous_stage, after.previous_epochs_in_stage) == (before.stage, moved)
        assert after.metrics.epochs_in_current_stage == 0
        assert after.metrics.epochs_total == before.metrics.epochs_total + 1


def _masked_action(rng: random.Random, masks: ActionMasks) -> FactoredAction:
    """Sample like a policy does: op first, then every head under its op-conditioned mask (§2.7)."""
    legal = [o for o in LifecycleOp if masks.op[o]]
    op = rng.choices(legal, weights=[OP_WEIGHTS[o] for o in legal])[0]
    values: dict[str, int] = {}
    for head in HEAD_NAMES:
        row = op_conditioned_mask(masks, op, head)
        values[head] = rng.choice([i for i, legal in enumerate(row) if legal])
    return FactoredAction(
        op=op,
        slot=values["slot"],
        blueprint=BlueprintAction(values["blueprint"]),
        style=GerminationStyle(values["style"]),
        tempo=TempoAction(values["tempo"]),
        alpha_target=AlphaTargetAction(values["alpha_target"]),
        alpha_speed=AlphaSpeedAction(values["alpha_speed"]),
        alpha_curve=AlphaCurveAction(values["alpha_curve"]),
    )


def _raw_action(rng: random.Random, num_slots: int) -> FactoredAction:
    """Any action at all, as a buggy or adversarial policy might send."""
    return FactoredAction(
        op=rng.choice(list(LifecycleOp)),
        slot=rng.randint(0, num_slots),
        blueprint=rng.choice(list(BlueprintAction)),
        style=rng.choice(list(GerminationStyle)),
        tempo=rng.choice(list(TempoAction)),
        alpha_speed=rng.choice(list(AlphaSpeedAction)),
        alpha_curve=rng.choice(list(AlphaCurveAction)),
        alpha_target=rng.choice(list(AlphaTargetAction)),
    )


def _maybe(rng: random.Random, value: float) -> float | None:
    return None if rng.random() < 0.2 else value


def _slot_report(rng: random.Random, slot_id: str) -> SlotReport:
    return SlotReport(
        slot_id=slot_id,
        contribution=_maybe(rng, rng.uniform(-3.0, 5.0)),
        gradient_health=_maybe(rng, rng.uniform(0.5, 1.0)),
        seed_gradient_norm_ratio=_maybe(rng, rng.uniform(0.0, 1.0)),
        has_exploding=rng.random() < 0.1,
    )


@settings(max_examples=150, deadline=None)
@given(
    rng=st.randoms(use_true_random=True),
    start=st.lists(st.none() | slot_states(), min_size=1, max_size=3),
    topology=st.sampled_from(list(Topology)),
    lifecycle=st.builds(
        LifecycleConfig,
        max_seeds=st.integers(0, 3),
        permissive_gates=st.booleans(),
        auto_forward_gates=st.lists(st.sampled_from([1, 2, 3]), unique=True),
        max_epochs=st.just(EPOCHS),
    ),
)
def test_random_episodes_never_break_the_lifecycle(
    rng: random.Random, start: list[SlotState | None], topology: Topology, lifecycle: LifecycleConfig
) -> None:
    """Episodes start from an empty host or from arbitrary consistent seeds in any stage."""
    slots = [
        SlotState(slot_id=SLOT_IDS[i]) if s is None else replace(s, slot_id=SLOT_IDS[i]) for i, s in enumerate(start)
    ]
    num_slots = len(slots)
    total_seeds = 0
    last_op, last_ok = LifecycleOp.WAIT, True
    for epoch in range(EPOCHS):
        reports = [_slot_report(rng, s.slot_id) for s in slots if s.occupied]
        accuracy = rng.uniform(0.0, 100.0)
        req = request(
            slots,
            epoch=epoch,
            epoch_report=report(epoch, val_accuracy=accuracy, slots=reports, max_epochs=EPOCHS),
            lifecycle=lifecycle,
            topology=topology,
            total_seeds=total_seeds,
            last_op=last_op,
            last_action_succeeded=last_ok,
        )
        ticked = tick(req)
        for before, after in zip(slots, ticked.slots, strict=True):
            _assert_legal_step(before, after)
            _assert_ticked_once(before, after)
        observation, _ = build_observation(req, ticked.slots)
        assert len(observation) == observation_size(num_slots)
        assert all(math.isfinite(x) for x in observation)
        masks = compute_masks(ticked.slots, req.slot_config, lifecycle, total_seeds, epoch=req.epoch)
        masked = rng.random() < 0.8
        action = _masked_action(rng, masks) if masked else _raw_action(rng, num_slots)
        result = execute(action, req, ticked.slots)
        if masked:
            # A masked action is never invalid at execution time.
            assert result.valid, result.invalid_reason
        for before, after in zip(ticked.slots, result.slots, strict=True):
            _assert_legal_step(before, after)
            if after.occupied and before.occupied:
                assert after.metrics.epochs_total == before.metrics.epochs_total
        assert len(result.mutations) <= 1
        if result.mutations and result.effective_op is LifecycleOp.GERMINATE:
            total_seeds += 1
        last_op, last_ok = result.effective_op, result.succeeded
        slots = result.slots
