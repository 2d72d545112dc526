"""The env worker: leases envs of any running run, drives their episodes step by step over the bus."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from pathlib import Path

import msgspec
from nats.js.kv import KeyValue

from leyline_schemas import (
    DecisionOutcome,
    GovernorRollback,
    LifecycleConfig,
    LifecycleOp,
    RunSpec,
    RunState,
    Severity,
    StepRecord,
    StepRequest,
    WorkerPresence,
    routes,
    subjects,
)
from leyline_schemas.rounds import arm_of_env, env_episodes, required_policy_version, round_of_episode
from services.policy.pointers import read_pointer
from services.runtime import jetstream
from services.runtime.bus import BUS_ERRORS, request
from services.runtime.kv import bucket_keys
from services.runtime.service import ServiceContext
from services.tolaria import fair_share, leases, run_control
from services.tolaria.acceleration import Acceleration
from services.tolaria.controls import morphogenesis_off_directive
from services.tolaria.env import EpisodeEnv
from services.tolaria.leases import LeaseKeeper, LeaseLost, lease_name
from services.tolaria.publishing import publish_epoch, publish_step
from services.tolaria.tasks import TaskData, TaskSpec, env_seed, get_task
from services.tolaria.torch_thread import run_torch
from services.tolaria.validation import shapley_event

log = logging.getLogger("esper.tolaria.worker")
SUCCEEDED = (DecisionOutcome.APPLIED, DecisionOutcome.WAITED, DecisionOutcome.MORPHOGENESIS_OFF)


async def _policy_version(policies: KeyValue, policy_id: str) -> int | None:
    pointer = await read_pointer(policies, policy_id)
    return None if pointer is None else pointer.version


@functools.lru_cache(maxsize=8)
def load_task_data(task_name: str, seed: int, synthetic: bool, data_dir: str) -> TaskData:
    """A task's data, loaded once per process and shared by every env of the run (the split is fixed by seed)."""
    return get_task(task_name).load_data(seed, synthetic, Path(data_dir) if data_dir else None)


class RunHalted(RuntimeError):
    """The run left RUNNING while one of its episodes was in progress."""


async def _halt_if_not_running(kv: KeyValue, run_id: str, epoch: int) -> None:
    """Raise RunHalted once the run was stopped (or failed elsewhere) mid-episode: this epoch is not trained and the
    lease is given back. A bus outage is not a stop: the epoch goes on and waits for the bus where it must."""
    try:
        status = await leases.read_status(kv, run_id)
    except BUS_ERRORS:
        return
    if status is None or status.state is not RunState.RUNNING:
        raise RunHalted(f"the run is {status.state.value if status else 'gone'} before epoch {epoch}")


class EnvWorker:
    """Leases its fair share of envs (at most `max_envs`, services/tolaria/fair_share.py) and runs each as an asyncio
    task; training runs in worker threads."""

    def __init__(
        self,
        ctx: ServiceContext,
        max_envs: int,
        lease_ttl: float,
        poll_interval: float,
        data_dir: str,
        step_timeout: float,
        step_deadline: float,
        acceleration: Acceleration | None = None,
    ) -> None:
        self.ctx = ctx
        self.max_envs = max_envs
        self.lease_ttl = lease_ttl
        self.poll_interval = poll_interval
        self.data_dir = data_dir
        self.step_timeout = step_timeout
        self.step_deadline = step_deadline
        self.acceleration = acceleration
        self.tasks: dict[tuple[str, int], asyncio.Task[None]] = {}
        self.split = fair_share.Split(share=0, room_elsewhere=False)
        self.giving_back: set[tuple[str, int]] = set()
        self.abandoned = run_control.AbandonedRuns()

    async def run(self) -> None:
        kv = await jetstream.runs_bucket(self.ctx.js)
        try:
            while not self.ctx.stopping.is_set():
                try:
                    await fair_share.announce(kv, self.ctx.settings.instance, self.max_envs, self.lease_ttl)
                    await self._claim(kv)
                except BUS_ERRORS as exc:
                    # An outage is waited out (the client reconnects by itself); the envs already driven go on.
                    log.warning("cannot look for envs to lease (%s: %s); retrying", type(exc).__name__, exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.ctx.stopping.wait(), timeout=self.poll_interval)
        finally:
            await fair_share.withdraw(kv, self.ctx.settings.instance)
            for task in self.tasks.values():
                task.cancel()
            for task in list(self.tasks.values()):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _claim(self, kv: KeyValue) -> None:
        self.tasks = {key: task for key, task in self.tasks.items() if not task.done()}
        self.giving_back &= set(self.tasks)
        keys = await bucket_keys(kv)  # listed once per poll: runs, workers
        specs = await leases.run_specs(kv, keys)
        held_back = await self.abandoned.sweep(kv, self.ctx.telemetry, specs)
        specs = [spec for spec in specs if spec.run_id not in held_back]
        me = WorkerPresence(worker_id=self.ctx.settings.instance, max_envs=self.max_envs, expires_at=time.time())
        self.split = await fair_share.split_for(kv, keys, specs, me)
        for spec in specs:
            for env_id in range(spec.n_envs):
                if len(self.tasks) >= self.split.share:
                    return
                if (spec.run_id, env_id) in self.tasks:
                    continue
                held = await leases.try_lease(kv, spec, env_id, self.ctx.settings.instance, self.lease_ttl)
                if held is None:
                    continue
                keeper = LeaseKeeper(kv, held, self.lease_ttl, self.step_deadline, self.ctx.stopping)
                log.info("leased %s env %d (episodes done %d)", spec.run_id, env_id, held.lease.episodes_done)
                self.tasks[(spec.run_id, env_id)] = asyncio.create_task(self._drive_env(kv, spec, env_id, keeper))

    async def _drive_env(self, kv: KeyValue, spec: RunSpec, env_id: int, keeper: LeaseKeeper) -> None:
        renewal = asyncio.create_task(keeper.keep_alive())
        finished = False
        try:
            task = get_task(spec.task)
            data = await run_torch(load_task_data, task.name, spec.seed, spec.synthetic, self.data_dir)
            episodes = env_episodes(spec, env_id)
            for k in range(keeper.held.lease.episodes_done, len(episodes)):
                status = await leases.read_status(kv, spec.run_id)
                if status is None or status.state is not RunState.RUNNING:
                    return
                lease = keeper.held.lease
                if lease.episode == episodes[k] and await leases.final_step_stored(self.ctx.js, lease):
                    log.info(
                        "env %d of %s: episode %d was stored whole before its worker stopped; not run again",
                        env_id,
                        spec.run_id,
                        episodes[k],
                    )
                else:
                    attempt = leases.episode_attempt(lease, episodes[k])
                    if attempt:
                        log.info(
                            "env %d of %s: episode %d restarts, attempt %d", env_id, spec.run_id, episodes[k], attempt
                        )
                    await keeper.update(episode=episodes[k], attempt=attempt, final_from=0)
                    if not await self._wait_for_policy(spec, env_id, round_of_episode(spec, episodes[k]), keeper):
                        return
                    await self._run_episode(spec, task, data, env_id, episodes[k], keeper)
                await keeper.update(episodes_done=k + 1, final_from=0)
                await leases.update_status(
                    kv, spec.run_id, lambda s: msgspec.structs.replace(s, episodes_done=s.episodes_done + 1)
                )
                if k + 1 < len(episodes) and self._gives_back((spec.run_id, env_id)):
                    log.info(
                        "env %d of %s: given back after episode %d (share %d)",
                        env_id,
                        spec.run_id,
                        episodes[k],
                        self.split.share,
                    )
                    return
            finished = True
        except LeaseLost as exc:
            log.warning("%s", exc)
        except RunHalted as exc:
            log.info("env %d of %s: %s; its episode is left where it was", env_id, spec.run_id, exc)
        except asyncio.CancelledError:
            raise
        except BUS_ERRORS as exc:
            # A bus outage is not the run's fault: give the env back unfinished, it is leased again and its
            # episode restarts (the episode is the unit of recovery, ARCHITECTURE.md §6).
            log.warning("env %d of %s: bus fault (%s: %s); releasing it", env_id, spec.run_id, type(exc).__name__, exc)
        except Exception as exc:
            log.exception("env %d of %s failed", env_id, spec.run_id)
            await self._finish_run(kv, spec, RunState.FAILED, f"env {env_id}: {type(exc).__name__}: {exc}")
        finally:
            renewal.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await renewal
            if not keeper.lost:
                with contextlib.suppress(*BUS_ERRORS):
                    await keeper.release()
        if finished and await leases.all_envs_done(kv, spec):
            await self._finish_run(kv, spec, RunState.COMPLETED, "")

    def _gives_back(self, key: tuple[str, int]) -> bool:
        """At an episode boundary: whether this env goes back to the pool because this worker holds more than its
        share and another present worker has room (a worker joined). Decided without an await, so two envs ending
        together do not both go."""
        kept = len([k for k, task in self.tasks.items() if not task.done() and k not in self.giving_back])
        if kept <= self.split.share or not self.split.room_elsewhere:
            return False
        self.giving_back.add(key)
        return True

    async def _wait_for_policy(self, spec: RunSpec, env_id: int, round_index: int, keeper: LeaseKeeper) -> bool:
        """Strictly on-policy by default: round r acts with a version trained on round r−1 (ARCHITECTURE.md §6).

        With `run_ahead` the env only needs a first version; the version lag is recorded in each StepRecord.
        Returns False when the run stopped while waiting.
        """
        if not spec.learn:
            return True
        arm = arm_of_env(spec, env_id)
        needed = required_policy_version(spec, round_index, arm)
        policies = await jetstream.policies_bucket(self.ctx.js)
        runs = await jetstream.runs_bucket(self.ctx.js)
        logged = False
        while not self.ctx.stopping.is_set():
            version = await _policy_version(policies, arm.policy_id)
            if version is not None and version >= needed:
                return True
            status = await leases.read_status(runs, spec.run_id)
            if status is None or status.state is not RunState.RUNNING or keeper.lost:
                return False
            if not logged:
                log.info("env %d of %s waits for %s version %d", env_id, spec.run_id, arm.policy_id, needed)
                logged = True
            await asyncio.sleep(0.25)
        return False

    async def _finish_run(self, kv: KeyValue, spec: RunSpec, state: RunState, message: str) -> None:
        await run_control.end_run(kv, self.ctx.telemetry, spec.run_id, state, message)

    async def _run_episode(
        self, spec: RunSpec, task: TaskSpec, data: TaskData, env_id: int, episode: int, keeper: LeaseKeeper
    ) -> None:
        ctx = self.ctx
        round_index = round_of_episode(spec, episode)
        min_policy_version = required_policy_version(spec, round_index, arm_of_env(spec, env_id))
        lifecycle = LifecycleConfig(
            max_seeds=spec.max_seeds,
            permissive_gates=spec.permissive_gates,
            auto_forward_gates=list(spec.auto_forward_gates),
            max_epochs=spec.episode_length,
        )
        env = await run_torch(
            EpisodeEnv,
            task,
            data,
            list(spec.slots) if spec.morphogenesis else [],
            seed=env_seed(spec.seed, round_index, spec.n_envs, env_id),
            episode_length=spec.episode_length,
            batch_size=spec.batch_size,
            max_batches=spec.max_batches,
            device=ctx.device,
            lifecycle=lifecycle,
            acceleration=self.acceleration,
            replay=spec.env_topologies.get(env_id),
        )
        slot_config = env.slot_config()
        arm = arm_of_env(spec, env_id)
        policy_state = b""
        last_op, last_ok = LifecycleOp.WAIT, True
        stored_seq = 0  # STEPS sequence of this episode's latest stored record
        for epoch in range(1, spec.episode_length + 1):
            if keeper.lost:
                raise LeaseLost(f"lease on {lease_name(keeper.held)} lost")
            await _halt_if_not_running(keeper.kv, spec.run_id, epoch)
            outcome = await run_torch(env.run_epoch, epoch)
            report = outcome.report
            where = {"env_id": env_id, "episode": episode, "epoch": epoch}
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
                env_id=env_id,
                episode=episode,
                epoch=epoch,
                policy_id=arm.policy_id,
                slot_config=slot_config,
                lifecycle=lifecycle,
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
                    timeout=self.step_timeout,
                    retries=1000,
                    deadline=self.step_deadline,
                )
            else:
                directive = morphogenesis_off_directive(step)
            refused = await run_torch(env.apply, directive)
            done = epoch == spec.episode_length
            record = StepRecord(
                run_id=spec.run_id,
                arm=arm.arm_id,
                env_id=env_id,
                episode=episode,
                step=epoch,
                policy_id=arm.policy_id,
                policy_version=directive.decision.policy_version if directive.decision else -1,
                report=report,
                directive=directive,
                applied=not refused,
                refused_reason="; ".join(r.reason for r in refused),
                done=done,
                truncated=done,
                summary=env.summary(spec.run_id, env_id, episode) if done else None,
                worker_id=ctx.settings.instance,
                attempt=keeper.held.lease.attempt,
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
            stored_seq = await publish_step(ctx, record, self.step_deadline)
            policy_state = directive.policy_state
            last_op = directive.effective_op
            last_ok = directive.outcome in SUCCEEDED and not refused
