"""Action masks, op-conditioned canonicalisation and head relevance (reference/tamiyo_simic.md §2.3–2.9, §2.14).

Masks mark only what is physically or lifecycle-impossible; timing is never masked (§2.3). An empty row is a
state-machine bug and raises at once (§2.6).
"""

from __future__ import annotations

from collections.abc import Sequence

from leyline_schemas.decisions import HEAD_NAMES, ActionMasks
from leyline_schemas.enums import (
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
    blueprints_for,
)
from leyline_schemas.lifecycle import LifecycleConfig, SlotConfig, SlotState
from services.kasmina.transitions import MIN_PRUNE_AGE

# §2.3: sequential development; seeds in these stages block a new germination anywhere on the host.
GERMINATION_BLOCKERS = frozenset(
    {SeedStage.GERMINATED, SeedStage.TRAINING, SeedStage.PRUNED, SeedStage.EMBARGOED, SeedStage.RESETTING}
)
ADVANCEABLE = frozenset({SeedStage.GERMINATED, SeedStage.TRAINING, SeedStage.BLENDING})
RETARGETABLE = frozenset({SeedStage.BLENDING, SeedStage.HOLDING})

# §2.7: the single value an irrelevant head is forced to.
CANONICAL_VALUES: dict[str, int] = {
    "blueprint": BlueprintAction.NOOP,
    "style": GerminationStyle.SIGMOID_ADD,
    "tempo": TempoAction.STANDARD,
    "alpha_target": AlphaTargetAction.FULL,
    "alpha_speed": AlphaSpeedAction.INSTANT,
    "alpha_curve": AlphaCurveAction.LINEAR,
}

# §2.8: which heads each op actually uses.
_CAUSAL_HEADS: dict[LifecycleOp, frozenset[str]] = {
    LifecycleOp.WAIT: frozenset({"op"}),
    LifecycleOp.GERMINATE: frozenset({"op", "slot", "blueprint", "tempo", "style", "alpha_target"}),
    LifecycleOp.SET_ALPHA_TARGET: frozenset({"op", "slot", "style", "alpha_target", "alpha_speed", "alpha_curve"}),
    LifecycleOp.PRUNE: frozenset({"op", "slot", "alpha_speed", "alpha_curve"}),
    LifecycleOp.FOSSILIZE: frozenset({"op", "slot"}),
    LifecycleOp.ADVANCE: frozenset({"op", "slot"}),
}


def causal_heads(op: LifecycleOp | int) -> frozenset[str]:
    """The heads whose values matter for `op`; credit, entropy and KL use only these (§2.8)."""
    return _CAUSAL_HEADS[LifecycleOp(op)]


def _require_row(name: str, row: list[bool]) -> list[bool]:
    if not any(row):
        raise ValueError(f"mask invariant: head {name} has no legal value (a state-machine bug, §2.6)")
    return row


def _one_hot(size: int, index: int) -> list[bool]:
    return [i == index for i in range(size)]


def _slot_row(
    op: LifecycleOp,
    slots: Sequence[SlotState],
    germination_open: bool,
    advance_enabled: bool,
    governor_override: bool,
) -> list[bool]:
    """Where `op` is legal, slot by slot (§2.3–2.4)."""
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
    return [s.stage in RETARGETABLE and s.controller.mode is AlphaMode.HOLD for s in slots]


def compute_masks(
    slots: Sequence[SlotState],
    slot_config: SlotConfig,
    lifecycle: LifecycleConfig,
    total_seeds: int,
    *,
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
    slot_by_op = [_slot_row(op, slots, germination_open, advance_enabled, governor_override) for op in LifecycleOp]
    op_mask = [any(row) for row in slot_by_op]
    # §2.5: style and amplitude only vary where a germination or a retarget can actually use them.
    shaping = op_mask[LifecycleOp.GERMINATE] or op_mask[LifecycleOp.SET_ALPHA_TARGET]
    topology_blueprints = set(blueprints_for(slot_config.topology))
    return ActionMasks(
        op=_require_row("op", op_mask),
        slot_by_op=slot_by_op,
        blueprint=_require_row(
            "blueprint",
            [bp is not BlueprintAction.NOOP and bp in topology_blueprints for bp in BlueprintAction],
        ),
        style=[shaping or style is GerminationStyle.SIGMOID_ADD for style in GerminationStyle],
        tempo=[True] * len(TempoAction),
        alpha_target=[shaping or target is AlphaTargetAction.FULL for target in AlphaTargetAction],
        alpha_speed=[True] * len(AlphaSpeedAction),
        alpha_curve=[True] * len(AlphaCurveAction),
    )


def op_conditioned_mask(masks: ActionMasks, op: LifecycleOp | int, head: str) -> list[bool]:
    """The mask a head is sampled (and re-scored) under once `op` is chosen (§2.7).

    An irrelevant head gets exactly one legal canonical value, so its log-prob is exactly 0; the base mask is
    deliberately not applied first, or the canonical NOOP blueprint would be masked away.
    """
    chosen = LifecycleOp(op)
    if head == "op":
        return _require_row("op", list(masks.op))
    if head == "slot":
        row = _require_row(f"slot under {chosen.name}", list(masks.slot_by_op[chosen]))
        if chosen is LifecycleOp.WAIT:
            return _one_hot(len(row), row.index(True))
        return row
    if head not in CANONICAL_VALUES:
        raise ValueError(f"no action head named {head!r}; heads are {', '.join(HEAD_NAMES)}")
    base: list[bool] = list(getattr(masks, head))
    if head in causal_heads(chosen):
        return _require_row(f"{head} under {chosen.name}", base)
    return _one_hot(len(base), CANONICAL_VALUES[head])


def available_heads(masks: ActionMasks) -> frozenset[str]:
    """Heads some legal op would use this step; only these count for the entropy floor (§2.9)."""
    heads: set[str] = set()
    for op in LifecycleOp:
        if masks.op[op]:
            heads |= causal_heads(op)
    return frozenset(heads)


def is_forced(masks: ActionMasks) -> bool:
    """A step where WAIT is the only legal op (§2.14)."""
    return masks.op[LifecycleOp.WAIT] and sum(masks.op) == 1
