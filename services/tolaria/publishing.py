"""What Tolaria publishes for each epoch: the step record in STEPS (the epoch's commit point) and its telemetry."""

from __future__ import annotations

import msgspec

from leyline_schemas import (
    EpochCompleted,
    EpochReport,
    LifecyclePayload,
    SeedGerminated,
    SeedInternalLevelChanged,
    SeedStage,
    StepDirective,
    StepRecord,
    blueprint_name,
    encode,
    subjects,
)
from services.runtime.bus import retry_while_bus_fails
from services.runtime.service import ServiceContext
from services.tolaria.env import EpisodeEnv


async def publish_step(ctx: ServiceContext, record: StepRecord, deadline: float) -> int:
    """Publish a step record, retrying through a bus outage; the same Nats-Msg-Id makes a retry idempotent.

    Returns the record's sequence in STEPS.
    """
    payload = encode(record)
    ack = await retry_while_bus_fails(
        lambda: ctx.js.publish(
            subjects.steps_subject(record.run_id),
            payload,
            headers={"Nats-Msg-Id": record.dedup_id},
            timeout=10.0,
        ),
        what=f"storing step {record.dedup_id}",
        deadline=deadline,
    )
    return ack.seq


async def publish_epoch(
    ctx: ServiceContext,
    run_id: str,
    env: EpisodeEnv,
    directive: StepDirective,
    report: EpochReport,
    where: dict[str, int],
    refused: bool = False,
) -> None:
    """An epoch's telemetry: the lifecycle events the directive applied, then EpochCompleted."""
    for event in applied_lifecycle_events(env, directive, refused):
        await ctx.telemetry.emit(run_id, event, **where)
    slots = {
        s.slot_id: f"{s.stage.name}:{blueprint_name(s.blueprint)}" if s.stage is not SeedStage.DORMANT else "empty"
        for s in env.slot_states
    }
    decision = directive.decision
    await ctx.telemetry.emit(
        run_id,
        EpochCompleted(
            val_accuracy=report.val_accuracy,
            val_loss=report.val_loss,
            train_accuracy=report.train_accuracy,
            train_loss=report.train_loss,
            slots=slots,
            contributions={r.slot_id: r.contribution for r in report.slots if r.contribution is not None},
            op=directive.effective_op.name,
            target_slot=directive.target_slot,
            outcome="refused" if refused else directive.outcome.value,
            policy_id=decision.policy_id if decision else "",
            policy_version=decision.policy_version if decision else -1,
            host_params=report.host_params,
            total_params=env.model.total_params,
            epoch_seconds=report.epoch_seconds,
            compute=report.compute,
        ),
        **where,
    )


def applied_lifecycle_events(env: EpisodeEnv, directive: StepDirective, refused: bool) -> list[LifecyclePayload]:
    """The directive's lifecycle events as they happened here: those whose mutation Tolaria refused are dropped (a
    MutationRefused event follows), and the parameter counts only Tolaria, which holds the tensors, knows are
    filled in after the apply (plans/kasmina2-phase0.md §6.8 item 2, Choice 11)."""
    events: list[LifecyclePayload] = []
    for event in directive.lifecycle_events:
        if isinstance(event, SeedGerminated):
            slot = env.model.slot(event.slot_id)
            if refused and not slot.has_seed:
                continue
            event = msgspec.structs.replace(event, params=slot.seed_param_count)
        elif isinstance(event, SeedInternalLevelChanged):
            if refused and not _level_applied(env, event):
                continue
            event = msgspec.structs.replace(event, active_params=env.model.slot(event.slot_id).seed_param_count)
        events.append(event)
    return events


def _level_applied(env: EpisodeEnv, event: SeedInternalLevelChanged) -> bool:
    """Whether the slot's seed now stands at the level the event announces."""
    slot = env.model.slot(event.slot_id)
    return slot.microstructure is not None and slot.seed_id == event.seed_id and slot.internal_level == event.to_level
