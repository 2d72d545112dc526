"""Faults in the middle of a run, on real processes and a secure bus: kill -9 of each service in turn, a
nats-server restart, a paused Karn. The run completes, every step record is stored once and consumed by the
learner, every episode is scored once and no env is lost."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from nats.js import JetStreamContext

import leyline_schemas as L
from leyline_schemas import routes
from services.operator.registry import SERVICE_NAMES, settings_type
from services.runtime.bus import request
from services.runtime.discovery import wait_for_services
from tests.resilience.run_probes import (
    BackgroundStack,
    admin_url,
    audit_attempts,
    background_stack,
    bus,
    envs_complete,
    metric_sum,
    permission_violations,
    scrape,
    step_records,
    steps_published,
    wait_learner_drained,
    wait_run,
)

pytestmark = pytest.mark.integration

#: Recovery in seconds, not minutes: a dead worker's lease expires after 3s, and the records a killed learner
#: had not acknowledged come back after 5s; one torch thread per worker on the shared two-core machines.
FAST_RECOVERY = {"ESPER_LEASE_TTL": "3", "ESPER_ACK_WAIT": "5", "ESPER_TORCH_THREADS": "1"}


def test_the_recovery_settings_are_ones_the_services_read() -> None:
    read = {name for service in SERVICE_NAMES for name in settings_type(service).env_names()}
    assert set(FAST_RECOVERY) <= read, f"renamed settings: {set(FAST_RECOVERY) - read}"


def spec(episodes: int, n_envs: int, episode_length: int) -> L.RunSpec:
    return L.RunSpec(
        run_id=f"fault-{uuid.uuid4().hex[:8]}",
        task="digits",
        episodes=episodes,
        n_envs=n_envs,
        episode_length=episode_length,
        max_batches=4,
    )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundStack]:
    state = tmp_path_factory.mktemp("faults")
    with background_stack(state, secure=True, extra_env=FAST_RECOVERY) as running:
        yield running


def log_tail(stack: BackgroundStack, lines: int = 60) -> str:
    path: Path = stack.stack.state_dir / "services.log"
    return "\n".join(path.read_text().splitlines()[-lines:])


async def start(stack: BackgroundStack, run: L.RunSpec) -> None:
    nc, _ = await bus(stack.settings())
    try:
        await request(nc, routes.RUNS_START, run, timeout=60, retries=3)
    finally:
        await nc.close()


@pytest.mark.timeout(300)
def test_kill_each_service_mid_run(stack: BackgroundStack) -> None:
    asyncio.run(_kill_each_service(stack, spec(episodes=4, n_envs=2, episode_length=20)))


async def _kill_each_service(stack: BackgroundStack, run: L.RunSpec) -> None:
    total = run.episodes * run.episode_length
    restarts_before = {name: stack.restarts(name) for name in SERVICE_NAMES}
    killed: list[tuple[str, int]] = []
    nc, js = await bus(stack.settings())
    try:
        await start(stack, run)

        async def kill_next(steps: int, status: L.RunStatus | None) -> None:
            # Victim k dies once k/6 of the run's step records are stored: each one mid-run, in turn. Progress
            # itself waits for a victim the step path needs (Kasmina, Tolaria), so they never pile up.
            while len(killed) < len(SERVICE_NAMES) and steps >= (len(killed) + 1) * total // (len(SERVICE_NAMES) + 1):
                name = SERVICE_NAMES[len(killed)]
                stack.kill(name, signal.SIGKILL)
                killed.append((name, steps))

        status = await wait_run(js, run.run_id, timeout=240, on_progress=kill_next, poll=0.25)
        audit = await wait_learner_drained(js, run, timeout=60)
        attempts = audit_attempts(await step_records(js, run.run_id), run.episode_length)
        complete = await envs_complete(js, run)
        await wait_for_services(nc, list(SERVICE_NAMES), timeout=60)
    finally:
        await nc.close()
    print(f"\nkill -9 mid-run: killed (service, at step) {killed}; {audit}; {attempts}")
    assert status.state is L.RunState.COMPLETED, (status, log_tail(stack))
    assert [name for name, _ in killed] == list(SERVICE_NAMES), f"the run ended before every kill: {killed}"
    for name in SERVICE_NAMES:
        assert stack.restarts(name) > restarts_before[name], f"the supervisor did not restart {name}"
    assert status.episodes_done == run.episodes
    assert complete, "an env did not finish all of its episodes"
    # Tolaria's kill interrupts an episode: the worker that takes it over resumes it, as a new attempt, from its
    # latest host checkpoint (written after every epoch by default), and the steps the dead worker had stored stay
    # behind as an earlier attempt that consumers set aside. At most one epoch is trained again: the one whose
    # record was stored just before the kill, with its checkpoint not yet written.
    assert attempts.kept == total and not attempts.problems, attempts
    assert max(attempts.redone.values(), default=0) <= 1, attempts.redone
    assert audit.published == total + attempts.superseded, f"{audit.published} step records stored: {attempts}"
    assert audit.pending == 0 and audit.ack_pending == 0, f"the learner left records unacknowledged: {audit}"
    assert audit.distinct_episodes == run.episodes, f"episodes left unscored: {audit}"
    assert audit.outcomes == run.episodes, f"an episode was scored more than once: {audit}"
    assert not permission_violations(stack), permission_violations(stack)[:5]


@pytest.mark.timeout(240)
def test_nats_server_restart_mid_run(stack: BackgroundStack) -> None:
    asyncio.run(_restart_nats(stack, spec(episodes=2, n_envs=2, episode_length=20)))


async def _restart_nats(stack: BackgroundStack, run: L.RunSpec) -> None:
    total = run.episodes * run.episode_length
    restarted_at: list[int] = []
    nc, js = await bus(stack.settings())
    try:
        before = {name: scrape(await admin_url(nc, name)) for name in SERVICE_NAMES}
        await start(stack, run)

        async def restart_once(steps: int, status: L.RunStatus | None) -> None:
            if not restarted_at and steps >= 1:
                restarted_at.append(steps)
                # SIGKILL: nothing is flushed or handed over; JetStream recovers from its files.
                await asyncio.to_thread(stack.restart_nats, 1.0)

        status = await wait_run(js, run.run_id, timeout=180, on_progress=restart_once, poll=0.2)
        audit = await wait_learner_drained(js, run, timeout=60)
        attempts = audit_attempts(await step_records(js, run.run_id), run.episode_length)
        complete = await envs_complete(js, run)
        after = {name: scrape(await admin_url(nc, name)) for name in SERVICE_NAMES}
    finally:
        await nc.close()

    def delta(service: str, metric: str, **labels: str) -> float:
        return metric_sum(after[service], metric, **labels) - metric_sum(before[service], metric, **labels)

    reconnects = {name: delta(name, "esper_bus_reconnects_total") for name in SERVICE_NAMES}
    kinds = ("step_consumed", "duplicate_step", "episode_scored")
    consumed, duplicates, scored = (delta("simic", "esper_events_total", kind=kind) for kind in kinds)
    print(
        f"\nnats-server restart at step {restarted_at}: {audit}; simic consumed {consumed} deliveries "
        f"({duplicates} redelivered duplicates), scored {scored} episodes; reconnects {reconnects}"
    )
    assert restarted_at and restarted_at[0] < total, f"the restart was not mid-run: {restarted_at}"
    assert status.state is L.RunState.COMPLETED, (status, log_tail(stack))
    assert complete, "an env did not finish all of its episodes"
    # A worker that loses the bus mid-episode gives the env back, and the episode goes on from its latest host
    # checkpoint as a new attempt (`attempts.redone`: epochs trained again, printed above).
    assert attempts.kept == total and not attempts.problems, f"step records lost across the restart: {attempts}"
    assert audit.published == total + attempts.superseded, (audit, attempts)
    assert audit.pending == 0 and audit.ack_pending == 0, audit
    assert audit.distinct_episodes == audit.outcomes == run.episodes, audit
    # Exactly once: every stored record reached the learner, and each redelivery was recognised as a duplicate.
    assert consumed - duplicates == total + attempts.superseded, (consumed, duplicates, total, attempts)
    assert scored == run.episodes, f"simic scored {scored} episodes of {run.episodes}"
    assert all(count >= 1 for count in reconnects.values()), f"a service never reconnected: {reconnects}"
    assert not permission_violations(stack), permission_violations(stack)[:5]


@pytest.mark.timeout(240)
def test_paused_karn_never_slows_training(stack: BackgroundStack) -> None:
    asyncio.run(_paused_karn(stack))


async def _timed_run(stack: BackgroundStack, run: L.RunSpec) -> float:
    """Epochs per second of a run, from its submission to its completion."""
    nc, js = await bus(stack.settings())
    try:
        started = time.monotonic()
        await start(stack, run)
        status = await wait_run(js, run.run_id, timeout=120, poll=0.2)
        elapsed = time.monotonic() - started
        stored = await steps_published(js, run.run_id)
    finally:
        await nc.close()
    assert status.state is L.RunState.COMPLETED, (status, log_tail(stack))
    assert stored == run.episodes * run.episode_length
    return stored / elapsed


async def karn_lag(js: JetStreamContext) -> int:
    """How many TELEMETRY events Karn's slowest durable consumer has yet to acknowledge."""
    last = (await js.stream_info(L.subjects.TELEMETRY_STREAM)).state.last_seq
    consumers = [c for c in await js.consumers_info(L.subjects.TELEMETRY_STREAM) if c.name.startswith("karn")]
    assert consumers, "karn has no durable consumer on TELEMETRY"
    return max(last - c.ack_floor.stream_seq for c in consumers)


async def _paused_karn(stack: BackgroundStack) -> None:
    running_rate = await _timed_run(stack, spec(episodes=1, n_envs=1, episode_length=12))
    stack.kill("karn", signal.SIGSTOP)
    try:
        paused_rate = await _timed_run(stack, spec(episodes=1, n_envs=1, episode_length=12))
        nc, js = await bus(stack.settings())
        try:
            behind = await karn_lag(js)
        finally:
            await nc.close()
    finally:
        stack.kill("karn", signal.SIGCONT)
    nc, js = await bus(stack.settings())
    try:
        deadline = time.monotonic() + 60
        while (lag := await karn_lag(js)) > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
    finally:
        await nc.close()
    print(f"\nepochs/s with karn running {running_rate:.2f}, with karn stopped {paused_rate:.2f}; karn behind {behind}")
    assert behind > 0, "karn was not actually behind while stopped"
    # Generous: the machines are shared, so only a collapse of the training loop would fail this.
    assert paused_rate >= running_rate / 3, (running_rate, paused_rate)
    assert lag == 0, f"karn did not catch up after SIGCONT: {lag} events behind"
