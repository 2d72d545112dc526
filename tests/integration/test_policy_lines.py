"""Learned policy lines on a real Tamiyo process: repointing with `esper policy use`, listing, refusing bad blobs.

A bad pointer (wrong digest, or a pickle planted as weights) must leave the old version serving and announce
PolicyLoadFailed; the planted pickle must never be unpickled.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import pickle
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

import leyline_schemas as L
from leyline_schemas import routes
from services.policy.pointers import write_pointer
from services.runtime import jetstream
from services.runtime.bus import connect, request
from services.runtime.settings import RuntimeSettings
from tests.service_processes import running_services
from tests.tamiyo.policy_helpers import decision_request, policy_blob, publish_version

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tamiyo(nats_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_services(["tamiyo"], nats_url, tmp_path_factory.mktemp("tamiyo-logs"), ESPER_TORCH_THREADS="1"):
        yield nats_url


async def _client(url: str):  # type: ignore[no-untyped-def]
    return await connect(RuntimeSettings.from_env({"service": "test", "nats_url": url}))


async def _version_served(nc, policy_id: str, want: int, timeout: float = 20.0) -> L.Decision:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        try:
            decision = await request(nc, routes.TAMIYO_DECIDE, decision_request(policy_id), timeout=2)
            if decision.policy_version == want:
                return decision
        except L.RemoteError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{policy_id} v{want} never served")
        await asyncio.sleep(0.2)


def _esper(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.operator.cli", *args],
        cwd=REPO,
        env={k: v for k, v in os.environ.items() if k != "ESPER_NATS_URL"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_policy_use_repoints_a_line_and_list_shows_who_serves_it(tamiyo: str) -> None:
    policy_id = f"line-{uuid.uuid4().hex[:6]}"

    async def publish() -> None:
        nc = await _client(tamiyo)
        try:
            js = nc.jetstream()
            await publish_version(js, policy_id, 0, policy_blob(policy_id, 0, seed=1))
            await publish_version(js, policy_id, 1, policy_blob(policy_id, 1, seed=2))
            decision = await _version_served(nc, policy_id, 1)
            assert decision.policy_id == policy_id and len(decision.policy_state) == 4 * 2 * 16
        finally:
            await nc.close()

    asyncio.run(publish())
    used = _esper("policy", "use", policy_id, "0", "--nats", tamiyo, "--json")
    assert used.returncode == 0, used.stderr
    assert json.loads(used.stdout)["version"] == 0

    async def served_zero() -> None:
        nc = await _client(tamiyo)
        try:
            await _version_served(nc, policy_id, 0)
        finally:
            await nc.close()

    asyncio.run(served_zero())
    listed = _esper("policy", "list", "--json", "--nats", tamiyo, "--wait", "1.0")
    assert listed.returncode == 0, listed.stderr
    row = next(r for r in json.loads(listed.stdout) if r["policy_id"] == policy_id)
    assert row["kind"] == "learned" and row["version"] == 0 and row["stored_versions"] == [0, 1]
    assert [s["version"] for s in row["served_by"]] == [0], row
    assert row["served_by"][0]["sha256"] == row["sha256"]
    missing = _esper("policy", "use", policy_id, "7", "--nats", tamiyo)
    assert missing.returncode == 1 and "no version 7" in missing.stderr


def test_a_request_for_a_newer_version_is_decided_by_it_the_moment_its_pointer_exists(tamiyo: str) -> None:
    """Strict on-policy: a step that needs v1 is never decided by v0, even if it arrives as v1's pointer is written
    (Tamiyo loads on demand, or awaits the load in flight); a version no pointer names is refused as UNAVAILABLE."""
    policy_id = f"fresh-{uuid.uuid4().hex[:6]}"

    async def scenario() -> tuple[list[int], L.ErrorReply]:
        nc = await _client(tamiyo)
        try:
            js = nc.jetstream()
            await publish_version(js, policy_id, 0, policy_blob(policy_id, 0, seed=1))
            await _version_served(nc, policy_id, 0)
            needs_one = msgspec.structs.replace(decision_request(policy_id), min_policy_version=1)
            await publish_version(js, policy_id, 1, policy_blob(policy_id, 1, seed=2))
            versions = [
                (await request(nc, routes.TAMIYO_DECIDE, needs_one, timeout=10)).policy_version
                for _ in range(3)
            ]
            needs_five = msgspec.structs.replace(needs_one, min_policy_version=5)
            with pytest.raises(L.RemoteError) as refused:
                await request(nc, routes.TAMIYO_DECIDE, needs_five, timeout=10)
            return versions, refused.value.reply
        finally:
            await nc.close()

    versions, refusal = asyncio.run(scenario())
    assert versions == [1, 1, 1]
    assert refusal.code is L.ErrorCode.UNAVAILABLE and refusal.field == "min_policy_version", refusal
    assert "v5 is not loaded yet (serving v1)" in refusal.message


class _Planted:
    """Unpickling this would create `marker`: proof that Tamiyo never unpickles what it is given."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (open, (self.marker, "w"))


def test_bad_blobs_keep_the_old_version_and_announce_policy_load_failed(tamiyo: str, tmp_path: Path) -> None:
    policy_id = f"guarded-{uuid.uuid4().hex[:6]}"
    marker = tmp_path / "unpickled"

    async def scenario() -> list[L.PolicyLoadFailed]:
        nc = await _client(tamiyo)
        failures: list[L.PolicyLoadFailed] = []

        async def on_event(msg) -> None:  # type: ignore[no-untyped-def]
            payload = L.decode(msg.data, L.TelemetryEvent).payload
            if isinstance(payload, L.PolicyLoadFailed) and payload.policy_id == policy_id:
                failures.append(payload)

        sub = await nc.subscribe(L.subjects.telemetry_subject("_system", "policy_load_failed"), cb=on_event)
        try:
            js = nc.jetstream()
            good = await publish_version(js, policy_id, 0, policy_blob(policy_id, 0))
            await _version_served(nc, policy_id, 0)
            policies = await jetstream.policies_bucket(js)
            store = await jetstream.weights_store(js)

            # A valid blob under a pointer whose digest does not match.
            wrong = policy_blob(policy_id, 1, seed=5)
            await store.put(L.subjects.weights_object(policy_id, 1), wrong)
            await write_pointer(
                policies, msgspec.structs.replace(good, version=1, object_name=L.subjects.weights_object(policy_id, 1))
            )
            # A pickle planted as weights, under a pointer with its CORRECT digest.
            planted = pickle.dumps(_Planted(str(marker)))
            pointer = msgspec.structs.replace(
                good,
                version=2,
                object_name=L.subjects.weights_object(policy_id, 2),
                sha256=hashlib.sha256(planted).hexdigest(),
            )
            await store.put(pointer.object_name, planted)
            await write_pointer(policies, pointer)

            deadline = time.monotonic() + 20
            while len(failures) < 2 and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            decision = await request(nc, routes.TAMIYO_DECIDE, decision_request(policy_id))
            assert decision.policy_version == 0, "the old version must keep serving"
            return failures
        finally:
            await sub.unsubscribe()
            await nc.close()

    failures = asyncio.run(scenario())
    assert [f.version for f in failures] == [1, 2], failures
    assert "sha256 mismatch" in failures[0].reason
    assert "safetensors" in failures[1].reason
    assert not marker.exists(), "the planted pickle was unpickled"


def test_bad_requests_for_a_learned_line_are_typed_errors_naming_the_field(tamiyo: str) -> None:
    policy_id = f"strict-{uuid.uuid4().hex[:6]}"

    async def scenario() -> dict[str, L.ErrorReply]:
        nc = await _client(tamiyo)
        try:
            await publish_version(nc.jetstream(), policy_id, 0, policy_blob(policy_id, 0))
            await _version_served(nc, policy_id, 0)
            cases = {
                "policy_state": decision_request(policy_id, policy_state=b"\x00" * 12),
                "unknown": decision_request(f"nobody-{uuid.uuid4().hex[:6]}"),
                "nan": decision_request(policy_id, observation=[float("nan")] * 85),
                "slots": decision_request(policy_id, num_slots=1),
                "mask": msgspec.structs.replace(
                    decision_request(policy_id),
                    masks=msgspec.structs.replace(decision_request(policy_id).masks, style=[False] * 4),
                ),
            }
            replies = {}
            for name, bad in cases.items():
                with pytest.raises(L.RemoteError) as caught:
                    await request(nc, routes.TAMIYO_DECIDE, bad, timeout=5)
                replies[name] = caught.value.reply
            return replies
        finally:
            await nc.close()

    replies = asyncio.run(scenario())
    assert replies["policy_state"].code is L.ErrorCode.INVALID_REQUEST
    assert replies["policy_state"].field == "policy_state" and "policy_state" in replies["policy_state"].message
    assert replies["unknown"].code is L.ErrorCode.UNKNOWN_POLICY and replies["unknown"].field == "policy_id"
    assert replies["nan"].field.startswith("observation")
    assert replies["slots"].field == "slot_ids"
    assert replies["mask"].field == "masks.style" and "no legal action" in replies["mask"].message
