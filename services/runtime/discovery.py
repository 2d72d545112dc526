"""NATS micro-service discovery over `$SRV`: who is on the bus, with which version and device."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from nats.aio.client import Client


async def discover(
    nc: Client, verb: str = "INFO", timeout: float = 0.5, name: str | None = None
) -> list[dict[str, Any]]:
    """Collect every answer to `$SRV.<verb>[.<name>]` that arrives within `timeout` seconds."""
    inbox = nc.new_inbox()
    answers: list[dict[str, Any]] = []

    async def collect(msg: Any) -> None:
        try:
            answers.append(json.loads(msg.data))
        except ValueError:
            return

    sub = await nc.subscribe(inbox, cb=collect)
    subject = f"$SRV.{verb}" + (f".{name}" if name else "")
    await nc.publish(subject, b"", reply=inbox)
    await nc.flush()
    await asyncio.sleep(timeout)
    await sub.unsubscribe()
    return answers


def summarize(info: dict[str, Any]) -> dict[str, Any]:
    """One live service instance as `esper status` shows it.

    `ready`: every endpoint the instance serves is registered. A service answers discovery from the moment it joins
    the bus, before its endpoints exist, and the server has seen an endpoint by the time an INFO listing it arrives.
    """
    metadata = info.get("metadata") or {}
    endpoints = [e.get("subject", "") for e in info.get("endpoints") or []]
    try:
        expected = int(metadata.get("endpoints", 0))
    except ValueError:
        expected = 0
    return {
        "service": metadata.get("service", info.get("name", "")),
        "name": info.get("name", ""),
        "id": info.get("id", ""),
        "version": info.get("version", ""),
        "device": metadata.get("device", ""),
        "instance": metadata.get("instance", ""),
        "admin": f"http://{metadata.get('admin_host', '127.0.0.1')}:{metadata.get('admin_port', '')}",
        "endpoints": endpoints,
        "ready": len(endpoints) >= expected,
    }


async def live_services(nc: Client, timeout: float = 0.5) -> list[dict[str, Any]]:
    return sorted(
        (summarize(i) for i in await discover(nc, "INFO", timeout)), key=lambda s: (s["service"], s["instance"])
    )


async def wait_for_services(nc: Client, services: list[str], timeout: float = 60.0) -> list[dict[str, Any]]:
    """Wait until every named service has a ready instance; raise TimeoutError naming those still missing."""
    deadline = time.monotonic() + timeout
    while True:
        live = await live_services(nc, timeout=0.3)
        missing = sorted(set(services) - {s["service"] for s in live if s["ready"]})
        if not missing:
            return live
        if time.monotonic() > deadline:
            raise TimeoutError(f"services not on the bus after {timeout:.0f}s: {', '.join(missing)}")
        await asyncio.sleep(0.3)
