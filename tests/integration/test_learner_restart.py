"""A learning run survives kill -9 of the learner mid-round: no step record is lost and none is trained on twice.

Real processes on a private nats-server: Kasmina, Tamiyo, Tolaria and Simic. Simic is killed while round 1 is being
played (round 0 already committed as version 1) and restarted; the run must still publish versions 1..R, each
update must hold exactly its round's steps, and the learner's durable consumer must end with nothing pending.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest

import leyline_schemas as L
from leyline_schemas import routes
from services.operator.embedded import EmbeddedNats
from services.policy.pointers import read_pointer
from services.runtime import jetstream
from services.runtime.bus import connect, request
from services.runtime.settings import RuntimeSettings
from tests.resilience.run_probes import digits_learning_spec
from tests.service_processes import start_service, stop_service, wait_services

pytestmark = pytest.mark.integration

N_ENVS, EPISODES, LENGTH = 2, 6, 5  # three rounds of two episodes of five epochs
LEARNER_ENV = {
    "ESPER_ACK_WAIT": "3",
    "ESPER_CONSUMER": "simic-restart",
    "ESPER_POLICY_HIDDEN": "16",
    "ESPER_POLICY_HEAD_HIDDEN": "8",
    "ESPER_PPO_EPOCHS": "2",
}


async def _wait(predicate, timeout: float, what: str, poll: float = 0.25):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(poll)


async def _telemetry(js, run_id: str, kind: str) -> list[L.TelemetryEvent]:  # type: ignore[no-untyped-def]
    sub = await js.pull_subscribe(L.subjects.telemetry_subject(run_id, kind), stream=L.subjects.TELEMETRY_STREAM)
    events: list[L.TelemetryEvent] = []
    try:
        while True:
            try:
                batch = await sub.fetch(100, timeout=1.0)
            except Exception:
                break
            for msg in batch:
                events.append(L.decode(msg.data, L.TelemetryEvent))
                await msg.ack()
    finally:
        await sub.unsubscribe()
    return events


async def _steps_in_stream(js, run_id: str) -> int:  # type: ignore[no-untyped-def]
    info = await js.stream_info(L.subjects.STEPS_STREAM, subjects_filter=L.subjects.steps_subject(run_id))
    return int((info.state.subjects or {}).get(L.subjects.steps_subject(run_id), 0))


def test_learner_killed_mid_round_loses_no_step_and_counts_none_twice(fresh_nats: EmbeddedNats, tmp_path: Path) -> None:
    url = fresh_nats.url
    policy_id = "ppo-restart"
    spec = digits_learning_spec("learn-restart", policy_id, episodes=EPISODES, n_envs=N_ENVS, episode_length=LENGTH)
    common = {"ESPER_TORCH_THREADS": "1", "ESPER_LEASE_TTL": "5"}
    processes = {
        name: start_service(name, url, tmp_path, **common, **(LEARNER_ENV if name == "simic" else {}))
        for name in ("kasmina", "tamiyo", "tolaria", "simic")
    }
    killed_at: dict[str, int] = {}

    async def _steps_in_stream_above(js, threshold: int) -> bool:  # type: ignore[no-untyped-def]
        return await _steps_in_stream(js, spec.run_id) >= threshold

    async def scenario() -> None:
        await wait_services(url, list(processes))
        nc = await connect(RuntimeSettings.from_env({"service": "test", "nats_url": url}))
        js = nc.jetstream()
        try:
            policies = await jetstream.policies_bucket(js)
            await request(nc, routes.RUNS_START, spec, timeout=60.0)

            async def version_at_least(v: int) -> L.ActivePolicy | None:
                pointer = await read_pointer(policies, policy_id)
                return pointer if pointer is not None and pointer.version >= v else None

            await _wait(lambda: version_at_least(1), 120, "round 0's update")
            # Round 1 is being played: its first records are in the stream but its update is not applied.
            await _wait(lambda: _steps_in_stream_above(js, N_ENVS * LENGTH + 1), 60, "round 1 records")
            killed_at["steps"] = await _steps_in_stream(js, spec.run_id)
            stop_service(processes["simic"], sig=signal.SIGKILL)
            await asyncio.sleep(1.0)
            processes["simic"] = start_service("simic", url, tmp_path, **common, **LEARNER_ENV)

            await _wait(lambda: version_at_least(EPISODES // N_ENVS), 180, "the last update")

            async def drained() -> bool:
                info = await js.consumer_info(L.subjects.STEPS_STREAM, LEARNER_ENV["ESPER_CONSUMER"])
                return info.num_pending == 0 and info.num_ack_pending == 0

            await _wait(drained, 60, "the learner to acknowledge every record")
            updates = await _telemetry(js, spec.run_id, "ppo_update_completed")
            outcomes = await _telemetry(js, spec.run_id, "episode_outcome")
            stored = await _steps_in_stream(js, spec.run_id)
        finally:
            await nc.close()

        by_version: dict[int, L.PPOUpdateCompleted] = {}
        for event in updates:
            payload = event.payload
            assert isinstance(payload, L.PPOUpdateCompleted)
            previous = by_version.setdefault(payload.version, payload)
            assert previous.steps == payload.steps, "a replayed announcement must describe the same update"
        rounds = EPISODES // N_ENVS
        assert sorted(by_version) == list(range(1, rounds + 1)), f"versions {sorted(by_version)}"
        # Every update holds exactly its round's records: a lost step would stall or shrink a round, a step
        # counted twice would grow one.
        assert all(u.steps == N_ENVS * LENGTH for u in by_version.values()), [u.steps for u in by_version.values()]
        assert sum(u.steps for u in by_version.values()) == stored == EPISODES * LENGTH
        assert all(u.diagnostics["episodes"] == N_ENVS for u in by_version.values())
        assert {(o.env_id, o.episode) for o in outcomes} == {(e % N_ENVS, e) for e in range(EPISODES)}
        assert N_ENVS * LENGTH < killed_at["steps"] < EPISODES * LENGTH, "killed while round 1 was being played"
        restarted = [log.read_text() for log in tmp_path.glob("simic-*.log")]
        assert any(f"resumed {policy_id} at v" in text for text in restarted), "the new learner did not resume"

    try:
        asyncio.run(scenario())
    finally:
        for process in processes.values():
            stop_service(process)
