"""A worker that takes over an env looks in STEPS before running the interrupted episode again: an episode whose
final record was stored before its worker died is counted done; one whose final record never landed runs again."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import msgspec
import pytest
from nats.js.kv import KeyValue

import leyline_schemas as L
from leyline_schemas import routes
from services.runtime import jetstream
from services.runtime.bus import connect, request
from services.runtime.settings import RuntimeSettings
from services.tolaria import leases
from tests.resilience.run_probes import audit_attempts, step_records
from tests.service_processes import running_services, start_service, stop_service, wait_services

pytestmark = pytest.mark.integration

LENGTH = 3
WORKER_ENV = {"ESPER_LEASE_TTL": "3", "ESPER_TORCH_THREADS": "1"}


def test_a_whole_episode_is_not_run_again_and_an_unfinished_one_is(nats_url: str, tmp_path: Path) -> None:
    with running_services(["kasmina", "tamiyo"], nats_url, tmp_path):
        asyncio.run(_takeovers(nats_url, tmp_path))


async def _takeovers(url: str, log_dir: Path) -> None:
    nc = await connect(RuntimeSettings.from_env({"service": "test", "nats_url": url}))
    js = nc.jetstream()
    kv = await jetstream.runs_bucket(js)
    spec = L.RunSpec(
        run_id=f"takeover-{int(time.time() * 1000)}", task="digits", episodes=1, n_envs=1, episode_length=LENGTH
    )

    async def submit() -> None:
        await request(nc, routes.RUNS_START, spec)

    try:
        await _work(url, log_dir, kv, spec.run_id, submit)
        first = await step_records(js, spec.run_id)
        assert [(r.attempt, r.step) for r in first] == [(0, s) for s in range(1, LENGTH + 1)]
        lease = await _lease(kv, spec.run_id)
        assert lease.episodes_done == 1 and lease.final_from == 0, lease
        final = await js.get_msg(L.subjects.STEPS_STREAM, subject=L.subjects.steps_subject(spec.run_id))

        # The worker died right after its final record was stored, before it recorded the episode done.
        await _rewind(kv, spec.run_id, final_from=final.seq - 1)
        await _work(url, log_dir, kv, spec.run_id)
        assert [(r.attempt, r.step) for r in await step_records(js, spec.run_id)] == [
            (r.attempt, r.step) for r in first
        ], "the whole episode ran again"
        assert (await _lease(kv, spec.run_id)).episodes_done == 1

        # The worker died while publishing its final record: it never landed, so the episode runs again.
        await js.delete_msg(L.subjects.STEPS_STREAM, final.seq)
        await _rewind(kv, spec.run_id, final_from=final.seq - 1)
        await _work(url, log_dir, kv, spec.run_id)
        records = await step_records(js, spec.run_id)
        audit = audit_attempts(records, LENGTH)
        assert audit.restarted == {(0, 0): 1} and audit.superseded == LENGTH - 1 and not audit.problems, audit
        status = await leases.read_status(kv, spec.run_id)
        assert status is not None and status.episodes_done == 1
    finally:
        await nc.close()


async def _work(
    url: str, log_dir: Path, kv: KeyValue, run_id: str, submit: Callable[[], Awaitable[None]] | None = None
) -> None:
    """Run one Tolaria worker until the run is no longer RUNNING; it must end COMPLETED."""
    worker = start_service("tolaria", url, log_dir, **WORKER_ENV)
    try:
        await wait_services(url, ["tolaria"])
        if submit is not None:
            await submit()
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            status = await leases.read_status(kv, run_id)
            if status is not None and status.state is not L.RunState.RUNNING:
                break
            await asyncio.sleep(0.3)
        assert status is not None and status.state is L.RunState.COMPLETED, status
    finally:
        stop_service(worker)


async def _lease(kv: KeyValue, run_id: str) -> L.EnvLease:
    entry = await kv.get(L.subjects.lease_key(run_id, 0))
    return L.decode(entry.value or b"", L.EnvLease)


async def _rewind(kv: KeyValue, run_id: str, final_from: int) -> None:
    """Put the lease and run status back as a worker killed after publishing its final record leaves them."""
    lease = await _lease(kv, run_id)
    dead = msgspec.structs.replace(
        lease, episode=0, episodes_done=0, attempt=0, final_from=final_from, released=False, expires_at=0.0
    )
    await kv.put(L.subjects.lease_key(run_id, 0), L.encode(dead))
    await leases.update_status(
        kv, run_id, lambda s: msgspec.structs.replace(s, state=L.RunState.RUNNING, episodes_done=0, message="")
    )
