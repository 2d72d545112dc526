"""bus.settle on a real nats-server: once it returns, another connection's request finds the new subscription.

nats-py's flush() alone does not promise this (its PING can overtake a queued SUB); the race is narrow, so the
test repeats the pattern that tripped over it in the permissions test."""

from __future__ import annotations

import nats
from nats.aio.msg import Msg

from services.runtime.bus import settle

ROUNDS = 300


async def test_a_settled_subscription_is_routed_to_at_once(nats_url: str) -> None:
    server_side = await nats.connect(nats_url)
    caller = await nats.connect(nats_url)

    async def answer(msg: Msg) -> None:
        await msg.respond(msg.data)

    try:
        for i in range(ROUNDS):
            subject = f"test.settle.{i}"
            await server_side.subscribe(subject, queue="esper", cb=answer)
            await settle(server_side)
            reply = await caller.request(subject, str(i).encode(), timeout=5)  # no retry: NoRespondersError fails
            assert reply.data == str(i).encode()
    finally:
        await caller.close()
        await server_side.close()
