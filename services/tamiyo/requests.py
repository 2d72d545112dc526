"""Checks every DecisionRequest must pass before any policy sees it (bad input → a typed error naming the field)."""

from __future__ import annotations

import math

from leyline_schemas import DecisionRequest, LifecycleOp
from leyline_schemas.heads import FIXED_HEAD_SIZES
from leyline_schemas.observation import EMPTY_SLOT_BLUEPRINT, MAX_BLUEPRINT_INDEX, observation_size


class InvalidDecisionRequest(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def validate_decision_request(request: DecisionRequest) -> None:
    """Raise InvalidDecisionRequest for a NaN observation, a malformed mask or inconsistent sizes."""
    n_slots = len(request.slot_ids)
    expected = observation_size(n_slots)
    if len(request.observation) != expected:
        raise InvalidDecisionRequest(
            "observation",
            f"observation has {len(request.observation)} features, expected {expected} for {n_slots} slots",
        )
    for i, value in enumerate(request.observation):
        if not math.isfinite(value):
            raise InvalidDecisionRequest(f"observation[{i}]", f"observation[{i}] is {value}")
    if len(request.blueprint_indices) != n_slots:
        raise InvalidDecisionRequest(
            "blueprint_indices", f"{len(request.blueprint_indices)} blueprint indices for {n_slots} slots"
        )
    for i, index in enumerate(request.blueprint_indices):
        if not EMPTY_SLOT_BLUEPRINT <= index <= MAX_BLUEPRINT_INDEX:
            raise InvalidDecisionRequest(
                f"blueprint_indices[{i}]",
                f"blueprint index {index} is outside [{EMPTY_SLOT_BLUEPRINT}, {MAX_BLUEPRINT_INDEX}]",
            )
    if len(request.slots) != n_slots:
        raise InvalidDecisionRequest("slots", f"{len(request.slots)} slot states for {n_slots} slot ids")
    masks = request.masks
    for head, size in FIXED_HEAD_SIZES.items():
        row: list[bool] = getattr(masks, head)
        if len(row) != size:
            raise InvalidDecisionRequest(
                f"masks.{head}", f"mask for head {head} has {len(row)} entries, expected {size}"
            )
        if not any(row):
            raise InvalidDecisionRequest(f"masks.{head}", f"mask for head {head} has no legal action")
    if len(masks.slot_by_op) != len(LifecycleOp):
        raise InvalidDecisionRequest(
            "masks.slot_by_op", f"slot_by_op has {len(masks.slot_by_op)} rows, expected {len(LifecycleOp)}"
        )
    for op, row in enumerate(masks.slot_by_op):
        if len(row) != n_slots:
            raise InvalidDecisionRequest(
                f"masks.slot_by_op[{op}]", f"slot_by_op[{op}] has {len(row)} entries for {n_slots} slots"
            )
        if masks.op[op] and not any(row):
            raise InvalidDecisionRequest(f"masks.slot_by_op[{op}]", f"op {op} is legal but no slot allows it")
