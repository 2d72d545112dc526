"""Fixed lifecycle schedules: the non-adaptive recipe control (plans/proof-baselines.md §3.4), served as a policy.

A schedule is data: an id, a version, and (epoch, action) steps, pinned by the sha256 of its canonical encoding held
as a literal beside it, so a change without a version bump fails at import. The built-in
`fixed-germinate-r0c0-v1` follows the lifecycle constants (DEFAULT_MIN_BLENDING_EPOCHS = 10, STANDARD tempo = 5
epochs): germinate the first enabled slot at epoch 1 (CONV_LIGHT on CNN hosts, MLP_SMALL on transformer hosts;
SIGMOID_ADD, STANDARD, α target FULL), advance at 2 (TRAINING), 12 (BLENDING) and 17 (HOLDING), fossilize at 18.

The schedule plays through Kasmina's real masks, statelessly: the first slot's stage says which step is next; the
step is taken at its declared epoch, or at the first later epoch where the masks allow it (a gate can hold a seed
back). Every other epoch is WAIT. Each decision's reason names the step and its declared epoch, so the realised
trace, and each step's delay, can be read back from the step records; the proof experiment checks it against the
declaration (a step delayed more than `MAX_DELAY` epochs, or an op out of order, invalidates the episode).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import msgspec

from leyline_schemas.decisions import Decision, DecisionRequest, FactoredAction
from leyline_schemas.enums import (
    AlphaTargetAction,
    BlueprintAction,
    GerminationStyle,
    LifecycleOp,
    SeedStage,
    TempoAction,
    Topology,
)
from leyline_schemas.policy_ids import FIXED_SCHEDULE_POLICY_ID

MAX_DELAY = 3
FIXED_GERMINATE_R0C0 = FIXED_SCHEDULE_POLICY_ID


@dataclass(frozen=True)
class ScheduledStep:
    epoch: int
    op: LifecycleOp
    #: The stage the first slot is in when this step is due (the step moves it on).
    from_stage: SeedStage


@dataclass(frozen=True)
class Schedule:
    schedule_id: str
    version: int
    steps: tuple[ScheduledStep, ...]
    blueprints: dict[Topology, BlueprintAction]

    @property
    def min_episode_length(self) -> int:
        return self.steps[-1].epoch

    def canonical_hash(self) -> str:
        canonical = {
            "id": self.schedule_id,
            "version": self.version,
            "steps": [[s.epoch, s.op.name, s.from_stage.name] for s in self.steps],
            "blueprints": {t.value: b.name for t, b in sorted(self.blueprints.items())},
        }
        return hashlib.sha256(msgspec.json.encode(canonical, order="sorted")).hexdigest()


_FIXED = Schedule(
    schedule_id=FIXED_GERMINATE_R0C0,
    version=1,
    steps=(
        ScheduledStep(1, LifecycleOp.GERMINATE, SeedStage.DORMANT),
        ScheduledStep(2, LifecycleOp.ADVANCE, SeedStage.GERMINATED),
        ScheduledStep(12, LifecycleOp.ADVANCE, SeedStage.TRAINING),
        ScheduledStep(17, LifecycleOp.ADVANCE, SeedStage.BLENDING),
        ScheduledStep(18, LifecycleOp.FOSSILIZE, SeedStage.HOLDING),
    ),
    blueprints={Topology.CNN: BlueprintAction.CONV_LIGHT, Topology.TRANSFORMER: BlueprintAction.MLP_SMALL},
)
#: The pinned hash of `fixed-germinate-r0c0-v1`; editing the schedule without a new id/version fails below.
PINNED_HASHES = {FIXED_GERMINATE_R0C0: "df558ad2328baa342ce26c98b3bdfdf215ebde2a1fa6d9948224656015b03f29"}
SCHEDULES: dict[str, Schedule] = {_FIXED.schedule_id: _FIXED}


def check_pinned(schedules: dict[str, Schedule], pinned: dict[str, str]) -> None:
    """Raise when a schedule's canonical hash differs from its pinned literal (changed without a version bump)."""
    for schedule_id, schedule in schedules.items():
        if pinned.get(schedule_id) != schedule.canonical_hash():
            raise RuntimeError(
                f"schedule {schedule_id} changed (hash {schedule.canonical_hash()}): give it a new version and pin it"
            )


check_pinned(SCHEDULES, PINNED_HASHES)


def _due_step(schedule: Schedule, stage: SeedStage) -> ScheduledStep | None:
    return next((s for s in schedule.steps if s.from_stage is stage), None)


def _legal(request: DecisionRequest, op: LifecycleOp) -> bool:
    masks = request.masks
    return bool(masks.op[op]) and bool(masks.slot_by_op and masks.slot_by_op[op][0])


def schedule_decision(request: DecisionRequest, schedule: Schedule = _FIXED) -> Decision:
    """The schedule's action at this epoch on the first enabled slot, or WAIT."""
    first = request.slots[0] if request.slots else None
    step = _due_step(schedule, first.stage if first is not None else SeedStage.DORMANT)
    if first is not None and first.stage is SeedStage.DORMANT and first.seed_id:
        step = None  # a seed was already grown and removed: the recipe grows once
    action, reason = FactoredAction(op=LifecycleOp.WAIT, slot=0), f"{schedule.schedule_id}: wait"
    if step is not None and request.epoch >= step.epoch and _legal(request, step.op):
        blueprint = schedule.blueprints[request.topology] if step.op is LifecycleOp.GERMINATE else BlueprintAction.NOOP
        action = FactoredAction(
            op=step.op,
            slot=0,
            blueprint=blueprint,
            style=GerminationStyle.SIGMOID_ADD,
            tempo=TempoAction.STANDARD,
            alpha_target=AlphaTargetAction.FULL,
        )
        index = schedule.steps.index(step)
        reason = f"{schedule.schedule_id}: step {index} {step.op.name} declared epoch {step.epoch}"
    return Decision(
        policy_id=request.policy_id,
        policy_version=schedule.version,
        action=action,
        value=0.0,
        confidence=1.0,
        reason=reason,
    )


def realised_delays(schedule: Schedule, ops_by_epoch: dict[int, str]) -> tuple[list[int], str]:
    """Each scheduled step's delay (realised epoch − declared epoch) from the applied ops of one episode, and what
    is wrong with the trace ("" when it follows the declaration with every delay in [0, MAX_DELAY])."""
    applied = [(epoch, op) for epoch, op in sorted(ops_by_epoch.items()) if op != LifecycleOp.WAIT.name]
    delays: list[int] = []
    for step, (epoch, op) in zip(schedule.steps, applied, strict=False):
        if op != step.op.name:
            return delays, f"epoch {epoch}: {op} where the schedule declares {step.op.name}"
        delays.append(epoch - step.epoch)
    if len(applied) > len(schedule.steps):
        return delays, f"{len(applied)} non-WAIT ops, the schedule declares {len(schedule.steps)}"
    if len(applied) < len(schedule.steps):
        return delays, f"only {len(applied)} of {len(schedule.steps)} scheduled steps happened"
    if any(d < 0 or d > MAX_DELAY for d in delays):
        return delays, f"delays {delays} outside [0, {MAX_DELAY}]"
    return delays, ""
