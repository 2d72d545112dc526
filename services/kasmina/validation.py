"""Kasmina's request validation: a StepRequest whose slot states contradict each other is refused with the field
that is wrong (ARCHITECTURE.md §5), before anything is ticked.
"""

from __future__ import annotations

import math

from leyline_schemas.directives import StepRequest
from leyline_schemas.enums import GateLevel, SeedInternalKind, SeedStage, Topology
from leyline_schemas.lifecycle import LifecycleConfig, SlotState, allowed_blueprints, foreign_blueprints, internal_spec

AUTO_FORWARD_GATES = frozenset({GateLevel.G1, GateLevel.G2, GateLevel.G3})


class InvalidStepRequest(ValueError):
    """A StepRequest whose slot states contradict each other; `field` is the JSON-like path of the culprit."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.detail = message
        super().__init__(f"{field}: {message}")


def _unit(value: float) -> bool:
    return math.isfinite(value) and 0.0 <= value <= 1.0


def _validate_slot(path: str, state: SlotState) -> None:
    if state.stage is SeedStage.UNKNOWN:
        raise InvalidStepRequest(f"{path}.stage", "UNKNOWN is not a slot stage")
    if state.occupied != bool(state.seed_id):
        raise InvalidStepRequest(f"{path}.seed_id", f"stage {state.stage.name} with seed_id {state.seed_id!r}")
    c = state.controller
    for name, value in (("alpha", c.alpha), ("alpha_start", c.alpha_start), ("alpha_target", c.alpha_target)):
        if not _unit(value):
            raise InvalidStepRequest(f"{path}.controller.{name}", f"must be a finite value in [0, 1], got {value}")
    if not math.isfinite(c.steepness) or c.steepness <= 0.0:
        raise InvalidStepRequest(f"{path}.controller.steepness", f"must be finite and positive, got {c.steepness}")
    for name, count in (("steps_total", c.steps_total), ("steps_done", c.steps_done)):
        if count < 0:
            raise InvalidStepRequest(f"{path}.controller.{name}", f"must be ≥ 0, got {count}")
    if c.steps_done > c.steps_total:
        raise InvalidStepRequest(f"{path}.controller.steps_done", f"{c.steps_done} > steps_total {c.steps_total}")
    if not _unit(state.alpha_target_on_blend):
        raise InvalidStepRequest(f"{path}.alpha_target_on_blend", "must be a finite value in [0, 1]")
    if state.blend_tempo_epochs < 0:
        raise InvalidStepRequest(f"{path}.blend_tempo_epochs", "must be ≥ 0")
    if state.previous_epochs_in_stage < 0:
        raise InvalidStepRequest(f"{path}.previous_epochs_in_stage", "must be ≥ 0")
    m = state.metrics
    counters = (
        ("epochs_total", m.epochs_total),
        ("epochs_in_current_stage", m.epochs_in_current_stage),
        ("epochs_since_counterfactual", 0 if m.epochs_since_counterfactual is None else m.epochs_since_counterfactual),
    )
    for name, count in counters:
        if count < 0:
            raise InvalidStepRequest(f"{path}.metrics.{name}", f"must be ≥ 0, got {count}")
    # Gradient health is 0 when the norm is non-finite (kasmina.md §1.3 item 15), so a NaN here is a producer bug.
    for name, health in (
        ("gradient_health", m.gradient_health),
        ("previous_gradient_health", m.previous_gradient_health),
    ):
        if health is not None and math.isnan(health):
            raise InvalidStepRequest(f"{path}.metrics.{name}", "NaN gradient health")
    _validate_internals(path, state)


def _validate_internals(path: str, state: SlotState) -> None:
    """V1–V5 of plans/kasmina2-phase0.md §4.3: the internal level agrees with the seed and SEED_INTERNALS."""
    level, top, kind = state.internal_level, state.internal_max_level, state.internal_kind
    if top < 1:
        raise InvalidStepRequest(f"{path}.internal_max_level", f"must be ≥ 1, got {top}")
    if not 0 <= level <= top:
        raise InvalidStepRequest(f"{path}.internal_level", f"{level} is outside [0, {top}]")
    if kind is SeedInternalKind.NONE and (level != 0 or top != 1):
        raise InvalidStepRequest(f"{path}.internal_level", f"kind NONE needs level 0 of 1, got {level} of {top}")
    if not state.occupied:
        if kind is not SeedInternalKind.NONE:
            raise InvalidStepRequest(f"{path}.internal_kind", f"an empty slot has kind {kind.name}")
        return
    spec = internal_spec(state.blueprint)
    if kind is not spec.kind:
        raise InvalidStepRequest(
            f"{path}.internal_kind", f"{kind.name} on a {state.blueprint.name} seed, whose kind is {spec.kind.name}"
        )
    if kind is not SeedInternalKind.NONE and top != spec.max_level:
        raise InvalidStepRequest(
            f"{path}.internal_max_level", f"{top} on a {state.blueprint.name} seed, whose max is {spec.max_level}"
        )


def _validate_internal_epoch(path: str, state: SlotState, epoch: int) -> None:
    """V6: a level change happened between germination and this request, or never (−1)."""
    changed = state.internal_level_changed_epoch
    if changed != -1 and not state.germinated_epoch <= changed <= epoch:
        raise InvalidStepRequest(
            f"{path}.internal_level_changed_epoch",
            f"{changed} is neither -1 nor in [germinated_epoch {state.germinated_epoch}, epoch {epoch}]",
        )


def _validate_lifecycle(lifecycle: LifecycleConfig, topology: Topology) -> None:
    for k, gate in enumerate(lifecycle.auto_forward_gates):
        if gate not in AUTO_FORWARD_GATES:
            raise InvalidStepRequest(f"lifecycle.auto_forward_gates[{k}]", f"{gate} is not G1, G2 or G3")
    for k in foreign_blueprints(lifecycle.blueprints, topology):
        raise InvalidStepRequest(
            f"lifecycle.blueprints[{k}]",
            f"{lifecycle.blueprints[k].name} is not a blueprint of a {topology.value} host",
        )
    if lifecycle.blueprints and not allowed_blueprints(lifecycle.blueprints, topology):
        raise InvalidStepRequest("lifecycle.blueprints", "the allowlist names no blueprint but NOOP")
    if lifecycle.internal_op_cooldown_epochs < 0:
        raise InvalidStepRequest(
            "lifecycle.internal_op_cooldown_epochs", f"must be ≥ 0, got {lifecycle.internal_op_cooldown_epochs}"
        )


def validate_request(req: StepRequest) -> None:
    """Reject a request whose slot states are inconsistent; non-finite host metrics are left to the governor."""
    spec_ids = [spec.slot_id for spec in req.slot_config.slots]
    if not spec_ids:
        raise InvalidStepRequest("slot_config.slots", "a host needs at least one enabled slot")
    for i, slot_id in enumerate(spec_ids):
        if slot_id in spec_ids[:i]:
            raise InvalidStepRequest(f"slot_config.slots[{i}].slot_id", f"duplicate slot id {slot_id!r}")
    if len(req.slots) != len(spec_ids):
        raise InvalidStepRequest("slots", f"{len(req.slots)} slot states for {len(spec_ids)} enabled slots")
    for i, (state, slot_id) in enumerate(zip(req.slots, spec_ids, strict=True)):
        if state.slot_id in spec_ids[:i]:
            raise InvalidStepRequest(f"slots[{i}].slot_id", f"duplicate slot id {state.slot_id!r}")
        if state.slot_id != slot_id:
            raise InvalidStepRequest(f"slots[{i}].slot_id", f"{state.slot_id!r} where the config has {slot_id!r}")
        _validate_slot(f"slots[{i}]", state)
        _validate_internal_epoch(f"slots[{i}]", state, req.epoch)
    if req.report.epoch != req.epoch:
        raise InvalidStepRequest("report.epoch", f"report is for epoch {req.report.epoch}, request for {req.epoch}")
    seen: set[str] = set()
    for j, report in enumerate(req.report.slots):
        if report.slot_id not in spec_ids or report.slot_id in seen:
            raise InvalidStepRequest(f"report.slots[{j}].slot_id", f"unknown or repeated slot {report.slot_id!r}")
        if report.gradient_health is not None and math.isnan(report.gradient_health):
            raise InvalidStepRequest(f"report.slots[{j}].gradient_health", "NaN gradient health")
        seen.add(report.slot_id)
    _validate_lifecycle(req.lifecycle, req.slot_config.topology)
    if req.lifecycle.max_epochs <= 0 and req.report.max_epochs <= 0:
        raise InvalidStepRequest("lifecycle.max_epochs", "neither the lifecycle nor the report gives max_epochs")
    for name, count in (("lifecycle.max_seeds", req.lifecycle.max_seeds), ("total_seeds", req.total_seeds)):
        if count < 0:
            raise InvalidStepRequest(name, f"must be ≥ 0, got {count}")
