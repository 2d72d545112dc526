"""Replacing the Tamiyo process while decisions stream in (ARCHITECTURE.md §7b): zero failed decisions.

Two Tamiyo processes share the queue group; the first is sent SIGTERM, drains and exits, and the second carries
on. A stream of DecisionRequests for a learned line and for the heuristic runs before, during and after.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from pathlib import Path

import pytest

from leyline_schemas import routes
from services.runtime.bus import connect, request
from services.runtime.discovery import live_services
from services.runtime.settings import RuntimeSettings
from tests.service_processes import start_service, stop_service, wait_services
from tests.tamiyo.policy_helpers import decision_request, policy_blob, publish_version

pytestmark = pytest.mark.integration


def test_replacing_the_tamiyo_process_fails_no_decision(nats_url: str, tmp_path: Path) -> None:
    policy_id = f"swap-{uuid.uuid4().hex[:6]}"
    first = start_service("tamiyo", nats_url, tmp_path, ESPER_TORCH_THREADS="1")
    second = None
    outcomes: dict[str, int] = {"ok": 0, "failed": 0}
    errors: list[str] = []
    versions: set[int] = set()

    async def scenario() -> None:
        nonlocal second
        await wait_services(nats_url, ["tamiyo"])
        nc = await connect(RuntimeSettings.from_env({"service": "test", "nats_url": nats_url}))
        try:
            await publish_version(nc.jetstream(), policy_id, 0, policy_blob(policy_id, 0))
            stop = asyncio.Event()

            async def stream(index: int) -> None:
                epoch = 0
                while not stop.is_set():
                    epoch += 1
                    target = policy_id if epoch % 3 else "heuristic"
                    try:
                        decision = await request(
                            nc,
                            routes.TAMIYO_DECIDE,
                            decision_request(target, epoch=epoch, env_id=index),
                            timeout=5.0,
                        )
                    except Exception as exc:  # every failure is counted and reported, none is tolerated
                        outcomes["failed"] += 1
                        errors.append(f"{type(exc).__name__}: {exc}")
                    else:
                        outcomes["ok"] += 1
                        if target == policy_id:
                            versions.add(decision.policy_version)
                    await asyncio.sleep(0.01)

            streams = [asyncio.create_task(stream(i)) for i in range(3)]
            second = start_service("tamiyo", nats_url, tmp_path, ESPER_TORCH_THREADS="1")
            deadline = time.monotonic() + 90
            while len([s for s in await live_services(nc, timeout=0.3) if s["service"] == "tamiyo" and s["ready"]]) < 2:
                assert time.monotonic() < deadline, "the second Tamiyo never came up"
            before_swap = outcomes["ok"]
            assert await asyncio.to_thread(stop_service, first, signal.SIGTERM) == 0
            after_exit = outcomes["ok"]
            await asyncio.sleep(2.0)
            stop.set()
            await asyncio.gather(*streams)
            assert before_swap > 0 and outcomes["ok"] > after_exit, "decisions must flow before and after the swap"
        finally:
            await nc.close()

    try:
        asyncio.run(scenario())
    finally:
        stop_service(first)
        if second is not None:
            stop_service(second)
    print(f"\ndecisions: {outcomes}")
    assert outcomes["failed"] == 0, errors[:5]
    assert versions == {0}
