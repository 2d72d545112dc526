"""A service's exit status says why it stopped: 1 when a background task failed (a supervisor or an on-failure
restart policy must see it), 0 when it was told to stop."""

from __future__ import annotations

import asyncio

from services.runtime.service import ServiceContext, ServiceDefinition, run_service
from services.runtime.settings import RuntimeSettings


def settings(nats_url: str) -> RuntimeSettings:
    return RuntimeSettings.from_env({"service": "test-exit", "nats_url": nats_url}, environ={})


def test_a_failed_background_task_exits_1(nats_url: str) -> None:
    async def broken(ctx: ServiceContext) -> None:
        raise RuntimeError("the background task broke")

    assert (
        run_service(ServiceDefinition(name="test-exit", description="fails", background=[broken]), settings(nats_url))
        == 1
    )


def test_a_service_told_to_stop_exits_0(nats_url: str) -> None:
    async def stop_soon(ctx: ServiceContext) -> None:
        await asyncio.sleep(0.2)
        ctx.stopping.set()
        await asyncio.sleep(3600)

    definition = ServiceDefinition(name="test-exit", description="stops", background=[stop_soon])
    assert run_service(definition, settings(nats_url)) == 0
