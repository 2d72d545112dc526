"""Thousands of random, truncated, mutated, wrong-type and oversized messages to every request endpoint: each one
is answered with an ErrorReply or refused by the server's size limit, every service keeps running, /metrics
counts them, and valid requests succeed afterwards."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import msgspec
import nats.errors
import pytest
from nats.aio.client import Client

import leyline_schemas as L
from leyline_schemas import routes
from services.runtime.bus import request
from tests.resilience.run_probes import BackgroundStack, admin_url, background_stack, bus, metric_sum, scrape
from tests.runtime.test_bad_input import decision_request, step_request

pytestmark = pytest.mark.integration

SERVICES = ("kasmina", "tamiyo", "tolaria")
PER_ENDPOINT = 1000
SEED = 20261125

#: Each endpoint: the service that answers it, its request type and a valid request to mutate.
ENDPOINTS: dict[str, tuple[str, type[msgspec.Struct], msgspec.Struct]] = {
    L.subjects.KASMINA_STEP: ("kasmina", L.StepRequest, step_request()),
    L.subjects.TAMIYO_DECIDE: ("tamiyo", L.DecisionRequest, decision_request()),
    L.subjects.RUNS_START: ("tolaria", L.RunSpec, L.RunSpec(run_id="fuzz", episodes=1, episode_length=2)),
    L.subjects.RUNS_STATUS: ("tolaria", L.RunStatusRequest, L.RunStatusRequest(run_id="fuzz")),
    L.subjects.RUNS_STOP: ("tolaria", L.RunStopRequest, L.RunStopRequest(run_id="fuzz", reason="fuzz")),
    L.subjects.RUNS_RESUME: ("tolaria", L.RunResumeRequest, L.RunResumeRequest(run_id="fuzz", by="fuzz")),
    L.subjects.TAMIYO_POLICIES: ("tamiyo", L.PolicyListRequest, L.PolicyListRequest(policy_id="heuristic")),
}


def test_every_route_is_fuzzed() -> None:
    """An endpoint added to leyline_schemas.routes is fuzzed here, or this fails."""
    assert set(ENDPOINTS) == set(routes.ROUTES)


def _leaves(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    if isinstance(value, dict) and value:
        for key, item in value.items():
            yield from _leaves(item, (*path, key))
    elif isinstance(value, list) and value:
        for index, item in enumerate(value):
            yield from _leaves(item, (*path, index))
    else:
        yield path, value


def _other_type(rng: random.Random, value: Any) -> Any:
    """A value whose MessagePack type differs from `value`'s."""
    choices: list[Any] = ["x" * rng.randint(0, 40), -(2**63), 2**64 - 1, 3.5, True, [1, "a"], {"k": [None]}, b"\x00"]
    return rng.choice([c for c in choices if type(c) is not type(value)])


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(7 if depth < 3 else 5)
    if kind == 0:
        return rng.randint(-(2**40), 2**40)
    if kind == 1:
        return rng.random() * 1e6
    if kind == 2:
        return "".join(rng.choice("abc.$>*\x00é") for _ in range(rng.randint(0, 20)))
    if kind == 3:
        return rng.randbytes(rng.randint(0, 30))
    if kind == 4:
        return rng.choice([None, True, False])
    if kind == 5:
        return [_random_value(rng, depth + 1) for _ in range(rng.randint(0, 5))]
    return {str(_random_value(rng, depth + 1)): _random_value(rng, depth + 1) for _ in range(rng.randint(0, 5))}


def fuzz_payloads(rng: random.Random, template: msgspec.Struct) -> Iterator[tuple[str, bytes]]:
    """An endless mix of bad payloads derived from a valid request, each tagged with how it was made."""
    valid = L.encode(template)
    raw = msgspec.msgpack.decode(valid)
    leaves = list(_leaves(raw))
    fields = list(raw)
    others = [t for _, _, t in ENDPOINTS.values() if type(t) is not type(template)]
    makers: dict[str, Callable[[], bytes]] = {
        "random_bytes": lambda: rng.randbytes(rng.choice([0, 1, 2, 7, 64, 512, 4096])),
        "truncated": lambda: valid[: rng.randrange(0, len(valid))],
        "bit_flips": lambda: bytes(b ^ (1 << rng.randrange(8)) if rng.random() < 0.02 else b for b in valid),
        "wrong_field_type": lambda: _mutated(rng, raw, leaves),
        "other_message": lambda: L.encode(rng.choice(others)),
        "random_structure": lambda: msgspec.msgpack.encode(
            {rng.choice([*fields, "?"]): _random_value(rng) for _ in range(rng.randint(0, 8))}
            if rng.random() < 0.7
            else _random_value(rng)
        ),
    }
    names = list(makers)
    while True:
        kind = rng.choice(names)
        yield kind, makers[kind]()


def _mutated(rng: random.Random, raw: dict[str, Any], leaves: list[tuple[tuple[Any, ...], Any]]) -> bytes:
    copy = msgspec.msgpack.decode(msgspec.msgpack.encode(raw))
    path, value = rng.choice(leaves)
    target = copy
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = _other_type(rng, value)
    return msgspec.msgpack.encode(copy)


def rejected_locally(payload: bytes, request_type: type[msgspec.Struct]) -> bool:
    """True when the services' own strict decoder refuses the payload (so an ErrorReply is the right answer)."""
    try:
        L.decode(payload, request_type)
    except L.LeylineDecodeError:
        return True
    return False


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundStack]:
    with background_stack(tmp_path_factory.mktemp("fuzz"), services=SERVICES, secure=True) as running:
        yield running


@pytest.mark.timeout(240)
def test_fuzzed_endpoints_answer_errors_and_keep_serving(stack: BackgroundStack) -> None:
    asyncio.run(_fuzz(stack))


async def _fuzz(stack: BackgroundStack) -> None:
    rng = random.Random(SEED)
    pids = {name: stack.pid(name) for name in SERVICES}
    nc, _ = await bus(stack.settings())
    try:
        admins = {name: await admin_url(nc, name) for name in SERVICES}
        before = {name: metric_sum(scrape(url), "esper_bad_requests_total") for name, url in admins.items()}

        sent: Counter[str] = Counter()
        kinds: Counter[str] = Counter()
        codes: Counter[str] = Counter()
        limit = asyncio.Semaphore(64)

        async def send(subject: str, payload: bytes) -> None:
            async with limit:
                reply = await nc.request(subject, payload, timeout=30)
            assert reply.headers and "Nats-Service-Error" in reply.headers, f"{subject} accepted {payload[:40]!r}"
            error = L.decode(reply.data, L.ErrorReply)
            assert error.subject == subject and error.message, error
            codes[error.code.value] += 1

        batch = []
        for subject, (service, request_type, template) in ENDPOINTS.items():
            payloads = fuzz_payloads(rng, template)
            kept = 0
            while kept < PER_ENDPOINT:
                kind, payload = next(payloads)
                if not rejected_locally(payload, request_type):
                    continue
                kept += 1
                kinds[kind] += 1
                sent[service] += 1
                batch.append(send(subject, payload))
        await asyncio.gather(*batch)

        oversized = 0
        for subject in ENDPOINTS:
            # A well-behaved client refuses to send past the server's limit...
            with pytest.raises(nats.errors.MaxPayloadError):
                await nc.request(subject, b"\x00" * (nc.max_payload + 1), timeout=5)
            # ...and the server refuses a client that does not check.
            assert "Maximum Payload Violation" in await _raw_oversized_publish(stack, subject, nc.max_payload + 1)
            oversized += 2

        after = {name: metric_sum(scrape(url), "esper_bad_requests_total") for name, url in admins.items()}
        await _valid_requests_succeed(nc)
    finally:
        await nc.close()

    total = sum(sent.values())
    print(f"\nfuzz: {total} bad requests ({dict(kinds)}) -> error codes {dict(codes)}; {oversized} oversized refused")
    assert total == PER_ENDPOINT * len(ENDPOINTS)
    assert set(codes) <= {"malformed", "wrong_type"}, f"a decoder failure escaped as another error: {codes}"
    for name in SERVICES:
        assert after[name] - before[name] == sent[name], (name, before, after, sent)
        assert stack.pid(name) == pids[name] and stack.restarts(name) == 0, f"{name} exited during the fuzz"


async def _raw_oversized_publish(stack: BackgroundStack, subject: str, size: int) -> str:
    """Announce an oversized PUB on a raw connection, as a client that ignores max_payload would; the server's
    answer (it refuses before reading the payload)."""
    settings = stack.settings()
    host, port = settings.nats_url.removeprefix("nats://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        await reader.readline()  # INFO
        connect = {"verbose": False, "pedantic": False, "user": settings.nats_user, "pass": settings.nats_password}
        writer.write(f"CONNECT {json.dumps(connect)}\r\nPUB {subject} _INBOX.cli.raw {size}\r\n".encode())
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(4096), timeout=10)
    finally:
        writer.close()
    return answer.decode(errors="replace")


async def _valid_requests_succeed(nc: Client) -> None:
    directive = await request(nc, routes.KASMINA_STEP, step_request(), timeout=30)
    assert directive.decision is not None and directive.decision.policy_id == "heuristic"
    decision = await request(nc, routes.TAMIYO_DECIDE, decision_request(policy_id="random"))
    assert decision.policy_id == "random"
    run_id = f"after-fuzz-{uuid.uuid4().hex[:6]}"
    spec = L.RunSpec(run_id=run_id, task="digits", episodes=1, episode_length=2, max_batches=2)
    accepted = await request(nc, routes.RUNS_START, spec, timeout=60)
    assert accepted.run_id == run_id
    stopped = await request(nc, routes.RUNS_STOP, L.RunStopRequest(run_id=run_id, reason="fuzz"))
    assert stopped.state in (L.RunState.STOPPED, L.RunState.COMPLETED)
    if stopped.state is L.RunState.STOPPED:
        resumed = await request(nc, routes.RUNS_RESUME, L.RunResumeRequest(run_id=run_id, by="fuzz"))
        assert resumed.state is L.RunState.RUNNING
        await request(nc, routes.RUNS_STOP, L.RunStopRequest(run_id=run_id, reason="fuzz again"))
