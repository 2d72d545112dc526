"""The decision round trip Tamiyo serves, timed over a live bus next to a raw NATS echo of the same bytes.

`esper bench decision` (services/operator/bench.py) starts the stack and hands this module the connection and a
StepRequest; here a fresh learned LSTM line is published and StepRequest → Kasmina → Tamiyo → StepDirective timed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from nats.aio.client import Client

import leyline_schemas as L
from leyline_schemas import routes
from services.policy.network import NetworkConfig, seeded_network
from services.policy.normalization import ObservationNormalizer
from services.policy.pointers import put_weights, write_pointer
from services.policy.weights import encode_policy
from services.runtime import jetstream
from services.runtime.bus import request
from services.runtime.timing import percentiles


async def _timed(fn: Callable[[], Awaitable[Any]], n: int) -> list[float]:
    """Milliseconds of each of `n` awaits of `fn`, after 10 untimed ones."""
    for _ in range(10):
        await fn()
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        await fn()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


async def decision_round_trips(nc: Client, template: L.StepRequest, iterations: int, hidden: int) -> dict[str, Any]:
    """p50/p99 of StepRequest → Kasmina → Tamiyo (a fresh learned LSTM line) → StepDirective, on one bus.

    Measured next to a raw nats-py request/reply echo of the same bytes in the same session, so the ratio shows
    what the services add on top of the bus itself. `template` gives the slots; it must hold 3 of them.
    """
    policy_id = f"bench-decision-{int(time.time())}"
    step = msgspec.structs.replace(template, policy_id=policy_id, run_id="bench-decision")
    config = NetworkConfig(num_slots=3, hidden=hidden, head_hidden=max(8, hidden // 2))
    blob = encode_policy(
        seeded_network(config, 0), ObservationNormalizer(config.obs_size), policy_id=policy_id, version=0
    )
    js = nc.jetstream()
    pointer = await put_weights(await jetstream.weights_store(js), policy_id, 0, blob)
    await write_pointer(await jetstream.policies_bucket(js), pointer)
    # Wait until Tamiyo serves the line (its first decisions may still be "policy unavailable").
    deadline = time.monotonic() + 60
    served = False
    while time.monotonic() < deadline:
        directive = await request(nc, routes.KASMINA_STEP, step, timeout=10)
        if directive.decision is not None and directive.decision.policy_id == policy_id:
            served = True
            break
        await asyncio.sleep(0.2)
    if not served:
        raise RuntimeError(f"Tamiyo did not serve {policy_id} within 60 s")

    async def decide() -> None:
        await request(nc, routes.KASMINA_STEP, step, timeout=10)

    payload = L.encode(step)
    echo_subject = f"esper.bench.echo.{policy_id}"

    async def respond(msg: Any) -> None:
        await msg.respond(msg.data)

    sub = await nc.subscribe(echo_subject, cb=respond)

    async def echo() -> None:
        await nc.request(echo_subject, payload, timeout=10)

    # Interleave the two in blocks so that a change in machine load hits both alike.
    decision_ms: list[float] = []
    echo_ms: list[float] = []
    block = max(1, iterations // 5)
    for _ in range(-(-iterations // block)):
        decision_ms += await _timed(decide, block)
        echo_ms += await _timed(echo, block)
    await sub.unsubscribe()
    d, e = percentiles(decision_ms), percentiles(echo_ms)
    return {
        "benchmark": "decision",
        "policy": f"learned LSTM, hidden {config.hidden}, head {config.head_hidden}, {config.num_slots} slots, CPU",
        "request_bytes": len(payload),
        "decision_ms": {k: v for k, v in d.items() if k != "n"},
        "echo_ms": {k: v for k, v in e.items() if k != "n"},
        "iterations": len(decision_ms),
        "p50_ratio": d["p50"] / e["p50"],
    }
