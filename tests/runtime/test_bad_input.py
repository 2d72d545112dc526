"""Every endpoint answers garbage with an ErrorReply naming what is wrong, counts it, and keeps serving."""

from __future__ import annotations

import asyncio
import re
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest

import leyline_schemas as L
from leyline_schemas import routes
from services.kasmina.masks import compute_masks
from services.observation.features import observation_size
from services.runtime.bus import connect, request
from services.runtime.discovery import live_services
from services.runtime.settings import RuntimeSettings
from tests.service_processes import running_services

pytestmark = pytest.mark.integration

SLOTS = [L.SlotSpec(slot_id=f"r0c{i}", channels=16 * 2**i, order=i) for i in range(3)]
CONFIG = L.SlotConfig(topology=L.Topology.CNN, slots=SLOTS, host_param_count=24058)


def step_request(**changes: Any) -> L.StepRequest:
    request_ = L.StepRequest(
        run_id="bad-input",
        env_id=0,
        episode=0,
        epoch=3,
        policy_id="heuristic",
        slot_config=CONFIG,
        lifecycle=L.LifecycleConfig(max_epochs=20),
        report=L.EpochReport(
            epoch=3,
            max_epochs=20,
            train_loss=0.5,
            train_accuracy=80.0,
            val_loss=0.6,
            val_accuracy=78.0,
            val_loss_history=[0.9, 0.7, 0.6],
            val_accuracy_history=[60.0, 70.0, 78.0],
        ),
        slots=[L.SlotState(slot_id=s.slot_id) for s in SLOTS],
    )
    return msgspec.structs.replace(request_, **changes)


def decision_request(**changes: Any) -> L.DecisionRequest:
    slots = [L.SlotState(slot_id=s.slot_id) for s in SLOTS]
    masks = compute_masks(slots, CONFIG, L.LifecycleConfig(max_epochs=20), 0, epoch=1)
    request_ = L.DecisionRequest(
        run_id="bad-input",
        env_id=0,
        episode=0,
        epoch=3,
        policy_id="heuristic",
        topology=L.Topology.CNN,
        slot_ids=[s.slot_id for s in SLOTS],
        observation=[0.0] * observation_size(3),
        blueprint_indices=[-1, -1, -1],
        masks=masks,
        slots=slots,
    )
    return msgspec.structs.replace(request_, **changes)


def with_field(message: msgspec.Struct, path: list[Any], value: Any) -> bytes:
    raw = msgspec.msgpack.decode(L.encode(message))
    target = raw
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return msgspec.msgpack.encode(raw)


GARBAGE = [b"", b"\xc1", b"\x00\x01\x02 not msgpack at all", msgspec.msgpack.encode({"hello": "world"}), b"\x92\x01"]


@pytest.fixture(scope="module")
def services(nats_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_services(["kasmina", "tamiyo", "tolaria"], nats_url, tmp_path_factory.mktemp("logs")):
        yield nats_url


def _decodes(payload: bytes, request_type: type[L.Message]) -> bool:
    try:
        L.decode(payload, request_type)
    except L.LeylineDecodeError:
        return False
    return True


async def raw_request(nc: Any, subject: str, payload: bytes) -> L.ErrorReply:
    reply = await nc.request(subject, payload, timeout=15)
    assert reply.headers and "Nats-Service-Error" in reply.headers, f"{subject} accepted {payload[:20]!r}"
    return L.decode(reply.data, L.ErrorReply)


def bad_request_count(metrics_text: str) -> float:
    return sum(float(v) for v in re.findall(r"^esper_bad_requests_total\{[^}]*\} ([0-9.e+]+)$", metrics_text, re.M))


async def metrics_of(nc: Any, service: str) -> str:
    live = [s for s in await live_services(nc) if s["service"] == service]
    assert live, f"{service} is not on the bus"
    with urllib.request.urlopen(f"{live[0]['admin']}/metrics", timeout=10) as response:
        return str(response.read().decode())


def test_every_endpoint_survives_garbage_and_then_serves(services: str) -> None:
    asyncio.run(_garbage_then_valid(services))


async def _garbage_then_valid(url: str) -> None:
    nc = await connect(RuntimeSettings.from_env({"service": "test", "nats_url": url}))
    try:
        before = {s: bad_request_count(await metrics_of(nc, s)) for s in ("kasmina", "tamiyo", "tolaria")}
        endpoints = [
            L.subjects.KASMINA_STEP,
            L.subjects.TAMIYO_DECIDE,
            L.subjects.RUNS_START,
            L.subjects.RUNS_STATUS,
            L.subjects.RUNS_STOP,
            L.subjects.RUNS_RESUME,
            L.subjects.TAMIYO_POLICIES,
        ]
        assert set(endpoints) == set(routes.ROUTES), "every route gets the garbage-then-valid treatment"
        sent = {"kasmina": 0, "tamiyo": 0, "tolaria": 0}
        owner = {
            L.subjects.KASMINA_STEP: "kasmina",
            L.subjects.TAMIYO_DECIDE: "tamiyo",
            L.subjects.TAMIYO_POLICIES: "tamiyo",
        }
        for subject in endpoints:
            for payload in GARBAGE:
                if _decodes(payload, routes.ROUTES[subject].request):
                    continue  # e.g. {"hello": "world"} is a PolicyListRequest: every field has a default
                error = await raw_request(nc, subject, payload)
                assert error.code is L.ErrorCode.MALFORMED or error.code is L.ErrorCode.WRONG_TYPE
                assert error.subject == subject and error.message
                sent[owner.get(subject, "tolaria")] += 1
            # A well-formed message of the wrong type is named as such.
            error = await raw_request(
                nc,
                subject,
                L.encode(L.RunStopRequest(run_id="x"))
                if subject != L.subjects.RUNS_STOP
                else L.encode(L.RunStatusRequest(run_id="x")),
            )
            assert error.code is L.ErrorCode.WRONG_TYPE, error
            sent[owner.get(subject, "tolaria")] += 1

        # Out-of-range enums and inconsistent states name the field.
        error = await raw_request(nc, L.subjects.KASMINA_STEP, with_field(step_request(), ["slots", 1, "stage"], 5))
        assert error.code is L.ErrorCode.MALFORMED and error.field == "$.slots[1].stage"
        bad_alpha = step_request(
            slots=[
                L.SlotState(slot_id="r0c0"),
                L.SlotState(
                    slot_id="r0c1",
                    stage=L.SeedStage.BLENDING,
                    seed_id="s",
                    blueprint=L.BlueprintAction.NORM,
                    controller=L.AlphaControllerState(alpha=1.5, alpha_target=1.0, steps_total=5, steps_done=1),
                ),
                L.SlotState(slot_id="r0c2"),
            ]
        )
        error = await raw_request(nc, L.subjects.KASMINA_STEP, L.encode(bad_alpha))
        assert error.code is L.ErrorCode.INVALID_REQUEST and ("r0c1" in error.field or "slots[1]" in error.field), error
        unknown_slot = step_request(
            slots=[L.SlotState(slot_id="r9c9"), L.SlotState(slot_id="r0c1"), L.SlotState(slot_id="r0c2")]
        )
        error = await raw_request(nc, L.subjects.KASMINA_STEP, L.encode(unknown_slot))
        assert error.code is L.ErrorCode.INVALID_REQUEST and "slots" in error.field, error
        sent["kasmina"] += 3

        error = await raw_request(nc, L.subjects.TAMIYO_DECIDE, L.encode(decision_request(policy_id="no-such-policy")))
        assert error.code is L.ErrorCode.UNKNOWN_POLICY and error.field == "policy_id"
        nan_obs = decision_request(observation=[0.0] * 5 + [float("nan")] + [0.0] * (observation_size(3) - 6))
        error = await raw_request(nc, L.subjects.TAMIYO_DECIDE, L.encode(nan_obs))
        assert error.code is L.ErrorCode.INVALID_REQUEST and error.field == "observation[5]"
        empty_row = decision_request()
        empty_row = msgspec.structs.replace(empty_row, masks=msgspec.structs.replace(empty_row.masks, op=[False] * 6))
        error = await raw_request(nc, L.subjects.TAMIYO_DECIDE, L.encode(empty_row))
        assert error.code is L.ErrorCode.INVALID_REQUEST and error.field == "masks.op"
        sent["tamiyo"] += 3

        error = await raw_request(
            nc, L.subjects.RUNS_START, L.encode(L.RunSpec(run_id="bad-task", task="no_such_task"))
        )
        assert error.code is L.ErrorCode.INVALID_REQUEST and error.field == "task"
        error = await raw_request(nc, L.subjects.RUNS_STATUS, L.encode(L.RunStatusRequest(run_id="never-started")))
        assert error.code is L.ErrorCode.UNKNOWN_RUN
        sent["tolaria"] += 2

        # Still serving: valid requests succeed.
        directive = await request(nc, routes.KASMINA_STEP, step_request(), timeout=30)
        assert directive.outcome in (L.DecisionOutcome.WAITED, L.DecisionOutcome.APPLIED)
        assert directive.decision is not None and directive.decision.policy_id == "heuristic"
        assert len(directive.observation) == observation_size(3)
        decision = await request(nc, routes.TAMIYO_DECIDE, decision_request(policy_id="random"), timeout=30)
        assert decision.policy_id == "random"
        run_id = f"valid-{int(time.time())}"
        accepted = await request(
            nc,
            routes.RUNS_START,
            L.RunSpec(run_id=run_id, task="digits", episodes=1, episode_length=2, max_batches=2),
            timeout=60,
        )
        assert accepted.run_id == run_id and accepted.slot_ids == ["r0c0", "r0c1", "r0c2"]
        stopped = await request(nc, routes.RUNS_STOP, L.RunStopRequest(run_id=run_id, reason="test"), timeout=30)
        assert stopped.state in (L.RunState.STOPPED, L.RunState.COMPLETED)

        after = {s: bad_request_count(await metrics_of(nc, s)) for s in ("kasmina", "tamiyo", "tolaria")}
        for service, count in sent.items():
            assert after[service] - before[service] == count, (service, before, after, sent)
    finally:
        await nc.close()
