"""A small, fully specified run as real Leyline messages: what Tolaria, Kasmina and Simic publish for it."""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import leyline_schemas as L

if TYPE_CHECKING:
    from services.karn.aggregator import SanctumAggregator

SLOTS = ["r0c0", "r0c1", "r0c2"]
HOST_PARAMS = 24058
CONV_LIGHT_PARAMS = 2336
NORM_PARAMS = 64


def accuracy(env_id: int, episode: int, epoch: int) -> float:
    """A smooth learning curve, different per env, with a dip at epoch 9 of env 3 (a regression from peak)."""
    acc = 60.0 + 35.0 * (1.0 - math.exp(-epoch / 3.0)) + 0.5 * env_id - 0.25 * episode
    if env_id == 3 and epoch >= 9:
        acc -= 4.0
    return round(acc, 4)


@dataclass
class SlotPlan:
    """A seed's life in one slot: (epoch, stage name) milestones; the seed ends fossilized or pruned."""

    slot_id: str
    blueprint: L.BlueprintAction
    params: int
    stages: list[tuple[int, L.SeedStage]]
    prune_reason: str = ""


def plans_for(env_id: int) -> list[SlotPlan]:
    S = L.SeedStage
    if env_id == 0:
        return [
            SlotPlan(
                "r0c1",
                L.BlueprintAction.CONV_LIGHT,
                CONV_LIGHT_PARAMS,
                [(3, S.GERMINATED), (4, S.TRAINING), (6, S.BLENDING), (8, S.HOLDING), (9, S.FOSSILIZED)],
            ),
            SlotPlan(
                "r0c2", L.BlueprintAction.NORM, NORM_PARAMS, [(5, S.GERMINATED), (6, S.TRAINING), (7, S.BLENDING)]
            ),
        ]
    if env_id == 1:
        return [
            SlotPlan(
                "r0c0",
                L.BlueprintAction.ATTENTION,
                1200,
                [(3, S.GERMINATED), (4, S.TRAINING), (7, S.PRUNED)],
                prune_reason="negative_contribution",
            )
        ]
    return []


@dataclass
class RunScript:
    """Generates the messages of one run in publication order, with deterministic timestamps."""

    run_id: str
    n_envs: int = 4
    episodes: int = 4
    episode_length: int = 12
    policy_id: str = "heuristic"
    learn: bool = False
    start: float = 1_700_000_000.0
    clock: float = 0.0
    items: list[L.TelemetryEvent | L.StepRecord] = field(default_factory=list)

    def event(self, payload: L.EventPayload, **where: int | None) -> L.TelemetryEvent:
        self.clock += 0.05
        return L.TelemetryEvent(
            event_id=uuid.uuid4().hex,
            run_id=self.run_id,
            source="test-" + type(payload).__name__.lower(),
            timestamp=self.start + self.clock,
            payload=payload,
            env_id=where.get("env_id"),
            episode=where.get("episode"),
            epoch=where.get("epoch"),
        )

    def spec(self) -> L.RunSpec:
        return L.RunSpec(
            run_id=self.run_id,
            task="digits",
            slots=SLOTS,
            episodes=self.episodes,
            episode_length=self.episode_length,
            n_envs=self.n_envs,
            arms=[L.ArmSpec(arm_id="main", policy_id=self.policy_id, reward_mode=L.RewardMode.SIMPLIFIED)],
            learn=self.learn,
            created_at=self.start,
        )

    def build(self) -> list[L.TelemetryEvent | L.StepRecord]:
        self.items = [
            self.event(
                L.RunStarted(
                    task="digits",
                    n_envs=self.n_envs,
                    episodes=self.episodes,
                    episode_length=self.episode_length,
                    slot_ids=SLOTS,
                    policy_id=self.policy_id,
                    reward_mode=L.RewardMode.SIMPLIFIED,
                )
            )
        ]
        rounds = math.ceil(self.episodes / self.n_envs)
        for round_index in range(rounds):
            envs = [e for e in range(self.n_envs) if round_index * self.n_envs + e < self.episodes]
            states = {e: {s: L.SlotState(slot_id=s) for s in SLOTS} for e in envs}
            for epoch in range(1, self.episode_length + 1):
                for env_id in envs:
                    self._epoch(env_id, round_index * self.n_envs + env_id, epoch, states[env_id], round_index)
            for env_id in envs:
                self._outcome(env_id, round_index * self.n_envs + env_id)
            if self.learn:
                version = round_index + 1
                self.items.append(
                    self.event(
                        L.PPOUpdateCompleted(
                            policy_id=self.policy_id,
                            version=version,
                            policy_loss=-0.02 * version,
                            value_loss=0.5 / version,
                            entropy=1.2 - 0.1 * version,
                            approx_kl=0.004 * version,
                            clip_fraction=0.05 * version,
                            explained_variance=0.3 * version,
                            head_entropies={"op": 0.9, "slot": 0.7, "blueprint": 0.8},
                            version_lag_mean=0.0,
                            steps=len(envs) * self.episode_length,
                        )
                    )
                )
                self.items.append(
                    self.event(L.PolicyUpdated(policy_id=self.policy_id, version=version, sha256="ab" * 32))
                )
        self.items.append(self.event(L.RunFinished(state="completed")))
        return self.items

    def _epoch(self, env_id: int, episode: int, epoch: int, slots: dict[str, L.SlotState], round_index: int) -> None:
        where = {"env_id": env_id, "episode": episode, "epoch": epoch}
        acc = accuracy(env_id, episode, epoch)
        op, target, mutations_events = L.LifecycleOp.WAIT, "", []
        for plan in plans_for(env_id):
            for when, stage in plan.stages:
                if when != epoch:
                    continue
                seed_id = f"{plan.slot_id}-{L.blueprint_name(plan.blueprint)}-e{plan.stages[0][0]}"
                old = slots[plan.slot_id]
                target = plan.slot_id
                if stage is L.SeedStage.GERMINATED:
                    op = L.LifecycleOp.GERMINATE
                    mutations_events.append(
                        L.SeedGerminated(
                            slot_id=plan.slot_id, seed_id=seed_id, blueprint=plan.blueprint, params=plan.params
                        )
                    )
                else:
                    op = {
                        L.SeedStage.FOSSILIZED: L.LifecycleOp.FOSSILIZE,
                        L.SeedStage.PRUNED: L.LifecycleOp.PRUNE,
                    }.get(stage, L.LifecycleOp.ADVANCE)
                    mutations_events.append(
                        L.SeedStageChanged(
                            slot_id=plan.slot_id,
                            seed_id=seed_id,
                            from_stage=old.stage.name,
                            to_stage=stage.name,
                            alpha=old.controller.alpha,
                            accuracy_delta=0.75 if old.stage is L.SeedStage.BLENDING else 0.25,
                        )
                    )
                    if stage is L.SeedStage.FOSSILIZED:
                        mutations_events.append(
                            L.SeedFossilized(
                                slot_id=plan.slot_id,
                                seed_id=seed_id,
                                blueprint=plan.blueprint,
                                improvement=1.5,
                                params_added=plan.params,
                                epochs_total=epoch - plan.stages[0][0],
                                counterfactual=1.25,
                            )
                        )
                    if stage is L.SeedStage.PRUNED:
                        mutations_events.append(
                            L.SeedPruned(
                                slot_id=plan.slot_id,
                                seed_id=seed_id,
                                blueprint=plan.blueprint,
                                reason=plan.prune_reason,
                                initiator="policy",
                                improvement=-0.5,
                                epochs_total=epoch - plan.stages[0][0],
                                counterfactual=-0.75,
                            )
                        )
                alpha = {L.SeedStage.BLENDING: 0.5, L.SeedStage.HOLDING: 1.0, L.SeedStage.FOSSILIZED: 1.0}.get(
                    stage, 0.0
                )
                slots[plan.slot_id] = L.SlotState(
                    slot_id=plan.slot_id,
                    stage=stage,
                    seed_id=seed_id,
                    blueprint=plan.blueprint,
                    controller=L.AlphaControllerState(alpha=alpha),
                )
        live = [s for s in slots.values() if s.stage not in (L.SeedStage.DORMANT, L.SeedStage.PRUNED)]
        slot_reports = [
            L.SlotReport(
                slot_id=s.slot_id,
                contribution=round(0.4 + 0.1 * epoch, 4) if s.stage is not L.SeedStage.GERMINATED else None,
                gradient_health=0.9,
                has_vanishing=env_id == 1,
                has_exploding=False,
                seed_param_count=CONV_LIGHT_PARAMS if s.blueprint is L.BlueprintAction.CONV_LIGHT else NORM_PARAMS,
            )
            for s in live
        ]
        interactions = []
        if len(live) >= 2:
            interactions = [L.PairInteraction(slot_a=live[0].slot_id, slot_b=live[1].slot_id, interaction=0.125)]
        seed_params = sum(r.seed_param_count for r in slot_reports)
        report = L.EpochReport(
            epoch=epoch,
            max_epochs=self.episode_length,
            train_loss=round(1.0 / epoch, 4),
            train_accuracy=acc + 1.0,
            val_loss=round(1.2 / epoch, 4),
            val_accuracy=acc,
            all_off_accuracy=acc - 1.0 if live else None,
            host_params=HOST_PARAMS,
            total_params=HOST_PARAMS + seed_params,
            slots=slot_reports,
            interactions=interactions,
        )
        version = round_index if self.learn else 0
        decision = L.Decision(
            policy_id=self.policy_id,
            policy_version=version,
            action=L.FactoredAction(op=op),
            entropies=L.HeadValues(op=0.5, slot=0.25),
        )
        directive = L.StepDirective(
            run_id=self.run_id,
            env_id=env_id,
            episode=episode,
            epoch=epoch,
            outcome=L.DecisionOutcome.WAITED if op is L.LifecycleOp.WAIT else L.DecisionOutcome.APPLIED,
            effective_op=op,
            raw_action=L.FactoredAction(op=op),
            decision=decision,
            target_slot=target,
            slots=list(slots.values()),
            observation=[0.0] * 8,
            policy_state=b"\x00" * 16,
            lifecycle_events=mutations_events,
        )
        done = epoch == self.episode_length
        fossilized_params = sum(
            p.params for p in plans_for(env_id) if any(s is L.SeedStage.FOSSILIZED for _, s in p.stages)
        )
        summary = None
        if done:
            summary = L.EpisodeSummary(
                final_accuracy=acc,
                host_params=HOST_PARAMS,
                seed_params_added=fossilized_params,
                seeds_germinated=len(plans_for(env_id)),
                seeds_fossilized=sum(1 for p in plans_for(env_id) if p.stages[-1][1] is L.SeedStage.FOSSILIZED),
                seeds_pruned=sum(1 for p in plans_for(env_id) if p.stages[-1][1] is L.SeedStage.PRUNED),
            )
        self.items.append(
            L.StepRecord(
                run_id=self.run_id,
                arm="main",
                env_id=env_id,
                episode=episode,
                step=epoch,
                policy_id=self.policy_id,
                policy_version=version,
                report=report,
                directive=directive,
                applied=True,
                done=done,
                truncated=done,
                summary=summary,
            )
        )
        for payload in mutations_events:
            self.items.append(self.event(payload, **where))
        slot_text = {
            s.slot_id: "empty" if s.stage is L.SeedStage.DORMANT else f"{s.stage.name}:{L.blueprint_name(s.blueprint)}"
            for s in slots.values()
        }
        self.items.append(
            self.event(
                L.EpochCompleted(
                    val_accuracy=acc,
                    val_loss=report.val_loss,
                    train_accuracy=report.train_accuracy,
                    train_loss=report.train_loss,
                    slots=slot_text,
                    contributions={r.slot_id: r.contribution for r in slot_reports if r.contribution is not None},
                    op=op.name,
                    target_slot=target,
                    outcome=directive.outcome.value,
                    policy_id=self.policy_id,
                    policy_version=version,
                    host_params=HOST_PARAMS,
                    total_params=report.total_params,
                ),
                **where,
            )
        )

    def _outcome(self, env_id: int, episode: int) -> None:
        final = accuracy(env_id, episode, self.episode_length)
        plans = plans_for(env_id)
        fossilized = [p for p in plans if p.stages[-1][1] is L.SeedStage.FOSSILIZED]
        self.items.append(
            self.event(
                L.EpisodeOutcome(
                    env_id=env_id,
                    episode=episode,
                    final_accuracy=final,
                    host_params=HOST_PARAMS,
                    seed_params_added=sum(p.params for p in fossilized),
                    seeds_germinated=len(plans),
                    seeds_fossilized=len(fossilized),
                    seeds_pruned=sum(1 for p in plans if p.stages[-1][1] is L.SeedStage.PRUNED),
                    episode_return=round(3 * final / 100 - 0.01 * len(plans), 6),
                    reward_mode=L.RewardMode.SIMPLIFIED,
                    length=self.episode_length,
                    policy_id=self.policy_id,
                ),
                env_id=env_id,
                episode=episode,
            )
        )


def script(run_id: str = "run-test", **kwargs: object) -> RunScript:
    built = RunScript(run_id=run_id, **kwargs)  # type: ignore[arg-type]
    built.build()
    return built


async def put_run(js: object, run: RunScript, state: L.RunState = L.RunState.RUNNING) -> None:
    """Register the run in ESPER_RUNS as Tolaria's run endpoint does (spec and status)."""
    from services.runtime import jetstream

    kv = await jetstream.runs_bucket(js)  # type: ignore[arg-type]
    await kv.put(L.subjects.run_key(run.run_id), L.encode(run.spec()))
    status = L.RunStatus(run_id=run.run_id, state=state, episodes_total=run.episodes)
    await kv.put(L.subjects.run_status_key(run.run_id), L.encode(status))


async def publish(js: object, items: list[L.TelemetryEvent | L.StepRecord]) -> None:
    """Publish to TELEMETRY and STEPS exactly as the services do (subjects and dedup ids)."""
    for item in items:
        if isinstance(item, L.StepRecord):
            subject, msg_id = L.subjects.steps_subject(item.run_id), item.dedup_id
        else:
            kind = str(type(item.payload).__struct_config__.tag)
            subject, msg_id = L.subjects.telemetry_subject(item.run_id, kind), item.event_id
        await js.publish(subject, L.encode(item), headers={"Nats-Msg-Id": msg_id})  # type: ignore[attr-defined]


def feed(aggregator: SanctumAggregator, items: list[L.TelemetryEvent | L.StepRecord]) -> None:
    """Apply a run's messages to a SanctumAggregator in order, as a feed thread does."""
    for item in items:
        if isinstance(item, L.StepRecord):
            aggregator.apply_step(item)
        else:
            aggregator.apply_event(item)
