"""Esper on a real 3-node NATS cluster (issue 15, item 5): every stream, bucket and store with 3 replicas, the
services given every node; mid-run one node is killed with SIGKILL (in the second case, the JetStream meta leader)
and started again. The run completes, every step published is learned, and no step record is lost or doubled."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from nats.js import JetStreamContext
from nats.js.errors import ServiceUnavailableError

import leyline_schemas as L
from leyline_schemas import routes
from services.operator.cluster import NatsCluster, start_cluster
from services.policy.pointers import read_pointer
from services.runtime import jetstream
from services.runtime.bus import BUS_ERRORS, connect, request
from services.runtime.settings import RuntimeSettings
from tests.resilience.run_probes import (
    audit_attempts,
    digits_learning_spec,
    read_events,
    step_records,
    wait_learner_drained,
)
from tests.service_processes import start_service, stop_service, wait_services

pytestmark = pytest.mark.integration

N_ENVS, EPISODES, LENGTH = 2, 6, 5  # three rounds of two episodes of five epochs
SERVICE_ENV = {
    "ESPER_TORCH_THREADS": "1",
    "ESPER_STREAM_REPLICAS": "3",
    "ESPER_POLICY_HIDDEN": "16",
    "ESPER_POLICY_HEAD_HIDDEN": "8",
    "ESPER_PPO_EPOCHS": "2",
}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    running = start_cluster(tmp_path / "cluster", size=3)
    try:
        yield running
    finally:
        running.stop()


async def _wait(predicate, timeout: float, what: str):  # type: ignore[no-untyped-def]
    """Poll until `predicate` holds; this client's reads fail over like the services' do (a read that times out
    while the cluster elects a leader is tried again)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if value := await predicate():
                return value
        except BUS_ERRORS:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.25)


@pytest.mark.timeout(420)
@pytest.mark.parametrize("victim", ["a follower node", "the meta leader"])
def test_a_learning_run_outlives_a_killed_cluster_node(cluster: NatsCluster, tmp_path: Path, victim: str) -> None:
    url = cluster.url
    policy_id = f"ppo-cluster-{time.time_ns()}"
    spec = digits_learning_spec(
        f"cluster-{time.time_ns()}", policy_id, episodes=EPISODES, n_envs=N_ENVS, episode_length=LENGTH
    )
    processes = {
        name: start_service(name, url, tmp_path, **SERVICE_ENV) for name in ("kasmina", "tamiyo", "tolaria", "simic")
    }

    async def scenario() -> tuple[list[L.StepRecord], int, list[int]]:
        await wait_services(url, list(processes), timeout=120)
        nc = await connect(RuntimeSettings.from_env({"service": "test", "nats_url": url}))
        js = nc.jetstream()
        try:
            for name in (L.subjects.STEPS_STREAM, L.subjects.TELEMETRY_STREAM, f"KV_{L.subjects.RUNS_BUCKET}"):
                info = await js.stream_info(name)
                assert info.config.num_replicas == 3, (name, info.config.num_replicas)
            policies = await jetstream.policies_bucket(js)
            await request(nc, routes.RUNS_START, spec, timeout=60.0)

            async def version(v: int) -> bool:
                pointer = await read_pointer(policies, policy_id)
                return pointer is not None and pointer.version >= v

            await _wait(lambda: version(1), 180, "round 0's update")
            leader = cluster.meta_leader()
            index = leader if victim == "the meta leader" else (leader + 1) % 3
            cluster.kill(index)
            await asyncio.sleep(2.0)
            await asyncio.to_thread(cluster.restart, index)
            await _wait(lambda: version(EPISODES // N_ENVS), 240, "the last update")

            drained = await wait_learner_drained(js, spec, timeout=60)
            assert drained.pending == 0 and drained.ack_pending == 0, drained
            learned = {}
            for event in await _read_through_failover(js, spec.run_id, "ppo_update_completed"):
                assert isinstance(event.payload, L.PPOUpdateCompleted)
                learned[event.payload.version] = event.payload.steps  # a replayed announcement: the same update
            records = await step_records(js, spec.run_id)
            return records, index, [steps for _, steps in sorted(learned.items())]
        finally:
            await nc.close()

    try:
        records, killed, steps_per_update = asyncio.run(scenario())
    finally:
        for process in processes.values():
            stop_service(process)
    audit = audit_attempts(records, LENGTH)
    assert audit.kept == EPISODES * LENGTH and not audit.problems, audit
    published = len({r.dedup_id for r in records})
    assert published == len(records), "a step record is stored twice"
    assert steps_per_update == [N_ENVS * LENGTH] * (EPISODES // N_ENVS), steps_per_update
    kept = [
        r
        for r in records
        if r.attempt == max(x.attempt for x in records if (x.env_id, x.episode) == (r.env_id, r.episode))
    ]
    assert sum(steps_per_update) == len(kept), "steps published = steps learned"
    assert 0 <= killed < 3


async def _read_through_failover(js: JetStreamContext, run_id: str, kind: str) -> list[L.TelemetryEvent]:
    """The probe's own read of TELEMETRY, asked again while a restarted node's stream still elects its leader (a
    503 to the probe's pull is not the services' fault; their reads were checked above)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            return await read_events(js, run_id, kind)
        except ServiceUnavailableError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(1.0)
