"""Fair leasing on real processes (issue 15, item 4): envs spread across the Tolaria workers present, and a worker
that joins mid-run gets its share at episode boundaries, with no episode run twice."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import pytest

import leyline_schemas as L
from leyline_schemas import routes
from services.operator.embedded import EmbeddedNats
from services.runtime import jetstream
from services.runtime.bus import connect, request
from services.runtime.kv import bucket_keys
from services.runtime.settings import RuntimeSettings
from services.tolaria import fair_share
from services.tolaria.leases import read_status
from tests.resilience.run_probes import audit_attempts, step_records
from tests.service_processes import running_services, start_service, stop_service

pytestmark = pytest.mark.integration

LENGTH = 12
#: Default ESPER_MAX_ENVS (4): before fair leasing, the first worker to poll took every env.
WORKER_ENV = {"ESPER_TORCH_THREADS": "1"}


def _spec(run_id: str, episodes: int) -> L.RunSpec:
    return L.RunSpec(
        run_id=run_id, task="digits", episodes=episodes, n_envs=4, episode_length=LENGTH, max_batches=4, seed=3
    )


async def _present(js, count: int, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    kv = await jetstream.runs_bucket(js)
    deadline = time.monotonic() + timeout
    while True:
        if len(await fair_share.present_workers(kv, await bucket_keys(kv))) >= count:
            return
        assert time.monotonic() < deadline, f"fewer than {count} workers announced themselves"
        await asyncio.sleep(0.2)


async def _run_to_end(js, nc, spec: L.RunSpec, timeout: float = 300.0) -> list[L.StepRecord]:  # type: ignore[no-untyped-def]
    kv = await jetstream.runs_bucket(js)
    deadline = time.monotonic() + timeout
    while (status := await read_status(kv, spec.run_id)) is None or status.state is L.RunState.RUNNING:
        assert time.monotonic() < deadline, f"run still {status}"
        await asyncio.sleep(0.5)
    assert status.state is L.RunState.COMPLETED, status
    return await step_records(js, spec.run_id)


def _drivers(records: list[L.StepRecord], episodes: set[int] | None = None) -> Counter[str]:
    """Envs per worker, counting each (env, episode) by the worker that drove it."""
    driven = {(r.env_id, r.episode): r.worker_id for r in records if episodes is None or r.episode in episodes}
    return Counter(driven.values())


def test_two_workers_at_the_default_max_envs_each_drive_two_of_four(fresh_nats: EmbeddedNats, tmp_path: Path) -> None:
    url = fresh_nats.url
    with running_services(["kasmina", "tamiyo"], url, tmp_path):
        workers = [start_service("tolaria", url, tmp_path, **WORKER_ENV) for _ in range(2)]
        try:

            async def scenario() -> list[L.StepRecord]:
                nc = await connect(RuntimeSettings.from_env({"service": "test", "nats_url": url}))
                js = nc.jetstream()
                try:
                    await _present(js, 2)
                    spec = _spec(f"fair-{time.time_ns()}", episodes=4)
                    await request(nc, routes.RUNS_START, spec, timeout=60)
                    return await _run_to_end(js, nc, spec)
                finally:
                    await nc.close()

            records = asyncio.run(scenario())
        finally:
            for worker in workers:
                stop_service(worker)
    audit = audit_attempts(records, LENGTH)
    assert audit.kept == 4 * LENGTH and not audit.problems and not audit.restarted, audit
    per_env = {env: {r.worker_id for r in records if r.env_id == env} for env in range(4)}
    assert all(len(ids) == 1 for ids in per_env.values()), f"an env changed hands without cause: {per_env}"
    assert sorted(_drivers(records).values()) == [2, 2], _drivers(records)


def test_a_worker_that_joins_mid_run_takes_half_at_episode_boundaries(fresh_nats: EmbeddedNats, tmp_path: Path) -> None:
    url = fresh_nats.url
    episodes = 48  # 12 per env (about 30 s): round 0 on the first worker alone, the last ones split
    with running_services(["kasmina", "tamiyo"], url, tmp_path):
        first = start_service("tolaria", url, tmp_path, **WORKER_ENV)
        joiner = None
        try:

            async def scenario() -> list[L.StepRecord]:
                nonlocal joiner
                nc = await connect(RuntimeSettings.from_env({"service": "test", "nats_url": url}))
                js = nc.jetstream()
                seen: list[L.StepRecord] = []

                async def collect(msg) -> None:  # type: ignore[no-untyped-def]
                    seen.append(L.decode(msg.data, L.StepRecord))

                try:
                    await _present(js, 1)
                    spec = _spec(f"join-{time.time_ns()}", episodes=episodes)
                    live = await js.subscribe(L.subjects.steps_subject(spec.run_id), ordered_consumer=True, cb=collect)
                    await request(nc, routes.RUNS_START, spec, timeout=60)
                    while len({r.env_id for r in seen}) < 4:  # the first worker drives all four
                        await asyncio.sleep(0.05)
                    joiner = start_service("tolaria", url, tmp_path, **WORKER_ENV)
                    records = await _run_to_end(js, nc, spec)
                    await live.unsubscribe()
                    return records
                finally:
                    await nc.close()

            records = asyncio.run(scenario())
        finally:
            for worker in (first, joiner):
                if worker is not None:
                    stop_service(worker)
    audit = audit_attempts(records, LENGTH)
    assert audit.kept == episodes * LENGTH and not audit.problems, audit
    assert not audit.restarted, f"an env given back at an episode boundary ran an episode again: {audit.restarted}"
    rounds = [_drivers(records, set(range(4 * r, 4 * r + 4))) for r in range(episodes // 4)]
    assert len(rounds[0]) == 1, "round 0 ran on the first worker alone"
    joiner_id = next(iter(set(_drivers(records)) - set(rounds[0])))
    handover = next(r for r, drivers in enumerate(rounds) if drivers[joiner_id])
    assert handover + 1 < len(rounds), "the joiner came too late to test the spread"
    # The round after the handover is split evenly. (Later, a worker that runs out of envs first takes one of the
    # other's at a boundary, so the tail is balanced too, and need not stay 2/2.)
    assert sorted(rounds[handover + 1].values()) == [2, 2], rounds
