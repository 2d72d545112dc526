"""Trivial policies: uniformly random legal actions and always-WAIT, both stateless and reproducible.

Random sampling follows the hierarchical scheme of reference/tamiyo_simic.md §2.7–2.8: op first, then the slot under
`slot_by_op[op]`, then each head relevant to the op; irrelevant heads take their canonical value with log-prob 0.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Sequence

from leyline_schemas.decisions import ActionMasks, Decision, DecisionRequest, FactoredAction, HeadValues
from leyline_schemas.enums import (
    AlphaCurveAction,
    AlphaSpeedAction,
    AlphaTargetAction,
    BlueprintAction,
    GerminationStyle,
    LifecycleOp,
    TempoAction,
)

RANDOM_POLICY_ID = "random"
WAIT_POLICY_ID = "wait"
SIMPLE_POLICY_VERSION = 0

# §2.8: which ops make each head causally relevant; the slot head is relevant to every op but WAIT.
_RELEVANT_OPS: dict[str, frozenset[LifecycleOp]] = {
    "blueprint": frozenset({LifecycleOp.GERMINATE}),
    "tempo": frozenset({LifecycleOp.GERMINATE}),
    "style": frozenset({LifecycleOp.GERMINATE, LifecycleOp.SET_ALPHA_TARGET}),
    "alpha_target": frozenset({LifecycleOp.GERMINATE, LifecycleOp.SET_ALPHA_TARGET}),
    "alpha_speed": frozenset({LifecycleOp.SET_ALPHA_TARGET, LifecycleOp.PRUNE}),
    "alpha_curve": frozenset({LifecycleOp.SET_ALPHA_TARGET, LifecycleOp.PRUNE}),
}

# §2.7: the single value an irrelevant head is forced to.
_CANONICAL: dict[str, int] = {
    "blueprint": BlueprintAction.NOOP,
    "tempo": TempoAction.STANDARD,
    "style": GerminationStyle.SIGMOID_ADD,
    "alpha_target": AlphaTargetAction.FULL,
    "alpha_speed": AlphaSpeedAction.INSTANT,
    "alpha_curve": AlphaCurveAction.LINEAR,
}


def decision_rng(request: DecisionRequest) -> random.Random:
    """A generator seeded from (run, env, episode, epoch): the same request always draws the same action."""
    key = f"{request.run_id}/{request.env_id}/{request.episode}/{request.epoch}".encode()
    return random.Random(int.from_bytes(hashlib.sha256(key).digest()[:8], "little"))


def random_decision(request: DecisionRequest, rng: random.Random | None = None) -> Decision:
    """A uniformly random legal action with the exact log-prob of each sampled head (§2.7)."""
    draw = rng if rng is not None else decision_rng(request)
    masks = request.masks
    log_probs: dict[str, float] = {}
    entropies: dict[str, float] = {}

    op_index = _sample("op", masks.op, draw, log_probs, entropies)
    op = LifecycleOp(op_index)
    slot_row = _slot_row(masks, op)
    if op is LifecycleOp.WAIT:
        slot = _first_legal("slot", slot_row)
    else:
        slot = _sample("slot", slot_row, draw, log_probs, entropies)

    heads: dict[str, int] = {}
    for head, relevant_ops in _RELEVANT_OPS.items():
        if op in relevant_ops:
            heads[head] = _sample(head, getattr(masks, head), draw, log_probs, entropies)
        else:
            heads[head] = _CANONICAL[head]

    action = FactoredAction(
        op=op,
        slot=slot,
        blueprint=BlueprintAction(heads["blueprint"]),
        style=GerminationStyle(heads["style"]),
        tempo=TempoAction(heads["tempo"]),
        alpha_target=AlphaTargetAction(heads["alpha_target"]),
        alpha_speed=AlphaSpeedAction(heads["alpha_speed"]),
        alpha_curve=AlphaCurveAction(heads["alpha_curve"]),
    )
    slot_name = request.slot_ids[slot] if slot < len(request.slot_ids) else str(slot)
    return Decision(
        policy_id=RANDOM_POLICY_ID,
        policy_version=SIMPLE_POLICY_VERSION,
        action=action,
        log_probs=HeadValues(**log_probs),
        entropies=HeadValues(**entropies),
        value=0.0,
        confidence=math.exp(sum(log_probs.values())),
        reason=f"random: {op.name.lower()} in {slot_name}",
    )


def wait_decision(request: DecisionRequest) -> Decision:
    """Always WAIT, on the canonical (first legal) slot; the do-nothing baseline and the fallback."""
    row = request.masks.slot_by_op[LifecycleOp.WAIT] if request.masks.slot_by_op else []
    slot = next((index for index, legal in enumerate(row) if legal), 0)
    return Decision(
        policy_id=WAIT_POLICY_ID,
        policy_version=SIMPLE_POLICY_VERSION,
        action=FactoredAction(op=LifecycleOp.WAIT, slot=slot),
        value=0.0,
        confidence=1.0,
        reason="wait: always wait",
    )


def _slot_row(masks: ActionMasks, op: LifecycleOp) -> Sequence[bool]:
    if op >= len(masks.slot_by_op):
        raise ValueError(f"mask head 'slot' has no row for op {op.name}")
    return masks.slot_by_op[op]


def _legal_indices(head: str, row: Sequence[bool]) -> list[int]:
    legal = [index for index, ok in enumerate(row) if ok]
    if not legal:
        # §2.6: an empty row means the state machine produced an impossible mask.
        raise ValueError(f"mask head '{head}' has no legal value")
    return legal


def _first_legal(head: str, row: Sequence[bool]) -> int:
    return _legal_indices(head, row)[0]


def _sample(
    head: str,
    row: Sequence[bool],
    rng: random.Random,
    log_probs: dict[str, float],
    entropies: dict[str, float],
) -> int:
    legal = _legal_indices(head, row)
    n = len(legal)
    log_probs[head] = -math.log(n) if n > 1 else 0.0
    # §2.12: normalized entropy of a uniform distribution is 1, and exactly 0 with one legal value.
    entropies[head] = 1.0 if n > 1 else 0.0
    return legal[rng.randrange(n)] if n > 1 else legal[0]
