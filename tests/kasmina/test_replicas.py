"""I15 in a service world: there is no DDP rank 0, but every Kasmina replica must reach the same gate decision.

Kasmina is stateless and deterministic, so two replicas (or one asked twice) answer a StepRequest identically.
"""

from __future__ import annotations

from msgspec.structs import replace

import leyline_schemas as L
from services.kasmina.bench import lifecycle_request as _lifecycle_request
from services.kasmina.lifecycle import execute, tick
from services.kasmina.masks import compute_masks
from services.observation.features import build_observation


def answer(request: L.StepRequest, action: L.FactoredAction) -> tuple[object, ...]:
    ticked = tick(request)
    observation = build_observation(request, ticked.slots)
    masks = compute_masks(ticked.slots, request.slot_config, request.lifecycle, 2, epoch=request.epoch)
    result = execute(action, request, ticked.slots)
    return (
        ticked.slots,
        ticked.events,
        observation,
        masks,
        result.effective_op,
        result.mutations,
        result.slots,
        result.events,
        result.valid,
    )


def test_replicas_agree_on_every_gate_decision() -> None:
    for n_slots in (3, 10):
        request = L.decode(L.encode(_lifecycle_request(n_slots)), L.StepRequest)
        for op in L.LifecycleOp:
            for slot in range(n_slots):
                action = L.FactoredAction(op=op, slot=slot, blueprint=L.BlueprintAction.NORM)
                first, second = answer(request, action), answer(request, action)
                assert first == second


def test_replicas_agree_on_internal_ops_at_every_level() -> None:
    """Invariant 14 of plans/kasmina2-phase0.md: GROW and SHRINK are decided from the request alone."""
    base = _lifecycle_request(3)
    ladders = [
        L.SlotState(
            slot_id=state.slot_id,
            stage=L.SeedStage.HOLDING if i == 0 else L.SeedStage.TRAINING,
            seed_id=f"ladder{i}",
            blueprint=L.BlueprintAction.CONV_LADDER,
            germinated_epoch=1,
            internal_kind=L.SeedInternalKind.CONV_LADDER,
            internal_level=level,
            internal_max_level=4,
            internal_level_changed_epoch=5,
            controller=base.slots[i].controller
            if i
            else L.AlphaControllerState(alpha=1.0, alpha_start=1.0, alpha_target=1.0),
        )
        for i, (state, level) in enumerate(zip(base.slots, (0, 2, 4), strict=True))
    ]
    for lifecycle in (base.lifecycle, L.LifecycleConfig(max_epochs=25, internal_op_cooldown_epochs=3)):
        request = L.decode(L.encode(replace(base, slots=ladders, lifecycle=lifecycle)), L.StepRequest)
        applied = set()
        for op in L.LifecycleOp:
            for slot in range(3):
                action = L.FactoredAction(op=op, slot=slot, blueprint=L.BlueprintAction.CONV_LADDER)
                first = answer(request, action)
                assert first == answer(request, action)
                if first[5]:
                    applied.add(op)
        # The internal ops really ran (no cooldown: both; cooldown 3 after a change at epoch 5 ending by epoch 12).
        assert {L.LifecycleOp.GROW_INTERNAL, L.LifecycleOp.SHRINK_INTERNAL} <= applied
