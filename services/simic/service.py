"""Simic's bus adapter: a durable pull consumer on STEPS feeding episode scoring and, for learning runs, PPO.

Every finished episode is scored under its arm's reward mode and announced as EpisodeOutcome. For a run with
`learn`, each arm's line gets version 0 before any env acts (Tolaria waits for it), and every complete round is
trained and published as the next version: blob → checkpoint → telemetry → KV pointer → acks. A step record is
acknowledged only once it is inside an applied update recorded in a checkpoint, so a learner killed at any point
and restarted replays exactly the rounds it had not committed; records of committed rounds are acked and dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

import msgspec
from nats.js.api import AckPolicy, DeliverPolicy
from nats.js.kv import KeyValue

from leyline_schemas import (
    LeylineDecodeError,
    RunSpec,
    RunState,
    RunStatus,
    StepRecord,
    decode,
    subjects,
)
from leyline_schemas.rounds import arm_index_of_env
from services.runtime import jetstream
from services.runtime.bus import retry_while_bus_fails
from services.runtime.consumers import DurableConsumer, batches
from services.runtime.kv import next_update, read_message
from services.runtime.service import ServiceContext, ServiceDefinition
from services.runtime.settings import RuntimeSettings
from services.runtime.torch_threads import set_torch_threads
from services.simic.episodes import EpisodeBuffer, episode_outcome, score_episode
from services.simic.learner import ArmLearner, LearnerConfig, RoundUpdate
from services.simic.ledger import ArmKey, StepLedger
from services.simic.ppo import PPOConfig
from services.simic.reward_config import arm_of
from services.simic.rollout import RolloutError
from services.simic.versions import VersionPublisher

log = logging.getLogger("esper.simic")

TERMINAL_STATES = frozenset({RunState.COMPLETED, RunState.FAILED, RunState.STOPPED})


@dataclass(frozen=True, kw_only=True)
class SimicSettings(RuntimeSettings):
    """Simic's settings: the consumer, the policy network's sizes and the PPO knobs every learning arm uses."""

    service: str = "simic"
    consumer: str = "simic"
    ack_wait: float = 30.0
    policy_hidden: int = 512
    policy_head_hidden: int = 256
    policy_lstm_layers: int = 1
    learning_rate: float = 3e-4
    ppo_epochs: int = 4
    ppo_minibatches: int = 2
    entropy_coef: float = 0.05
    clip: float = 0.2
    target_kl: float = 0.015
    max_version_lag: int = 3
    torch_threads: int = 0
    keep_versions: int = 20  # weight blobs kept per line (the newest); 0 keeps all

    def learner_config(self) -> LearnerConfig:
        return LearnerConfig(
            hidden=self.policy_hidden,
            head_hidden=self.policy_head_hidden,
            lstm_layers=self.policy_lstm_layers,
            max_version_lag=self.max_version_lag,
            ppo=PPOConfig(
                learning_rate=self.learning_rate,
                epochs=self.ppo_epochs,
                minibatches=self.ppo_minibatches,
                entropy_coef=self.entropy_coef,
                clip=self.clip,
                target_kl=self.target_kl,
            ),
        )


async def ack_all(messages: list[Any]) -> None:
    """Acknowledge what the ledger released; a failed ack is left to redelivery, which the ledger settles again."""
    for message in messages:
        with contextlib.suppress(Exception):
            await message.ack()


@dataclass
class Learners:
    """Simic's in-memory state between bus messages; everything durable is in JetStream.

    The ledger decides which records are held and when they are acked; this class does the acking, the KV and
    object-store I/O, and runs each arm's learner.
    """

    ctx: ServiceContext
    settings: SimicSettings
    runs: KeyValue
    versions: VersionPublisher
    specs: dict[str, RunSpec] = field(default_factory=dict)
    arms: dict[ArmKey, ArmLearner] = field(default_factory=dict)
    ledger: StepLedger[Any] = field(default_factory=StepLedger)
    locks: dict[str, asyncio.Lock] = field(default_factory=dict)

    # ------------------------------------------------------------------ runs and arms

    async def spec(self, run_id: str) -> RunSpec | None:
        if run_id not in self.specs:
            try:
                key = subjects.run_key(run_id)
            except ValueError:  # not a run id a key can hold
                return None
            spec = await read_message(self.runs, key, RunSpec)
            if spec is None:
                return None
            self.specs[run_id] = spec
        return self.specs[run_id]

    async def ensure_arms(self, spec: RunSpec) -> None:
        """Restore or create every arm of a learning run; a new line's version 0 is published here."""
        if not spec.learn:
            return
        async with self.locks.setdefault(spec.run_id, asyncio.Lock()):
            policy_ids = [arm.policy_id for arm in spec.arms]
            if len(set(policy_ids)) != len(policy_ids):
                log.error("run %s: learning arms need distinct policy ids, got %s", spec.run_id, policy_ids)
                return
            for index, arm in enumerate(spec.arms):
                key = (spec.run_id, arm.arm_id)
                if (
                    key in self.arms
                    or self.ledger.is_finished(key)
                    or not any(arm_index_of_env(spec, env) == index for env in range(spec.n_envs))
                ):
                    continue
                learner = await self.versions.load_arm(spec, index, self.settings.learner_config())
                self.arms[key] = learner
                self.ledger.open_arm(spec, index, learner.rounds_done)

    async def watch_runs(self) -> None:
        """Initialise learning arms as soon as a run appears, before any env of it may act."""
        while not self.ctx.stopping.is_set():
            try:
                watcher = await self.runs.watch(">")
                while not self.ctx.stopping.is_set():
                    try:
                        entry = await next_update(watcher, timeout=1.0)
                    except TimeoutError:
                        continue
                    if entry is None or not entry.value:
                        continue
                    await self._on_run_entry(entry.key, entry.value)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("run watch failed; re-opening")
                await asyncio.sleep(1.0)

    async def _on_run_entry(self, key: str, value: bytes) -> None:
        if key.startswith("run."):
            with contextlib.suppress(LeylineDecodeError):
                spec = decode(value, RunSpec)
                self.specs[spec.run_id] = spec
                if spec.learn and not await self._finished(spec.run_id):
                    await self._ensure_logged(spec)
        elif key.startswith("status."):
            with contextlib.suppress(LeylineDecodeError):
                status = decode(value, RunStatus)
                running = await self.spec(status.run_id)
                if running is not None and running.learn and status.state is RunState.RUNNING:
                    await self._ensure_logged(running)

    async def _ensure_logged(self, spec: RunSpec) -> None:
        try:
            await self.ensure_arms(spec)
        except Exception:
            log.exception("%s: cannot set up the learning arms", spec.run_id)

    async def _finished(self, run_id: str) -> bool:
        status = await read_message(self.runs, subjects.run_status_key(run_id), RunStatus)
        return status is not None and status.state in TERMINAL_STATES

    # ------------------------------------------------------------------ steps

    async def on_message(self, msg: Any) -> None:
        try:
            record = decode(msg.data, StepRecord)
        except LeylineDecodeError as exc:
            self.ctx.metrics.decode_failures.labels("simic", "steps").inc()
            log.warning("dropped undecodable step record on %s: %s", msg.subject, exc)
            with contextlib.suppress(Exception):
                await msg.term()
            return
        self.ctx.metrics.count_event("step_consumed")
        arrival = self.ledger.receive(record, msg)
        if arrival.duplicate:
            self.ctx.metrics.count_event("duplicate_step")
        if arrival.superseded:
            self.ctx.metrics.count_event("superseded_step", arrival.superseded)
            log.info(
                "%s env %d episode %d restarted: attempt %d replaces %d earlier record(s)",
                record.run_id,
                record.env_id,
                record.episode,
                record.attempt,
                arrival.superseded,
            )
        await ack_all(arrival.ack)
        if arrival.episode is not None:
            await self.finish_episode(arrival.episode)

    async def finish_episode(self, buffer: EpisodeBuffer) -> None:
        records = buffer.ordered()
        first = records[0]
        spec = await self.spec(first.run_id)
        # Scored at the learner's γ: PBRS telescopes only under the discount GAE uses (§6.3).
        rewards = self.settings.learner_config().rewards(arm_of(spec, first.arm))
        mode = rewards.mode
        scored = score_episode(records, rewards)
        outcome = episode_outcome(scored, mode)
        event = self.ctx.telemetry.event(first.run_id, outcome, env_id=first.env_id, episode=first.episode)
        # A deterministic id lets JetStream drop the copy a replay after a restart would publish.
        event = msgspec.structs.replace(event, event_id=f"outcome-{first.run_id}-{first.env_id}-{first.episode}")
        if not await self.ctx.telemetry.publish(event):
            return  # unacknowledged records come back after ack_wait; the outcome is retried then
        self.ctx.metrics.count_event("episode_scored")
        log.info(
            "%s env %d episode %d: return %+.4f (%s)",
            first.run_id,
            first.env_id,
            first.episode,
            outcome.episode_return,
            mode.value,
        )
        if spec is None or not spec.learn:
            await ack_all(self.ledger.settle_untrained(buffer.key, buffer.messages))
            return
        try:
            await self.ensure_arms(spec)
        except Exception:
            # The records stay unacknowledged and come back after ack_wait, when the store may answer again.
            log.exception("%s: cannot set up the learning arms", spec.run_id)
            return
        arm = spec.arms[arm_index_of_env(spec, first.env_id)]
        key = (spec.run_id, arm.arm_id)
        if self.ledger.is_finished(key):
            await ack_all(self.ledger.settle_untrained(buffer.key, buffer.messages, arm.arm_id))
            return
        learner = self.arms.get(key)
        if learner is None:
            log.error("%s: no learner for arm %s; episode %d dropped", spec.run_id, arm.arm_id, first.episode)
            return
        try:
            accepted = learner.accept(scored)
        except (RolloutError, ValueError) as exc:
            log.error("%s episode %d cannot be trained on: %s", spec.run_id, first.episode, exc)
            self.ctx.metrics.count_event("episode_untrainable")
            accepted = learner.accept_untrainable(first.episode)
        if not accepted:
            self.ctx.metrics.count_event("episode_already_applied")
        await ack_all(self.ledger.hand_on(buffer.key, key, buffer.messages))
        while self.ledger.ready(key):
            # A commit that fails other than by a bus outage raises out of the consumer and stops the service: its
            # successor resumes from the last checkpoint, and the records of the uncommitted round come back to it.
            update = await asyncio.to_thread(learner.update)
            await self.commit(spec, learner, update)
        if self.ledger.close_if_finished(key):
            # The line's last version is out: free the network and optimiser; late copies are simply acked.
            del self.arms[key]

    # ------------------------------------------------------------------ publishing

    async def commit(self, spec: RunSpec, learner: ArmLearner, update: RoundUpdate) -> None:
        """Publish an applied update, then acknowledge the records it was trained on.

        Every write of a commit is idempotent, so a bus outage is waited out by retrying it with the update kept in
        memory (nothing else could proceed without the bus). Any other failure raises out of the consumer.
        """
        await retry_while_bus_fails(
            lambda: self.versions.commit(spec, learner, update),
            what=f"publishing {learner.policy_id} v{update.version}",
            stopping=self.ctx.stopping,
            on_retry=lambda _: self.ctx.metrics.count_event("commit_retried"),
        )
        await ack_all(self.ledger.commit((spec.run_id, learner.arm.arm_id), update.round_index))
        stats = update.stats
        log.info(
            "%s/%s: round %d → %s v%d (%d steps, return %+.3f, kl %.4f, ev %.2f, lag %.2f%s)",
            spec.run_id,
            learner.arm.arm_id,
            update.round_index,
            learner.policy_id,
            update.version,
            update.steps,
            update.mean_return,
            stats.approx_kl,
            stats.explained_variance,
            update.lag_mean,
            ", skipped" if update.skipped else "",
        )

    # ------------------------------------------------------------------ liveness

    async def heartbeat(self) -> None:
        """Tell JetStream that held records are still being worked on, so they are not redelivered meanwhile."""
        period = max(0.5, self.settings.ack_wait / 3.0)
        while not self.ctx.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.ctx.stopping.wait(), timeout=period)
            for message in self.ledger.held():
                with contextlib.suppress(Exception):
                    await message.in_progress()


#: Simic's handlers see its learners: everything it holds in memory between bus messages.
SimicContext = ServiceContext[SimicSettings, Learners]


async def start(ctx: ServiceContext[SimicSettings, None]) -> Learners:
    settings = ctx.settings
    set_torch_threads(settings.torch_threads)
    publisher = VersionPublisher(
        await jetstream.weights_store(ctx.js),
        await jetstream.policies_bucket(ctx.js),
        ctx.telemetry,
        keep_versions=settings.keep_versions,
        on_pruned=lambda n: ctx.metrics.count_event("weights_pruned", n),
    )
    return Learners(ctx, settings, await jetstream.runs_bucket(ctx.js), publisher)


async def consume_steps(ctx: SimicContext) -> None:
    """The durable pull consumer on STEPS; one message at a time in arrival order."""
    consumer = DurableConsumer(
        durable=ctx.settings.consumer,
        stream=subjects.STEPS_STREAM,
        subject=subjects.STEPS_SUBJECTS,
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=ctx.settings.ack_wait,
        max_ack_pending=100_000,
        batch=512,
    )
    async for batch in batches(ctx.js, consumer, ctx.stopping):
        for msg in batch:
            await ctx.state.on_message(msg)


async def watch_runs(ctx: SimicContext) -> None:
    await ctx.state.watch_runs()


async def heartbeat(ctx: SimicContext) -> None:
    await ctx.state.heartbeat()


def definition() -> ServiceDefinition[SimicSettings, Learners]:
    return ServiceDefinition(
        name="simic",
        description="Learner: rewards, rollouts, PPO and policy publishing",
        background=[consume_steps, watch_runs, heartbeat],
        on_start=start,
        uses_torch=True,
    )
