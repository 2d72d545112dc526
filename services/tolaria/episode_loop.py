"""One episode of an env on the bus: build the env, or resume it from its host checkpoint, then epoch by epoch
train, ask Kasmina for the step, apply it, publish telemetry and the step record, and checkpoint.

A resumed attempt first stores again, under its own attempt number, the records the checkpoint carries (steps
1..k), then goes on from epoch k + 1: consumers keep the highest attempt of an episode, so what they keep is
always one whole trajectory of one model's training (leyline_schemas/steps.py `StepRecord`).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import msgspec
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from leyline_schemas import (
    DecisionOutcome,
    EpisodeResumed,
    GovernorRollback,
    LifecycleConfig,
    LifecycleOp,
    RunSpec,
    RunState,
    Severity,
    StepRecord,
    StepRequest,
    routes,
    subjects,
)
from leyline_schemas.rounds import arm_of_env, required_policy_version, round_of_episode
from services.runtime import jetstream
from services.runtime.bus import BUS_ERRORS, request
from services.runtime.service import ServiceContext
from services.tolaria import checkpoint_store, leases
from services.tolaria.acceleration import Acceleration
from services.tolaria.controls import morphogenesis_off_directive
from services.tolaria.env import EpisodeEnv
from services.tolaria.host_checkpoint import CheckpointError, EpisodeKey, EpisodeProgress, capture, read_key, restore
from services.tolaria.leases import LeaseKeeper, LeaseLost, lease_name
from services.tolaria.publishing import publish_epoch, publish_step
from services.tolaria.tasks import TaskData, TaskSpec, env_seed
from services.tolaria.torch_thread import run_torch
from services.tolaria.validation import shapley_event

log = logging.getLogger("esper.tolaria.episode")
SUCCEEDED = (DecisionOutcome.APPLIED, DecisionOutcome.WAITED, DecisionOutcome.MORPHOGENESIS_OFF)


class RunHalted(RuntimeError):
    """The run left RUNNING while one of its episodes was in progress."""


async def halt_if_not_running(kv: KeyValue, run_id: str, epoch: int) -> None:
    """Raise RunHalted once the run was stopped (or failed elsewhere) mid-episode: this epoch is not trained and the
    lease is given back. A bus outage is not a stop: the epoch goes on and waits for the bus where it must."""
    try:
        status = await leases.read_status(kv, run_id)
    except BUS_ERRORS:
        return
    if status is None or status.state is not RunState.RUNNING:
        raise RunHalted(f"the run is {status.state.value if status else 'gone'} before epoch {epoch}")


@dataclass(frozen=True)
class EpisodeTimings:
    step_timeout: float
    step_deadline: float


class EpisodeLoop:
    """Runs episode `episode` of env `env_id` under the lease `keeper` holds."""

    def __init__(
        self,
        ctx: ServiceContext,
        spec: RunSpec,
        task: TaskSpec,
        data: TaskData,
        env_id: int,
        episode: int,
        keeper: LeaseKeeper,
        timings: EpisodeTimings,
        acceleration: Acceleration | None,
    ) -> None:
        self.ctx, self.spec, self.task, self.data = ctx, spec, task, data
        self.env_id, self.episode, self.keeper, self.timings = env_id, episode, keeper, timings
        self.acceleration = acceleration
        self.round_index = round_of_episode(spec, episode)
        self.arm = arm_of_env(spec, env_id)
        self.seed = env_seed(spec.seed, self.round_index, spec.n_envs, env_id)
        self.key = EpisodeKey(run_id=spec.run_id, env_id=env_id, episode=episode, task=spec.task, seed=self.seed)
        self.lifecycle = LifecycleConfig(
            max_seeds=spec.max_seeds,
            permissive_gates=spec.permissive_gates,
            auto_forward_gates=list(spec.auto_forward_gates),
            max_epochs=spec.episode_length,
            blueprints=list(spec.blueprints),
            internal_op_cooldown_epochs=spec.internal_op_cooldown_epochs,
            internal_ops_require_alpha_hold=spec.internal_ops_require_alpha_hold,
        )
        self.where = {"env_id": env_id, "episode": episode}

    @property
    def attempt(self) -> int:
        return self.keeper.held.lease.attempt

    async def _build_env(self) -> EpisodeEnv:
        spec = self.spec
        return await run_torch(
            EpisodeEnv,
            self.task,
            self.data,
            list(spec.slots) if spec.morphogenesis else [],
            seed=self.seed,
            episode_length=spec.episode_length,
            batch_size=spec.batch_size,
            max_batches=spec.max_batches,
            device=self.ctx.device,
            lifecycle=self.lifecycle,
            acceleration=self.acceleration,
            replay=spec.env_topologies.get(self.env_id),
        )

    async def _resume(self, store: ObjectStore, env: EpisodeEnv) -> tuple[EpisodeEnv, EpisodeProgress]:
        """The env restored from this episode's checkpoint with the loop's progress, or a fresh start without one."""
        fresh = EpisodeProgress(attempt=self.attempt)
        if self.spec.checkpoint_every <= 0:
            return env, fresh
        blob = await checkpoint_store.load(store, self.spec.run_id, self.env_id)
        if blob is None:
            return env, fresh
        try:
            found, epoch = await run_torch(read_key, blob)
            if found != self.key:
                log.debug(
                    "env %d of %s: its checkpoint is of another episode (%s)", self.env_id, self.spec.run_id, found
                )
                return env, fresh
            progress = await run_torch(restore, env, blob, self.key)
        except CheckpointError as exc:
            self.ctx.metrics.count_event("checkpoint_unusable")
            log.warning("env %d of %s: checkpoint not usable, episode %d starts over: %s", *self._at(), exc)
            return await self._build_env(), fresh
        ctx = self.ctx
        ctx.metrics.count_event("episode_resumed")
        log.info("env %d of %s: episode %d resumes from its checkpoint of epoch %d", *self._at(), epoch)
        carried: list[StepRecord] = []
        for record in progress.records:
            record = msgspec.structs.replace(record, attempt=self.attempt, resumed_from=progress.epoch)
            await publish_step(ctx, record, self.timings.step_deadline)
            carried.append(record)
        await ctx.telemetry.emit(
            self.spec.run_id,
            EpisodeResumed(
                from_epoch=progress.epoch,
                attempt=self.attempt,
                checkpoint_attempt=progress.attempt,
                worker_id=ctx.settings.instance,
            ),
            **self.where,
        )
        return env, dataclasses.replace(progress, records=carried)

    def _at(self) -> tuple[int, str, int]:
        return self.env_id, self.spec.run_id, self.episode

    async def run(self) -> None:
        ctx, spec, keeper = self.ctx, self.spec, self.keeper
        store = await jetstream.hosts_store(ctx.js)
        env, progress = await self._resume(store, await self._build_env())
        min_policy_version = required_policy_version(spec, self.round_index, self.arm)
        slot_config = env.slot_config()
        records = list(progress.records)
        policy_state, last_op, last_ok = progress.policy_state, progress.last_op, progress.last_ok
        # STEPS sequence of this episode's latest stored record (the carried ones included)
        stored_seq = 0
        for epoch in range(progress.epoch + 1, spec.episode_length + 1):
            if keeper.lost:
                raise LeaseLost(f"lease on {lease_name(keeper.held)} lost")
            await halt_if_not_running(keeper.kv, spec.run_id, epoch)
            outcome = await run_torch(env.run_epoch, epoch)
            report = outcome.report
            where = {**self.where, "epoch": epoch}
            if outcome.rollback is not None:
                # The policy's memory is reset for a rolled-back env, as its LSTM hidden state is (§4.6).
                policy_state, last_op, last_ok = b"", LifecycleOp.WAIT, False
                rb = outcome.rollback
                await ctx.telemetry.emit(
                    spec.run_id,
                    GovernorRollback(
                        reason=rb.reason,
                        loss_at_panic=rb.loss_at_panic,
                        loss_threshold=rb.loss_threshold,
                        pruned_slots=rb.pruned_slots,
                    ),
                    severity=Severity.WARNING,
                    **where,
                )
                for event in outcome.rollback_events:
                    await ctx.telemetry.emit(spec.run_id, event, **where)
            if outcome.attribution is not None:
                await ctx.telemetry.emit(spec.run_id, shapley_event(outcome.attribution), **where)
            step = StepRequest(
                run_id=spec.run_id,
                env_id=self.env_id,
                episode=self.episode,
                epoch=epoch,
                policy_id=self.arm.policy_id,
                slot_config=slot_config,
                lifecycle=self.lifecycle,
                report=report,
                slots=env.slot_states,
                policy_state=policy_state,
                last_op=last_op,
                last_action_succeeded=last_ok,
                total_seeds=env.total_seeds,
                min_policy_version=min_policy_version,
            )
            if spec.morphogenesis:
                directive = await request(
                    ctx.nc,
                    routes.KASMINA_STEP,
                    step,
                    timeout=self.timings.step_timeout,
                    retries=1000,
                    deadline=self.timings.step_deadline,
                )
            else:
                directive = morphogenesis_off_directive(step)
            refused = await run_torch(env.apply, directive)
            done = epoch == spec.episode_length
            record = StepRecord(
                run_id=spec.run_id,
                arm=self.arm.arm_id,
                env_id=self.env_id,
                episode=self.episode,
                step=epoch,
                policy_id=self.arm.policy_id,
                policy_version=directive.decision.policy_version if directive.decision else -1,
                report=report,
                directive=directive,
                applied=not refused,
                refused_reason="; ".join(r.reason for r in refused),
                done=done,
                truncated=done,
                summary=env.summary(spec.run_id, self.env_id, self.episode) if done else None,
                worker_id=ctx.settings.instance,
                attempt=self.attempt,
                resumed_from=progress.epoch,
            )
            # The step record is the epoch's commit point, so it goes last: once it is stored, so is the telemetry.
            await publish_epoch(ctx, spec.run_id, env, directive, report, where, refused=bool(refused))
            for refusal in refused:
                await ctx.telemetry.emit(spec.run_id, refusal, severity=Severity.WARNING, **where)
            if done:
                # Whoever takes this lease over looks for the final record after this point (leases.final_step_stored).
                if stored_seq == 0:
                    stored_seq = (await ctx.js.stream_info(subjects.STEPS_STREAM)).state.last_seq
                await keeper.update(final_from=stored_seq)
            stored_seq = await publish_step(ctx, record, self.timings.step_deadline)
            records.append(record)
            policy_state = directive.policy_state
            last_op = directive.effective_op
            last_ok = directive.outcome in SUCCEEDED and not refused
            if not done and spec.checkpoint_every > 0 and epoch % spec.checkpoint_every == 0:
                now = EpisodeProgress(epoch, policy_state, last_op, last_ok, records, self.attempt)
                await self._checkpoint(store, env, now)

    async def _checkpoint(self, store: ObjectStore, env: EpisodeEnv, progress: EpisodeProgress) -> None:
        if self.keeper.lost:
            return  # another worker has the env now: its checkpoints are the ones that count
        blob = await run_torch(capture, env, progress, self.key)
        saved = await checkpoint_store.save(store, self.spec.run_id, self.env_id, self.episode, progress.epoch, blob)
        self.ctx.metrics.count_event("checkpoint_written" if saved else "checkpoint_failed")
