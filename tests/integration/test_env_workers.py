"""Env workers: several share one run by compare-and-set leases; an env whose worker dies is picked up by another."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest

import leyline_schemas as L
from leyline_schemas import routes
from services.runtime import jetstream
from services.runtime.bus import connect, request
from services.runtime.settings import RuntimeSettings
from services.tolaria.leases import read_status
from tests.resilience.run_probes import audit_attempts, step_records
from tests.service_processes import running_services, start_service, stop_service, wait_services

pytestmark = pytest.mark.integration

EPISODES, LENGTH = 4, 25


async def leases(js, run_id: str, n_envs: int) -> list[L.EnvLease | None]:  # type: ignore[no-untyped-def]
    kv = await jetstream.runs_bucket(js)
    found: list[L.EnvLease | None] = []
    for env in range(n_envs):
        try:
            entry = await kv.get(L.subjects.lease_key(run_id, env))
        except Exception:
            found.append(None)
            continue
        found.append(L.decode(entry.value, L.EnvLease) if entry.value else None)
    return found


def test_two_workers_share_a_run_and_a_dead_workers_env_is_taken_over(nats_url: str, tmp_path: Path) -> None:
    env = {"ESPER_LEASE_TTL": "3", "ESPER_MAX_ENVS": "1", "ESPER_TORCH_THREADS": "1"}
    with running_services(["kasmina", "tamiyo"], nats_url, tmp_path):
        worker_a = start_service("tolaria", nats_url, tmp_path, **env)
        worker_b = start_service("tolaria", nats_url, tmp_path, **env)
        try:
            asyncio.run(wait_services(nats_url, ["tolaria"]))
            asyncio.run(_share_and_take_over(nats_url, worker_a, tmp_path, env))
        finally:
            for worker in (worker_a, worker_b):
                stop_service(worker)


async def _share_and_take_over(url: str, worker_a, log_dir: Path, env: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    nc = await connect(RuntimeSettings.from_env({"service": "test", "nats_url": url}))
    js = nc.jetstream()
    run_id = f"workers-{int(time.time() * 1000)}"
    spec = L.RunSpec(run_id=run_id, task="digits", episodes=EPISODES, n_envs=2, episode_length=LENGTH)
    seen: list[L.StepRecord] = []

    async def collect(msg) -> None:  # type: ignore[no-untyped-def]
        seen.append(L.decode(msg.data, L.StepRecord))

    live = await js.subscribe(L.subjects.steps_subject(run_id), ordered_consumer=True, cb=collect)
    await request(nc, routes.RUNS_START, spec, timeout=60)
    worker_c = None
    try:
        # Both envs leased, by two different workers.
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            held = await leases(js, run_id, 2)
            if all(h is not None and not h.released for h in held):
                break
            await asyncio.sleep(0.2)
        held = await leases(js, run_id, 2)
        assert all(h is not None for h in held), held
        owners = {h.worker_id for h in held if h is not None}
        assert len(owners) == 2, f"one worker holds both envs: {held}"
        victim_env = next(h.env_id for h in held if h is not None and h.worker_id.endswith(f"-{worker_a.pid}"))
        # Let the victim publish a few steps, then kill it without a chance to release its lease.
        while len([r for r in seen if r.env_id == victim_env]) < 3:
            await asyncio.sleep(0.05)
        assert not any(r.env_id == victim_env and r.done for r in seen), "the victim finished too fast to be killed"
        worker_a.send_signal(signal.SIGKILL)
        worker_a.wait(timeout=10)
        worker_c = start_service("tolaria", url, log_dir, **env)

        kv = await jetstream.runs_bucket(js)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            status = await read_status(kv, run_id)
            if status is not None and status.state is not L.RunState.RUNNING:
                break
            await asyncio.sleep(0.5)
        status = await read_status(kv, run_id)
        assert status is not None and status.state is L.RunState.COMPLETED, status
        assert status.episodes_done == EPISODES

        final = await leases(js, run_id, 2)
        assert all(h is not None and h.episodes_done == 2 and h.released for h in final), final
        taken = final[victim_env]
        assert taken is not None and not taken.worker_id.endswith(f"-{worker_a.pid}")

        # The interrupted episode ran again from its start as attempt 1; what the dead worker had stored of it stays
        # behind as attempt 0, a prefix that consumers set aside. The latest attempts hold every step exactly once.
        records = await step_records(js, run_id)
        attempts = audit_attempts(records, LENGTH)
        assert attempts.kept == EPISODES * LENGTH and not attempts.problems, attempts
        ((env, episode),) = attempts.restarted
        assert env == victim_env and attempts.restarted[(env, episode)] == 1
        assert 3 <= attempts.superseded < LENGTH
        takeover_steps = [r for r in records if r.env_id == victim_env and r.worker_id == taken.worker_id]
        assert takeover_steps, "the surviving worker drove none of the dead worker's env"
        assert all(r.attempt == 1 for r in takeover_steps if r.episode == episode)
    finally:
        await live.unsubscribe()
        if worker_c is not None:
            stop_service(worker_c)
        await nc.close()
