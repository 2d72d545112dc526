"""Durable JetStream pull consumers: one fetch loop for every service that reads a stream (Karn, Simic)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from services.runtime.bus import BUS_ERRORS, retry_while_bus_fails

log = logging.getLogger("esper.consumers")

#: How long one fetch waits for messages before the loop looks at `stopping` again.
FETCH_WAIT_S = 1.0


@dataclass(frozen=True)
class DurableConsumer:
    """A named consumer on one stream; JetStream remembers its position across restarts."""

    durable: str
    stream: str
    subject: str
    ack_policy: AckPolicy
    deliver_policy: DeliverPolicy
    ack_wait: float
    max_ack_pending: int
    batch: int

    def config(self) -> ConsumerConfig:
        return ConsumerConfig(
            ack_policy=self.ack_policy,
            deliver_policy=self.deliver_policy,
            ack_wait=self.ack_wait,
            max_ack_pending=self.max_ack_pending,
        )


async def batches(js: JetStreamContext, consumer: DurableConsumer, stopping: asyncio.Event) -> AsyncIterator[list[Msg]]:
    """Bind (or create) the durable consumer and yield each non-empty batch it delivers until `stopping` is set.

    The caller acknowledges: what it does not acknowledge comes back after `ack_wait`.
    """
    sub = await _bind(js, consumer, stopping)
    failures = 0
    while not stopping.is_set():
        try:
            batch = await sub.fetch(consumer.batch, timeout=FETCH_WAIT_S)
        except (TimeoutError, NatsTimeoutError):
            continue
        except BUS_ERRORS as exc:
            # JetStream answers 503 while a cluster elects a new stream or meta leader, or the connection moves to
            # another server: wait and fetch again, binding anew after repeated failures. Unacknowledged messages
            # come back after `ack_wait`, so nothing is lost meanwhile.
            failures += 1
            log.warning(
                "fetch from %s/%s failed (%s: %s); retrying", consumer.stream, consumer.durable, type(exc).__name__, exc
            )
            await asyncio.sleep(min(5.0, 0.25 * failures))
            if failures % 8 == 0:
                with contextlib.suppress(*BUS_ERRORS):
                    await sub.unsubscribe()
                sub = await _bind(js, consumer, stopping)
            continue
        failures = 0
        yield batch


async def _bind(
    js: JetStreamContext, consumer: DurableConsumer, stopping: asyncio.Event
) -> JetStreamContext.PullSubscription:
    """Bind (or create) the durable consumer, waiting out a bus that cannot answer yet."""
    return await retry_while_bus_fails(
        lambda: js.pull_subscribe(
            consumer.subject, durable=consumer.durable, stream=consumer.stream, config=consumer.config()
        ),
        what=f"binding the consumer {consumer.stream}/{consumer.durable}",
        stopping=stopping,
    )
