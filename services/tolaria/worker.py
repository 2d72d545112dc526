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
    RunSpec,
    RunState,
    WorkerPresence,
)
from leyline_schemas.rounds import arm_of_env, env_episodes, required_policy_version, round_of_episode
from services.policy.pointers import read_pointer
from services.runtime import jetstream
from services.runtime.bus import BUS_ERRORS
from services.runtime.kv import bucket_keys
from services.runtime.service import ServiceContext
from services.tolaria import checkpoint_store, fair_share, leases, run_control
from services.tolaria.acceleration import Acceleration
from services.tolaria.episode_loop import EpisodeLoop, EpisodeTimings, RunHalted
from services.tolaria.leases import LeaseKeeper, LeaseLost
from services.tolaria.tasks import TaskData, get_task
from services.tolaria.torch_thread import run_torch

log = logging.getLogger("esper.tolaria.worker")


class EpisodeKeepsFailing(RuntimeError):
    """An episode reached its attempt limit (`TolariaSettings.max_episode_attempts`): its run fails."""


SUCCEEDED = (DecisionOutcome.APPLIED, DecisionOutcome.WAITED, DecisionOutcome.MORPHOGENESIS_OFF)


async def _policy_version(policies: KeyValue, policy_id: str) -> int | None:
    pointer = await read_pointer(policies, policy_id)
    return None if pointer is None else pointer.version


@functools.lru_cache(maxsize=8)
def load_task_data(task_name: str, seed: int, synthetic: bool, data_dir: str) -> TaskData:
    """A task's data, loaded once per process and shared by every env of the run (the split is fixed by seed)."""
    return get_task(task_name).load_data(seed, synthetic, Path(data_dir) if data_dir else None)


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
        *,
        max_episode_attempts: int = 10,
        acceleration: Acceleration | None = None,
    ) -> None:
        self.ctx = ctx
        self.max_envs = max_envs
        self.lease_ttl = lease_ttl
        self.poll_interval = poll_interval
        self.data_dir = data_dir
        self.step_timeout = step_timeout
        self.step_deadline = step_deadline
        self.max_episode_attempts = max_episode_attempts
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
            hosts = await jetstream.hosts_store(self.ctx.js)
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
                    if attempt >= self.max_episode_attempts:
                        raise EpisodeKeepsFailing(
                            f"episode {episodes[k]} was started {attempt} times and never ended (its worker died or "
                            f"gave it back each time); raise ESPER_MAX_EPISODE_ATTEMPTS to try it again"
                        )
                    if attempt:
                        log.info(
                            "env %d of %s: episode %d restarts, attempt %d", env_id, spec.run_id, episodes[k], attempt
                        )
                    await keeper.update(episode=episodes[k], attempt=attempt, final_from=0)
                    if not await self._wait_for_policy(spec, env_id, round_of_episode(spec, episodes[k]), keeper):
                        return
                    timings = EpisodeTimings(self.step_timeout, self.step_deadline)
                    loop = EpisodeLoop(
                        self.ctx, spec, task, data, env_id, episodes[k], keeper, timings, self.acceleration
                    )
                    await loop.run()
                await keeper.update(episodes_done=k + 1, final_from=0)
                # The episode is recorded done: its checkpoint is garbage (services/tolaria/checkpoint_store.py).
                await checkpoint_store.discard(hosts, spec.run_id, env_id)
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
        except EpisodeKeepsFailing as exc:
            log.error("env %d of %s: %s; the run fails", env_id, spec.run_id, exc)
            await self._finish_run(kv, spec, RunState.FAILED, f"env {env_id}: {exc}")
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
        if state is RunState.COMPLETED:
            # A stopped or failed run keeps its checkpoints for `esper runs resume`; a completed one needs none.
            with contextlib.suppress(*BUS_ERRORS):
                await checkpoint_store.discard_run(await jetstream.hosts_store(self.ctx.js), spec.run_id, spec.n_envs)
