"""GROW_INTERNAL and SHRINK_INTERNAL: when a microstructured seed may change level, and what a change does
(plans/kasmina2-phase0.md §5.1–5.3).

One rule serves both the mask and the execution check: `internal_op_refusals` lists every condition an internal
op fails on a slot, the mask row is "no refusal", and an executed op that fails one names them all.
"""

from __future__ import annotations

from msgspec.structs import replace

from leyline_schemas.enums import (
    INTERNAL_OP_STAGES,
    INTERNAL_OPS,
    AlphaMode,
    LifecycleOp,
    SeedInternalKind,
    SeedStage,
)
from leyline_schemas.lifecycle import LifecycleConfig, SlotState
from leyline_schemas.telemetry import SeedInternalLevelChanged
from services.kasmina.transitions import POLICY_INITIATOR, SlotChange


def level_step(op: LifecycleOp) -> int:
    """+1 for GROW_INTERNAL, −1 for SHRINK_INTERNAL; any other op is not an internal op."""
    if op is LifecycleOp.GROW_INTERNAL:
        return 1
    if op is LifecycleOp.SHRINK_INTERNAL:
        return -1
    raise ValueError(f"{op.name} is not an internal op ({', '.join(o.name for o in sorted(INTERNAL_OPS))})")


def internal_op_refusals(op: LifecycleOp, state: SlotState, lifecycle: LifecycleConfig, epoch: int) -> list[str]:
    """Every reason `op` cannot change this slot's level now; empty when it can (§5.2 item 2, §5.3 item 1)."""
    step = level_step(op)
    slot, stage, mode = state.slot_id, state.stage, state.controller.mode
    reasons: list[str] = []
    if state.internal_kind is SeedInternalKind.NONE:
        reasons.append(f"{slot} holds no microstructured seed")
    if stage is SeedStage.FOSSILIZED:
        reasons.append(f"{slot} is FOSSILIZED: nothing may edit a fossil")
    elif stage not in INTERNAL_OP_STAGES:
        reasons.append(f"internal ops need TRAINING, BLENDING or HOLDING; {slot} is {stage.name}")
    if mode is AlphaMode.DOWN:
        reasons.append(f"{slot} is ramping DOWN: its blend-out freezes every seed parameter")
    elif lifecycle.internal_ops_require_alpha_hold and mode is not AlphaMode.HOLD:
        reasons.append(f"internal ops wait for alpha HOLD here; {slot} is ramping {mode.name}")
    if state.internal_kind is not SeedInternalKind.NONE:
        if step > 0 and state.internal_level >= state.internal_max_level:
            reasons.append(f"{slot} is at its max level {state.internal_max_level}")
        if step < 0 and state.internal_level <= 0:
            reasons.append(f"{slot} is at level 0")
    cooldown = lifecycle.internal_op_cooldown_epochs
    changed = state.internal_level_changed_epoch
    if cooldown > 0 and changed >= 0 and epoch - changed < cooldown:
        reasons.append(f"{slot} changed level at epoch {changed}; the cooldown is {cooldown} epochs")
    return reasons


def internal_level_change(state: SlotState, op: LifecycleOp, epoch: int) -> SlotChange:
    """The slot one level up or down, stamped with `epoch`, and its SeedInternalLevelChanged (§5.3 item 3).

    Stage, alpha controller and metrics are untouched (§5.1 item 4); the caller has checked the refusals.
    """
    to_level = state.internal_level + level_step(op)
    if not 0 <= to_level <= state.internal_max_level:
        raise ValueError(f"{state.slot_id}: level {to_level} is outside [0, {state.internal_max_level}]")
    moved = replace(state, internal_level=to_level, internal_level_changed_epoch=epoch)
    event = SeedInternalLevelChanged(
        slot_id=state.slot_id,
        seed_id=state.seed_id,
        blueprint=state.blueprint,
        internal_kind=state.internal_kind,
        from_level=state.internal_level,
        to_level=to_level,
        max_level=state.internal_max_level,
        initiator=POLICY_INITIATOR,
    )
    return SlotChange(state=moved, applied=True, events=[event])
