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


async def _serve_fresh_line(nc: Client, step: L.StepRequest, hidden: int) -> NetworkConfig:
    """Publish a freshly initialised LSTM line under `step.policy_id` and wait until Tamiyo serves it."""
    policy_id = step.policy_id
    config = NetworkConfig(num_slots=3, hidden=hidden, head_hidden=max(8, hidden // 2))
    blob = encode_policy(
        seeded_network(config, 0), ObservationNormalizer(config.obs_size), policy_id=policy_id, version=0
    )
    js = nc.jetstream()
    pointer = await put_weights(await jetstream.weights_store(js), policy_id, 0, blob)
    await write_pointer(await jetstream.policies_bucket(js), pointer)
    # Wait until Tamiyo serves the line (its first decisions may still be "policy unavailable").
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        directive = await request(nc, routes.KASMINA_STEP, step, timeout=10)
        if directive.decision is not None and directive.decision.policy_id == policy_id:
            return config
        await asyncio.sleep(0.2)
    raise RuntimeError(f"Tamiyo did not serve {policy_id} within 60 s")


async def decision_round_trips(nc: Client, template: L.StepRequest, iterations: int, hidden: int) -> dict[str, Any]:
    """p50/p99 of StepRequest → Kasmina → Tamiyo (a fresh learned LSTM line) → StepDirective, on one bus.

    Measured next to a raw nats-py request/reply echo of the same bytes in the same session, so the ratio shows
    what the services add on top of the bus itself. `template` gives the slots; it must hold 3 of them.
    """
    policy_id = f"bench-decision-{int(time.time())}"
    step = msgspec.structs.replace(template, policy_id=policy_id, run_id="bench-decision")
    config = await _serve_fresh_line(nc, step, hidden)

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


async def concurrent_decisions(
    nc: Client, template: L.StepRequest, decision: L.DecisionRequest, concurrency: int, rounds: int, hidden: int
) -> dict[str, Any]:
    """Tamiyo's decisions per second asked one at a time, and asked by `concurrency` envs at once, on one bus.

    `decision` is the DecisionRequest Kasmina builds for `template`; each env sends it under its own env id (its
    own generator). Rounds of `concurrency` requests are sent together and all awaited. Latency is per request.
    """
    policy_id = f"bench-batching-{int(time.time())}"
    step = msgspec.structs.replace(template, policy_id=policy_id, run_id="bench-batching")
    config = await _serve_fresh_line(nc, step, hidden)
    base = msgspec.structs.replace(decision, policy_id=policy_id, run_id="bench-batching")
    requests = [msgspec.structs.replace(base, env_id=env) for env in range(concurrency)]

    async def timed(req: L.DecisionRequest) -> float:
        started = time.perf_counter()
        await request(nc, routes.TAMIYO_DECIDE, req, timeout=10)
        return (time.perf_counter() - started) * 1000

    for req in requests:  # warm-up
        await timed(req)
    started = time.perf_counter()
    alone = [await timed(requests[i % concurrency]) for i in range(rounds * concurrency)]
    alone_s = time.perf_counter() - started
    together: list[float] = []
    started = time.perf_counter()
    for _ in range(rounds):
        together += await asyncio.gather(*(timed(req) for req in requests))
    together_s = time.perf_counter() - started
    return {
        "policy": f"learned LSTM, hidden {config.hidden}, head {config.head_hidden}, {config.num_slots} slots, CPU",
        "one_at_a_time": {"per_second": len(alone) / alone_s, "latency_ms": percentiles(alone)},
        "together": {"per_second": len(together) / together_s, "latency_ms": percentiles(together)},
    }


def in_process_batching(
    decision: L.DecisionRequest, concurrency: int, hidden: int, repeats: int = 30
) -> dict[str, Any]:
    """`concurrency` requests decided one by one and by one `decide_many`, alternating, in this process (1 thread):
    what the batched forward itself buys, without the bus."""
    import statistics

    import torch

    from services.tamiyo.learned import LearnedPolicy

    config = NetworkConfig(num_slots=3, hidden=hidden, head_hidden=max(8, hidden // 2))
    policy = LearnedPolicy(
        seeded_network(config, 0), ObservationNormalizer(config.obs_size), policy_id="bench", version=0
    )
    requests = [msgspec.structs.replace(decision, policy_id="bench", env_id=env) for env in range(concurrency)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        alone, batched = [], []
        for _ in range(repeats):
            started = time.perf_counter()
            for req in requests:
                policy.decide(req)
            alone.append(time.perf_counter() - started)
            started = time.perf_counter()
            policy.decide_many(requests)
            batched.append(time.perf_counter() - started)
    finally:
        torch.set_num_threads(threads)
    one_by_one, together = statistics.median(alone), statistics.median(batched)
    return {"one_by_one_ms": 1000 * one_by_one, "batched_ms": 1000 * together, "ratio": one_by_one / together}
