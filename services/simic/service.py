"""Simic's bus adapter: a durable pull consumer on STEPS that scores episodes under each arm's reward mode."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import KeyNotFoundError

from leyline_schemas import LeylineDecodeError, RewardMode, RunSpec, StepRecord, decode, subjects
from services.runtime import jetstream
from services.runtime.service import ServiceContext, ServiceDefinition
from services.runtime.settings import RuntimeSettings
from services.simic.episodes import EpisodeBuffer, EpisodeKey, episode_outcome, score_episode
from services.simic.reward_config import RewardConfig

log = logging.getLogger("esper.simic")


@dataclass(frozen=True, kw_only=True)
class SimicSettings(RuntimeSettings):
    service: str = "simic"
    consumer: str = "simic"
    ack_wait: float = 120.0


async def run_spec(ctx: ServiceContext, run_id: str) -> RunSpec | None:
    cache: dict[str, RunSpec] = ctx.state.setdefault("runs", {})
    if run_id not in cache:
        kv = await jetstream.runs_bucket(ctx.js)
        try:
            entry = await kv.get(subjects.run_key(run_id))
        except KeyNotFoundError:
            return None
        if not entry.value:
            return None
        cache[run_id] = decode(entry.value, RunSpec)
    return cache[run_id]


def reward_mode(spec: RunSpec | None, arm_id: str) -> RewardMode:
    if spec is not None:
        for arm in spec.arms:
            if arm.arm_id == arm_id:
                return arm.reward_mode
    return RewardMode.SIMPLIFIED


async def consume_steps(ctx: ServiceContext) -> None:
    """Acknowledge a step record only once its whole episode has been scored and its outcome published."""
    settings = ctx.settings
    assert isinstance(settings, SimicSettings)
    sub = await ctx.js.pull_subscribe(
        subjects.STEPS_SUBJECTS,
        durable=settings.consumer,
        stream=subjects.STEPS_STREAM,
        config=ConsumerConfig(
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=settings.ack_wait,
            max_ack_pending=100_000,
        ),
    )
    buffers: dict[EpisodeKey, EpisodeBuffer] = {}
    while not ctx.stopping.is_set():
        try:
            batch = await sub.fetch(512, timeout=1.0)
        except (TimeoutError, NatsTimeoutError):
            continue
        for msg in batch:
            try:
                record = decode(msg.data, StepRecord)
            except LeylineDecodeError as exc:
                ctx.metrics.decode_failures.labels("simic", "steps").inc()
                log.warning("dropped undecodable step record on %s: %s", msg.subject, exc)
                with contextlib.suppress(Exception):
                    await msg.term()
                continue
            key = (record.run_id, record.env_id, record.episode)
            buffer = buffers.setdefault(key, EpisodeBuffer(key))
            if not buffer.add(record, msg):
                ctx.metrics.count_event("duplicate_step")
            ctx.metrics.count_event("step_consumed")
            if buffer.complete:
                await finish_episode(ctx, buffer)
                del buffers[key]


async def finish_episode(ctx: ServiceContext, buffer: EpisodeBuffer) -> None:
    records = buffer.ordered()
    first = records[0]
    spec = await run_spec(ctx, first.run_id)
    mode = reward_mode(spec, first.arm)
    scored = score_episode(records, RewardConfig(mode=mode))
    outcome = episode_outcome(scored, mode)
    published = await ctx.telemetry.emit(first.run_id, outcome, env_id=first.env_id, episode=first.episode)
    if not published:
        # Unacknowledged records come back after ack_wait; the outcome is retried then.
        return
    ctx.metrics.count_event("episode_scored")
    for msg in buffer.messages:
        with contextlib.suppress(Exception):
            await msg.ack()
    log.info(
        "%s env %d episode %d: return %+.4f (%s)",
        first.run_id,
        first.env_id,
        first.episode,
        outcome.episode_return,
        mode.value,
    )


def definition() -> ServiceDefinition:
    return ServiceDefinition(
        name="simic",
        description="Learner: rewards, rollouts, PPO and policy publishing",
        background=[consume_steps],
        uses_torch=True,
    )
