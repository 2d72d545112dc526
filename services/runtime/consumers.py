"""Durable JetStream pull consumers: one fetch loop for every service that reads a stream (Karn, Simic)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

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
    sub = await js.pull_subscribe(
        consumer.subject, durable=consumer.durable, stream=consumer.stream, config=consumer.config()
    )
    while not stopping.is_set():
        try:
            batch = await sub.fetch(consumer.batch, timeout=FETCH_WAIT_S)
        except (TimeoutError, NatsTimeoutError):
            continue
        yield batch
