"""A readable one-line rendering of every telemetry event, for Karn's live log."""

from __future__ import annotations

import time

from leyline_schemas import (
    SEED_INTERNALS,
    EpisodeOutcome,
    EpisodeResumed,
    EpochCompleted,
    GovernorRollback,
    MutationRefused,
    PolicyLoadFailed,
    PolicyUpdated,
    PPOUpdateCompleted,
    RunFinished,
    RunResumed,
    RunStarted,
    SeedFossilized,
    SeedGateEvaluated,
    SeedGerminated,
    SeedInternalLevelChanged,
    SeedPruned,
    SeedStageChanged,
    ServiceStarted,
    ServiceStopped,
    ShapleyComputed,
    TelemetryEvent,
    blueprint_name,
)


def where(event: TelemetryEvent, with_run: bool = True) -> str:
    """`run envN epM eNNN`: the place an event comes from, as far as its envelope says."""
    parts = [event.run_id] if with_run else []
    if event.env_id is not None:
        parts.append(f"env{event.env_id}")
    if event.episode is not None:
        parts.append(f"ep{event.episode}")
    if event.epoch is not None:
        parts.append(f"e{event.epoch:03d}")
    return " ".join(parts)


def render(event: TelemetryEvent) -> str | None:
    """The line for an event, or None for events too chatty for the log (gate evaluations that passed)."""
    text = describe(event)
    if text is None:
        return None
    return f"{stamp(event)} {where(event)} {text}"


def stamp(event: TelemetryEvent) -> str:
    return time.strftime("%H:%M:%S", time.localtime(event.timestamp))


def describe(event: TelemetryEvent) -> str | None:
    """What happened, without when and where; None for events too chatty for a log."""
    p = event.payload
    text: str
    if isinstance(p, EpochCompleted):
        slots = " ".join(f"{slot}={stage}" for slot, stage in p.slots.items()) or "-"
        action = p.op + (f"@{p.target_slot}" if p.target_slot else "")
        contributions = " ".join(f"c[{s}]={c:+.2f}" for s, c in p.contributions.items())
        text = f"acc {p.val_accuracy:6.2f}% loss {p.val_loss:.4f} | {slots} | {action} ({p.outcome})" + (
            f" | {contributions}" if contributions else ""
        )
    elif isinstance(p, SeedGerminated):
        text = f"germinated {blueprint_name(p.blueprint)} in {p.slot_id} ({p.params:,} params)"
        if p.blueprint in SEED_INTERNALS:
            text += f" at level {p.internal_level} of {p.internal_max_level}"
    elif isinstance(p, SeedInternalLevelChanged):
        verb = "grew" if p.to_level > p.from_level else "shrank"
        text = (
            f"{verb} {blueprint_name(p.blueprint)} in {p.slot_id}: level {p.from_level} → {p.to_level} of "
            f"{p.max_level} ({p.active_params:,} active params)"
        ) + ("" if p.initiator == "policy" else f" by {p.initiator}")
    elif isinstance(p, SeedStageChanged):
        text = f"{p.slot_id} {p.from_stage} -> {p.to_stage} (alpha {p.alpha:.2f})"
    elif isinstance(p, SeedGateEvaluated):
        if p.passed:
            return None
        text = f"{p.slot_id} gate G{p.gate} -> {p.target_stage} failed: {', '.join(p.checks_failed) or p.message}"
    elif isinstance(p, SeedFossilized):
        c = "n/a" if p.counterfactual is None else f"{p.counterfactual:+.2f}"
        level = f", level {p.internal_level}" if p.blueprint in SEED_INTERNALS else ""
        text = (
            f"FOSSILIZED {blueprint_name(p.blueprint)} in {p.slot_id} "
            f"(+{p.params_added:,} params, contribution {c}{level})"
        )
    elif isinstance(p, SeedPruned):
        text = f"pruned {blueprint_name(p.blueprint)} in {p.slot_id}: {p.reason} by {p.initiator}"
    elif isinstance(p, GovernorRollback):
        text = f"GOVERNOR ROLLBACK ({p.reason}) loss {p.loss_at_panic}; pruned {', '.join(p.pruned_slots) or 'nothing'}"
    elif isinstance(p, MutationRefused):
        text = f"refused {p.mutation} on {p.slot_id}: {p.reason}"
    elif isinstance(p, EpisodeOutcome):
        text = (
            f"EPISODE done: acc {p.final_accuracy:.2f}% return {p.episode_return:+.3f} ({p.reward_mode.value}) "
            f"germinated {p.seeds_germinated} fossilized {p.seeds_fossilized} pruned {p.seeds_pruned} "
            f"+{p.seed_params_added:,} params"
        )
    elif isinstance(p, PPOUpdateCompleted):
        text = (
            f"PPO {p.policy_id} v{p.version}: policy {p.policy_loss:+.4f} value {p.value_loss:.4f} "
            f"entropy {p.entropy:.3f} kl {p.approx_kl:.4f} clip {p.clip_fraction:.2f} ev {p.explained_variance:+.2f}"
        )
    elif isinstance(p, PolicyUpdated):
        text = f"policy {p.policy_id} -> v{p.version} ({p.sha256[:12]})"
    elif isinstance(p, PolicyLoadFailed):
        text = f"policy {p.policy_id} v{p.version} NOT loaded: {p.reason}"
    elif isinstance(p, RunStarted):
        text = (
            f"RUN started: task {p.task}, {p.episodes} episodes x {p.episode_length} epochs on {p.n_envs} env(s), "
            f"policy {p.policy_id}, reward {p.reward_mode.value}, slots {','.join(p.slot_ids)}"
        )
    elif isinstance(p, RunFinished):
        text = f"RUN {p.state}" + (f": {p.message}" if p.message else "")
    elif isinstance(p, RunResumed):
        text = f"RUN resumed (was {p.previous_state})" + (f" by {p.by}" if p.by else "")
    elif isinstance(p, EpisodeResumed):
        text = f"episode resumed from its checkpoint of epoch {p.from_epoch} (attempt {p.attempt})"
    elif isinstance(p, ShapleyComputed):
        values = " ".join(f"{slot}={value:+.2f}" for slot, value in sorted(p.shapley.items())) or "no seeds"
        text = f"shapley ({p.strategy}): {values}"
    elif isinstance(p, ServiceStarted):
        text = f"service {p.service} up ({p.instance}, {p.device}, v{p.version})"
    elif isinstance(p, ServiceStopped):
        text = f"service {p.service} down ({p.instance}): {p.reason}"
    else:
        text = type(p).__name__
    return text
