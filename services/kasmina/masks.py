"""The base action masks of a step (reference/tamiyo_simic.md §2.3–2.6): Kasmina, the lifecycle authority, says what
is legal. The op-conditioned rule applied once an op is chosen is `leyline_schemas.heads`.

Masks mark only what is physically or lifecycle-impossible; timing is never masked (§2.3). An empty row is a
state-machine bug and raises at once (§2.6).
"""

from __future__ import annotations

from collections.abc import Sequence

from leyline_schemas.decisions import ActionMasks
from leyline_schemas.enums import (
    INTERNAL_OPS,
    LIVE_STAGES,
    AlphaCurveAction,
    AlphaMode,
    AlphaSpeedAction,
    AlphaTargetAction,
    BlueprintAction,
    GateLevel,
    GerminationStyle,
    LifecycleOp,
    SeedStage,
    TempoAction,
)
from leyline_schemas.heads import require_row
from leyline_schemas.lifecycle import LifecycleConfig, SlotConfig, SlotState, allowed_blueprints
from services.kasmina.internal_ops import internal_op_refusals
from services.kasmina.transitions import MIN_PRUNE_AGE

# §2.3: sequential development; seeds in these stages block a new germination anywhere on the host.
GERMINATION_BLOCKERS = frozenset(
    {SeedStage.GERMINATED, SeedStage.TRAINING, SeedStage.PRUNED, SeedStage.EMBARGOED, SeedStage.RESETTING}
)
ADVANCEABLE = frozenset({SeedStage.GERMINATED, SeedStage.TRAINING, SeedStage.BLENDING})
RETARGETABLE = frozenset({SeedStage.BLENDING, SeedStage.HOLDING})


def _slot_row(
    op: LifecycleOp,
    slots: Sequence[SlotState],
    germination_open: bool,
    advance_enabled: bool,
    governor_override: bool,
    lifecycle: LifecycleConfig,
    epoch: int,
) -> list[bool]:
    """Where `op` is legal, slot by slot (§2.3–2.4; internal ops: plans/kasmina2-phase0.md §5.2)."""
    if op is LifecycleOp.WAIT:
        return [True] * len(slots)
    if op is LifecycleOp.GERMINATE:
        return [germination_open and not s.occupied for s in slots]
    if op is LifecycleOp.ADVANCE:
        return [advance_enabled and s.stage in ADVANCEABLE for s in slots]
    if op is LifecycleOp.FOSSILIZE:
        return [s.stage is SeedStage.HOLDING for s in slots]
    if op is LifecycleOp.PRUNE:
        return [
            s.stage in LIVE_STAGES
            and s.metrics.epochs_total >= MIN_PRUNE_AGE
            and (governor_override or s.controller.mode is AlphaMode.HOLD)
            for s in slots
        ]
    if op is LifecycleOp.SET_ALPHA_TARGET:
        return [s.stage in RETARGETABLE and s.controller.mode is AlphaMode.HOLD for s in slots]
    if op in INTERNAL_OPS:
        return [not internal_op_refusals(op, s, lifecycle, epoch) for s in slots]
    raise ValueError(f"masks: no slot rule for op {op.name}")


def compute_masks(
    slots: Sequence[SlotState],
    slot_config: SlotConfig,
    lifecycle: LifecycleConfig,
    total_seeds: int,
    *,
    epoch: int,
    governor_override: bool = False,
) -> ActionMasks:
    """The legal values of every head for these slots; op legality is optimistic over slots (§2.3–2.5)."""
    if len(slots) != len(slot_config.slots):
        raise ValueError(f"masks: {len(slots)} slot states for {len(slot_config.slots)} enabled slots")
    if not slots:
        raise ValueError("mask invariant: the slot head has no enabled slot (§2.6)")
    budget_left = lifecycle.max_seeds == 0 or total_seeds < lifecycle.max_seeds
    germination_open = budget_left and not any(s.stage in GERMINATION_BLOCKERS for s in slots)
    # ADVANCE is left to the tick only when every gate it could pass auto-forwards.
    advance_enabled = not {GateLevel.G1, GateLevel.G2, GateLevel.G3} <= set(lifecycle.auto_forward_gates)
    slot_by_op = [
        _slot_row(op, slots, germination_open, advance_enabled, governor_override, lifecycle, epoch)
        for op in LifecycleOp
    ]
    op_mask = [any(row) for row in slot_by_op]
    # §2.5: style and amplitude only vary where a germination or a retarget can actually use them.
    shaping = op_mask[LifecycleOp.GERMINATE] or op_mask[LifecycleOp.SET_ALPHA_TARGET]
    allowed = allowed_blueprints(lifecycle.blueprints, slot_config.topology)
    return ActionMasks(
        op=require_row("op", op_mask),
        slot_by_op=slot_by_op,
        blueprint=require_row(
            "blueprint",
            [bp in allowed for bp in BlueprintAction],
        ),
        style=[shaping or style is GerminationStyle.SIGMOID_ADD for style in GerminationStyle],
        tempo=[True] * len(TempoAction),
        alpha_target=[shaping or target is AlphaTargetAction.FULL for target in AlphaTargetAction],
        alpha_speed=[True] * len(AlphaSpeedAction),
        alpha_curve=[True] * len(AlphaCurveAction),
    )
