"""retry_while_bus_fails on a real nats-server: a write issued during an outage lands once the server is back;
errors that are not the bus's, and bus errors once the service is stopping, raise at once."""

from __future__ import annotations

import asyncio
import time

import pytest
from nats.errors import TimeoutError as NatsTimeoutError

import leyline_schemas as L
from services.operator.embedded import EmbeddedNats
from services.runtime import jetstream
from services.runtime.bus import connect, retry_while_bus_fails
from services.runtime.settings import RuntimeSettings


async def test_a_write_during_an_outage_lands_after_it(fresh_nats: EmbeddedNats) -> None:
    nc = await connect(RuntimeSettings.from_env({"service": "test-retry", "nats_url": fresh_nats.url}, environ={}))
    try:
        js = nc.jetstream(timeout=1.0)
        await jetstream.bootstrap(js)
        policies = await jetstream.policies_bucket(js)
        key = L.subjects.policy_key("retry-line")
        retries: list[BaseException] = []

        await asyncio.to_thread(fresh_nats.kill)
        write = asyncio.create_task(
            retry_while_bus_fails(lambda: policies.put(key, b"v1"), what="test write", on_retry=retries.append)
        )
        await asyncio.sleep(2.5)
        assert not write.done(), "the write finished while the server was down"
        await asyncio.to_thread(fresh_nats.restart)
        revision = await asyncio.wait_for(write, timeout=30)
        assert revision > 0 and (await policies.get(key)).value == b"v1"
        assert retries, "no failed attempt was retried"
    finally:
        await nc.close()


async def test_other_errors_and_a_stopping_service_are_not_retried() -> None:
    calls: list[int] = []

    async def broken() -> None:
        calls.append(1)
        raise ValueError("not the bus")

    with pytest.raises(ValueError):
        await retry_while_bus_fails(broken, what="broken")
    assert len(calls) == 1

    stopping = asyncio.Event()
    stopping.set()

    async def unreachable() -> None:
        calls.append(2)
        raise NatsTimeoutError

    with pytest.raises(NatsTimeoutError):
        await retry_while_bus_fails(unreachable, what="during shutdown", stopping=stopping)
    assert calls == [1, 2]


async def test_a_deadline_ends_the_retries() -> None:
    tries: list[float] = []

    async def unreachable() -> None:
        tries.append(time.monotonic())
        raise NatsTimeoutError

    with pytest.raises(NatsTimeoutError):
        await retry_while_bus_fails(unreachable, what="bounded", deadline=1.0)
    # Backoff 0.2, 0.4: a third wait of 0.8 s would start the next try past the deadline.
    assert len(tries) == 3 and tries[-1] - tries[0] < 1.0
