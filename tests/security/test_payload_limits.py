"""max_payload on a real nats-server: a message at the limit is delivered, one byte more is refused by the client
library and, from a client that does not check, by the server itself."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import nats.errors
import pytest
from nats.aio.msg import Msg

from services.operator.embedded import DEFAULT_MAX_PAYLOAD, EmbeddedNats, free_port, render_config, start_nats
from services.runtime.bus import connect
from services.runtime.settings import RuntimeSettings

LIMIT = 64 * 1024
SUBJECT = "esper.v1.kasmina.step"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedNats]:
    running = start_nats(tmp_path_factory.mktemp("limited-nats"), port=free_port(), max_payload=LIMIT)
    try:
        yield running
    finally:
        running.stop()


def test_the_limit_is_rendered_into_the_config() -> None:
    config = render_config(host="127.0.0.1", port=4222, store_dir=Path("/js"))
    assert re.search(rf"^max_payload: {DEFAULT_MAX_PAYLOAD}$", config, re.M)


async def test_a_request_over_the_limit_is_refused(server: EmbeddedNats) -> None:
    nc = await connect(RuntimeSettings.from_env({"service": "test", "nats_url": server.url}, environ={}))
    try:
        assert nc.max_payload == LIMIT
        received: list[int] = []

        async def echo(msg: Msg) -> None:
            received.append(len(msg.data))
            await msg.respond(b"ok")

        await nc.subscribe(SUBJECT, cb=echo)
        reply = await nc.request(SUBJECT, b"\x00" * LIMIT, timeout=5)
        assert reply.data == b"ok" and received == [LIMIT]
        with pytest.raises(nats.errors.MaxPayloadError):
            await nc.request(SUBJECT, b"\x00" * (LIMIT + 1), timeout=5)
        assert received == [LIMIT]
    finally:
        await nc.close()


async def test_the_server_refuses_an_oversized_publish_from_a_raw_client(server: EmbeddedNats) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        assert (await reader.readline()).startswith(b"INFO ")
        writer.write(f'CONNECT {{"verbose":false}}\r\nPUB {SUBJECT} {LIMIT + 1}\r\n'.encode())
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(4096), timeout=10)
        assert b"Maximum Payload Violation" in answer
        # The server closes the connection rather than read the oversized body.
        assert await asyncio.wait_for(reader.read(), timeout=10) == b""
    finally:
        writer.close()
