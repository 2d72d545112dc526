"""Run control's rules on a real nats-server KV: stop, resume, and a run whose client went away."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

import leyline_schemas as L
from services.runtime import jetstream
from services.runtime.bus import TelemetryPublisher, connect
from services.runtime.settings import RuntimeSettings
from services.tolaria import leases, run_control

pytestmark = pytest.mark.integration


@dataclass
class Bus:
    js: Any
    kv: Any
    telemetry: TelemetryPublisher


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    """The session's nats-server with its streams: the runs bucket and a telemetry publisher, as Tolaria has them."""
    nc = await connect(RuntimeSettings.from_env({"service": "test-control", "nats_url": nats_url}, environ={}))
    try:
        js = nc.jetstream()
        await jetstream.ensure_streams(js)
        yield Bus(js, await jetstream.runs_bucket(js), TelemetryPublisher(js, "test-control"))
    finally:
        await nc.close()


async def _started(kv, run_id: str) -> L.RunSpec:  # type: ignore[no-untyped-def]
    spec = L.RunSpec(run_id=run_id, task="digits", episodes=2, n_envs=1, created_at=time.time())
    await kv.put(L.subjects.run_key(run_id), L.encode(spec))
    await kv.put(L.subjects.run_status_key(run_id), L.encode(L.RunStatus(run_id=run_id, state=L.RunState.RUNNING)))
    return spec


async def _finished_events(js, run_id: str) -> list[L.EventPayload]:  # type: ignore[no-untyped-def]
    sub = await js.subscribe(f"{L.subjects.PREFIX}.telemetry.{run_id}.>", ordered_consumer=True)
    payloads = []
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=0.5)
            except Exception:
                return payloads
            payloads.append(L.decode(msg.data, L.TelemetryEvent).payload)
    finally:
        await sub.unsubscribe()


async def test_stop_then_resume_are_announced_once_and_only_stopped_or_failed_runs_resume(bus: Bus) -> None:
    run_id = f"control-{time.time_ns()}"
    await _started(bus.kv, run_id)
    first = await run_control.end_run(bus.kv, bus.telemetry, run_id, L.RunState.STOPPED, "by hand")
    again = await run_control.end_run(bus.kv, bus.telemetry, run_id, L.RunState.STOPPED, "twice")
    assert first is not None and (first.state, first.message) == (L.RunState.STOPPED, "by hand")
    assert again is not None and again.message == "by hand", "a stopped run is not stopped again"
    resumed = await run_control.resume_run(bus.kv, bus.telemetry, run_id, "cli-test")
    assert resumed is not None and resumed.state is L.RunState.RUNNING
    await run_control.end_run(bus.kv, bus.telemetry, run_id, L.RunState.COMPLETED, "")
    with pytest.raises(run_control.NotResumable, match="completed"):
        await run_control.resume_run(bus.kv, bus.telemetry, run_id, "cli-test")
    assert await run_control.resume_run(bus.kv, bus.telemetry, "no-such-run", "cli-test") is None
    events = await _finished_events(bus.js, run_id)
    kinds = [(type(p).__name__, getattr(p, "state", getattr(p, "previous_state", ""))) for p in events]
    assert kinds == [("RunFinished", "stopped"), ("RunResumed", "stopped"), ("RunFinished", "completed")]


async def test_a_lapsed_attachment_holds_the_run_back_through_the_grace_then_stops_it(bus: Bus) -> None:
    followed, renewed, detached = [await _started(bus.kv, f"{name}-{time.time_ns()}") for name in "abc"]
    specs = [followed, renewed, detached]
    await run_control.attach(bus.kv, followed.run_id, "cli-gone", ttl=0.2)
    await run_control.attach(bus.kv, renewed.run_id, "cli-here", ttl=0.2)
    await asyncio.sleep(0.3)  # both lapse; one client comes back within the grace
    sweeper = run_control.AbandonedRuns(grace=1.0)
    assert await sweeper.sweep(bus.kv, bus.telemetry, specs) == {followed.run_id, renewed.run_id}
    await run_control.attach(bus.kv, renewed.run_id, "cli-here", ttl=30)
    await asyncio.sleep(1.1)
    assert await sweeper.sweep(bus.kv, bus.telemetry, specs) == {followed.run_id}
    status = await leases.read_status(bus.kv, followed.run_id)
    assert status is not None and status.state is L.RunState.STOPPED
    assert status.message.startswith("its client cli-gone went away"), status.message
    assert await run_control.read_attachment(bus.kv, followed.run_id) is None
    for spec in (renewed, detached):
        still = await leases.read_status(bus.kv, spec.run_id)
        assert still is not None and still.state is L.RunState.RUNNING
