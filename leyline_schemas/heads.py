"""The eight action heads: their sizes and the op-conditioned mask rule (reference/tamiyo_simic.md §2.1, §2.7–2.9,
§2.14).

Kasmina computes the base masks a step allows; once a policy has chosen its op, every other head is sampled (and
re-scored by PPO) under the mask this module derives from them. Tamiyo samples with it, Simic scores with it, so the
rule lives here, beside the `ActionMasks` it reads, and nowhere else.
"""

from __future__ import annotations

from leyline_schemas.decisions import HEAD_NAMES, ActionMasks
from leyline_schemas.enums import (
    AlphaCurveAction,
    AlphaSpeedAction,
    AlphaTargetAction,
    BlueprintAction,
    GerminationStyle,
    LifecycleOp,
    TempoAction,
)

#: §2.1: the size of every head but `slot`, whose size is the number of enabled slots.
FIXED_HEAD_SIZES: dict[str, int] = {
    "blueprint": len(BlueprintAction),
    "style": len(GerminationStyle),
    "tempo": len(TempoAction),
    "alpha_target": len(AlphaTargetAction),
    "alpha_speed": len(AlphaSpeedAction),
    "alpha_curve": len(AlphaCurveAction),
    "op": len(LifecycleOp),
}


def head_sizes(num_slots: int) -> dict[str, int]:
    """How many values each head has, in the canonical head order (§2.1)."""
    return {head: num_slots if head == "slot" else FIXED_HEAD_SIZES[head] for head in HEAD_NAMES}


#: §2.7: the single value an irrelevant head is forced to.
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
    LifecycleOp.GROW_INTERNAL: frozenset({"op", "slot"}),
    LifecycleOp.SHRINK_INTERNAL: frozenset({"op", "slot"}),
}


def causal_heads(op: LifecycleOp | int) -> frozenset[str]:
    """The heads whose values matter for `op`; credit, entropy and KL use only these (§2.8)."""
    return _CAUSAL_HEADS[LifecycleOp(op)]


def require_row(name: str, row: list[bool]) -> list[bool]:
    """`row`, unless it has no legal value: an empty row is a state-machine bug and raises at once (§2.6)."""
    if not any(row):
        raise ValueError(f"mask invariant: head {name} has no legal value (a state-machine bug, §2.6)")
    return row


def _one_hot(size: int, index: int) -> list[bool]:
    return [i == index for i in range(size)]


def op_conditioned_mask(masks: ActionMasks, op: LifecycleOp | int, head: str) -> list[bool]:
    """The mask a head is sampled (and re-scored) under once `op` is chosen (§2.7).

    An irrelevant head gets exactly one legal canonical value, so its log-prob is exactly 0; the base mask is
    deliberately not applied first, or the canonical NOOP blueprint would be masked away.
    """
    chosen = LifecycleOp(op)
    if head == "op":
        return require_row("op", list(masks.op))
    if head == "slot":
        row = require_row(f"slot under {chosen.name}", list(masks.slot_by_op[chosen]))
        if chosen is LifecycleOp.WAIT:
            return _one_hot(len(row), row.index(True))
        return row
    if head not in CANONICAL_VALUES:
        raise ValueError(f"no action head named {head!r}; heads are {', '.join(HEAD_NAMES)}")
    base: list[bool] = list(getattr(masks, head))
    if head in causal_heads(chosen):
        return require_row(f"{head} under {chosen.name}", base)
    return _one_hot(len(base), CANONICAL_VALUES[head])


def conditioned_masks(masks: ActionMasks, op: int) -> dict[str, list[bool]]:
    """The mask of every head once `op` is chosen; the op head keeps its base mask (§2.7)."""
    return {head: op_conditioned_mask(masks, op, head) for head in HEAD_NAMES}


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
