"""What the resilience tests observe: a LocalStack driven from a background thread, and read-only probes of a
run's state on the bus (step records in STEPS, the learner's consumer, episode outcomes, leases, metrics)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import urllib.request
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import ConsumerInfo
from nats.js.errors import KeyNotFoundError, NotFoundError
from prometheus_client.parser import text_string_to_metric_families

import leyline_schemas as L
from leyline_schemas.rounds import env_episodes
from services.operator.registry import SERVICE_NAMES
from services.operator.stack import LocalStack
from services.runtime.bus import connect
from services.runtime.discovery import live_services, wait_for_services
from services.runtime.settings import RuntimeSettings

T = TypeVar("T")

#: The learner's durable consumer on STEPS (SimicSettings.consumer's default).
LEARNER_CONSUMER = "simic"


class BackgroundStack:
    """A LocalStack whose supervisor lives on its own event loop in a daemon thread, so that one stack can
    outlive the per-test event loops; every method is called from the test's thread."""

    def __init__(self, stack: LocalStack) -> None:
        self.stack = stack
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="esper-stack", daemon=True)
        self._thread.start()

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float = 120.0) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def start(self) -> str:
        return self.call(self.stack.start())

    def stop(self) -> None:
        try:
            self.call(self.stack.stop(), timeout=60)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)

    def kill(self, service: str, sig: int) -> int:
        async def signal_child() -> int:
            return self.stack.kill(service, sig)

        return self.call(signal_child())

    def pid(self, service: str) -> int | None:
        assert self.stack.supervisor is not None

        async def current() -> int | None:
            assert self.stack.supervisor is not None
            return self.stack.supervisor.pid(service)

        return self.call(current())

    def restarts(self, service: str) -> int:
        assert self.stack.supervisor is not None
        return self.stack.supervisor.children[service].restarts

    def restart_nats(self, down_for: float) -> None:
        self.call(self.stack.restart_nats(down_for=down_for))

    def settings(self, user: str = "cli") -> RuntimeSettings:
        """Client settings that connect to this stack as `user`."""
        creds = {key.removeprefix("ESPER_").lower(): value for key, value in self.stack.credentials(user).items()}
        return RuntimeSettings.from_env({"service": f"test-{user}", "nats_url": self.stack.url, **creds})


@contextlib.contextmanager
def background_stack(state_dir: Path, **options: Any) -> Iterator[BackgroundStack]:
    """Start a LocalStack (options as LocalStack's), logging every service to `state_dir/services.log`; yields
    once every service of the stack answers discovery."""
    log = open(state_dir / "services.log", "a")  # noqa: SIM115 - closed below, after the stack stops

    def write(line: str) -> None:
        log.write(line + "\n")
        log.flush()

    runner = BackgroundStack(LocalStack(state_dir=state_dir, output=write, **options))

    async def ready() -> None:
        nc, _ = await bus(runner.settings())
        try:
            await wait_for_services(nc, list(options.get("services", SERVICE_NAMES)), timeout=120)
        finally:
            await nc.close()

    try:
        runner.start()
        asyncio.run(ready())
        yield runner
    finally:
        runner.stop()
        log.close()


def permission_violations(stack: BackgroundStack) -> list[str]:
    """Lines where a service of the stack was refused a publish or subscription by the server."""
    log = (stack.stack.state_dir / "services.log").read_text()
    return [line for line in log.splitlines() if "permissions violation" in line.lower()]


def digits_learning_spec(run_id: str, policy_id: str, *, episodes: int, n_envs: int, episode_length: int) -> L.RunSpec:
    """A small learning run on digits: one SIMPLIFIED arm training `policy_id`, two batches per epoch."""
    return L.RunSpec(
        run_id=run_id,
        task="digits",
        episodes=episodes,
        n_envs=n_envs,
        episode_length=episode_length,
        max_batches=2,
        arms=[L.ArmSpec(arm_id="main", policy_id=policy_id, reward_mode=L.RewardMode.SIMPLIFIED)],
        learn=True,
    )


async def bus(settings: RuntimeSettings) -> tuple[Client, JetStreamContext]:
    nc = await connect(settings)
    return nc, nc.jetstream()


async def subject_count(js: JetStreamContext, stream: str, subject: str) -> int:
    """Messages stored in `stream` under `subject` (wildcards allowed), summed over matching subjects."""
    info = await js.stream_info(stream, subjects_filter=subject)
    return sum((info.state.subjects or {}).values())


async def steps_published(js: JetStreamContext, run_id: str) -> int:
    return await subject_count(js, L.subjects.STEPS_STREAM, L.subjects.steps_subject(run_id))


async def step_records(js: JetStreamContext, run_id: str, idle: float = 1.0) -> list[L.StepRecord]:
    """Every step record of a run in STEPS, in stream order (read until the stream is idle for `idle` s)."""
    records: list[L.StepRecord] = []
    sub = await js.subscribe(L.subjects.steps_subject(run_id), ordered_consumer=True)
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=idle)
            except (TimeoutError, NatsTimeoutError):
                return records
            records.append(L.decode(msg.data, L.StepRecord))
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()


@dataclass(frozen=True)
class AttemptAudit:
    """A run's step records by episode attempt: what consumers keep, what a restart left behind, what is wrong."""

    kept: int  # records of each episode's latest attempt
    superseded: int  # records of earlier attempts of restarted episodes
    restarted: dict[tuple[int, int], int]  # (env, episode) → latest attempt, for episodes that restarted
    problems: list[str]
    #: (env, episode, attempt) → epochs trained again: the steps the attempt before it had stored beyond the host
    #: checkpoint this one resumed from (`resumed_from`; 0 when it started over).
    redone: dict[tuple[int, int, int], int] = field(default_factory=dict)


def audit_attempts(records: list[L.StepRecord], episode_length: int) -> AttemptAudit:
    """Each (episode, attempt) at most once per step; each latest attempt whole (steps 1..T); each earlier attempt
    a prefix 1..k (the steps its worker published before it died or let go)."""
    by_attempt: dict[tuple[int, int, int], list[int]] = {}
    for r in records:
        by_attempt.setdefault((r.env_id, r.episode, r.attempt), []).append(r.step)
    latest: dict[tuple[int, int], int] = {}
    for env, episode, attempt in by_attempt:
        latest[(env, episode)] = max(attempt, latest.get((env, episode), 0))
    problems, kept, superseded = [], 0, 0
    for (env, episode, attempt), steps in sorted(by_attempt.items()):
        where = f"env {env} episode {episode} attempt {attempt}"
        if len(steps) != len(set(steps)):
            problems.append(f"{where}: a step stored twice")
        if attempt == latest[(env, episode)]:
            kept += len(steps)
            if sorted(steps) != list(range(1, episode_length + 1)):
                problems.append(f"{where}: latest attempt is not whole ({sorted(steps)})")
        else:
            superseded += len(steps)
            if sorted(steps) != list(range(1, len(steps) + 1)):
                problems.append(f"{where}: earlier attempt is not a prefix ({sorted(steps)})")
    restarted = {key: attempt for key, attempt in latest.items() if attempt > 0}
    resumed_from = {(r.env_id, r.episode, r.attempt): r.resumed_from for r in records}
    redone = {
        (env, episode, attempt): max(by_attempt[(env, episode, attempt - 1)]) - start
        for (env, episode, attempt), start in resumed_from.items()
        if attempt > 0 and (env, episode, attempt - 1) in by_attempt
    }
    return AttemptAudit(kept, superseded, restarted, problems, redone)


async def run_status(js: JetStreamContext, run_id: str) -> L.RunStatus | None:
    """The run's status straight from KV (it stays readable while Tolaria is down)."""
    kv = await js.key_value(L.subjects.RUNS_BUCKET)
    try:
        entry = await kv.get(L.subjects.run_status_key(run_id))
    except KeyNotFoundError:
        return None
    return L.decode(entry.value, L.RunStatus) if entry.value else None


async def env_leases(js: JetStreamContext, spec: L.RunSpec) -> dict[int, L.EnvLease]:
    kv = await js.key_value(L.subjects.RUNS_BUCKET)
    leases = {}
    for env_id in range(spec.n_envs):
        with contextlib.suppress(KeyNotFoundError):
            entry = await kv.get(L.subjects.lease_key(spec.run_id, env_id))
            if entry.value:
                leases[env_id] = L.decode(entry.value, L.EnvLease)
    return leases


async def envs_complete(js: JetStreamContext, spec: L.RunSpec) -> bool:
    """Every env's lease records all of its episodes done: no env was lost."""
    leases = await env_leases(js, spec)
    return all(
        env_id in leases and leases[env_id].episodes_done == len(env_episodes(spec, env_id))
        for env_id in range(spec.n_envs)
    )


async def read_events(js: JetStreamContext, run_id: str, kind: str) -> list[L.TelemetryEvent]:
    """Every TelemetryEvent of one kind stored for a run, through an ephemeral pull consumer."""
    subject = L.subjects.telemetry_subject(run_id, kind)
    expected = await subject_count(js, L.subjects.TELEMETRY_STREAM, subject)
    if expected == 0:
        return []
    sub = await js.pull_subscribe(subject, stream=L.subjects.TELEMETRY_STREAM)
    events: list[L.TelemetryEvent] = []
    try:
        while len(events) < expected:
            try:
                batch = await sub.fetch(min(256, expected - len(events)), timeout=5)
            except (TimeoutError, NatsTimeoutError):
                break
            events += [L.decode(msg.data, L.TelemetryEvent) for msg in batch]
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
    return events


async def episode_outcomes(js: JetStreamContext, run_id: str) -> list[L.EpisodeOutcome]:
    events = await read_events(js, run_id, "episode_outcome")
    return [e.payload for e in events if isinstance(e.payload, L.EpisodeOutcome)]


async def learner_consumer(js: JetStreamContext) -> ConsumerInfo | None:
    try:
        return await js.consumer_info(L.subjects.STEPS_STREAM, LEARNER_CONSUMER)
    except NotFoundError:
        return None


@dataclass
class LearnerAudit:
    """How the learner consumed a run's step records."""

    published: int
    pending: int
    ack_pending: int
    redelivered: int
    outcomes: int
    distinct_episodes: int


async def wait_learner_drained(js: JetStreamContext, spec: L.RunSpec, timeout: float) -> LearnerAudit:
    """Wait until the learner acknowledged every stored step record and scored every episode of the run."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            published = await steps_published(js, spec.run_id)
            info = await learner_consumer(js)
            outcomes = await episode_outcomes(js, spec.run_id)
        except (NatsError, TimeoutError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)
            continue
        audit = LearnerAudit(
            published=published,
            pending=(info.num_pending or 0) if info else -1,
            ack_pending=(info.num_ack_pending or 0) if info else -1,
            redelivered=(info.num_redelivered or 0) if info else -1,
            outcomes=len(outcomes),
            distinct_episodes=len({(o.env_id, o.episode) for o in outcomes}),
        )
        drained = audit.pending == 0 and audit.ack_pending == 0 and audit.distinct_episodes >= spec.episodes
        if drained or time.monotonic() > deadline:
            return audit
        await asyncio.sleep(0.5)


async def wait_run(
    js: JetStreamContext,
    run_id: str,
    timeout: float,
    on_progress: Callable[[int, L.RunStatus | None], Awaitable[None]] | None = None,
    poll: float = 0.5,
) -> L.RunStatus:
    """Poll the run until it leaves RUNNING, calling `on_progress(steps published, status)` at each poll."""
    deadline = time.monotonic() + timeout
    status: L.RunStatus | None = None
    while True:
        try:
            status = await run_status(js, run_id)
            steps = await steps_published(js, run_id)
        except (NatsError, TimeoutError):
            # The bus itself may be restarting: this client reconnects like the services do.
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(poll)
            continue
        if on_progress is not None:
            await on_progress(steps, status)
        if status is not None and status.state is not L.RunState.RUNNING:
            return status
        if time.monotonic() > deadline:
            raise TimeoutError(f"run {run_id} still {status.state.value if status else 'unknown'} after {timeout}s")
        await asyncio.sleep(poll)


async def admin_url(nc: Client, service: str) -> str:
    live = [s for s in await live_services(nc, timeout=0.5) if s["service"] == service]
    assert live, f"{service} is not on the bus"
    return str(live[0]["admin"])


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """A Prometheus /metrics page as {(sample name, sorted labels): value}."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def metric_sum(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include `labels`."""
    return sum(
        value
        for (sample, sample_labels), value in samples.items()
        if sample == name and set(labels.items()) <= set(sample_labels)
    )


async def wait_for_restart(nc: Client, stack: BackgroundStack, service: str, old_pid: int, timeout: float) -> int:
    """Wait until the supervisor restarted `service` and the new process answers discovery; its new pid."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = stack.pid(service)
        if pid is not None and pid != old_pid:
            live = await live_services(nc, timeout=0.3)
            if any(s["service"] == service and s["instance"].endswith(f"-{pid}") for s in live):
                return pid
        await asyncio.sleep(0.3)
    raise TimeoutError(f"{service} was not back on the bus {timeout}s after pid {old_pid} was killed")
