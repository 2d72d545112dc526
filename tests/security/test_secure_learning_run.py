"""Every service does its whole job as its own NATS user: a learning run on a secure stack trains, Simic publishes
weights and pointers, Tamiyo loads them and acts with them, and no service ever meets a permission violation."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

import leyline_schemas as L
from leyline_schemas import routes
from services.policy.pointers import fetch_object, read_pointer
from services.policy.weights import sha256_hex
from services.runtime import jetstream
from services.runtime.bus import request
from services.runtime.discovery import wait_for_services
from tests.resilience.run_probes import (
    BackgroundStack,
    background_stack,
    bus,
    digits_learning_spec,
    permission_violations,
    step_records,
    wait_learner_drained,
    wait_run,
)

pytestmark = pytest.mark.integration

SERVICES = ("kasmina", "tamiyo", "simic", "tolaria")
N_ENVS, EPISODES, LENGTH = 2, 4, 4  # two rounds: round 1 acts with the version trained on round 0
SMALL_LEARNER = {
    "ESPER_POLICY_HIDDEN": "16",
    "ESPER_POLICY_HEAD_HIDDEN": "8",
    "ESPER_PPO_EPOCHS": "2",
    "ESPER_TORCH_THREADS": "1",
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundStack]:
    state = tmp_path_factory.mktemp("secure-learning")
    with background_stack(state, services=SERVICES, secure=True, extra_env=SMALL_LEARNER) as running:
        yield running


@pytest.mark.timeout(300)
def test_a_learning_run_on_the_secure_bus(stack: BackgroundStack) -> None:
    asyncio.run(_learning_run(stack))


async def _learning_run(stack: BackgroundStack) -> None:
    policy_id = "ppo-secure"
    spec = digits_learning_spec("secure-learning", policy_id, episodes=EPISODES, n_envs=N_ENVS, episode_length=LENGTH)
    nc, js = await bus(stack.settings("cli"))
    try:
        await wait_for_services(nc, list(SERVICES), timeout=120)
        await request(nc, routes.RUNS_START, spec, timeout=60)
        status = await wait_run(js, spec.run_id, timeout=240)
        audit = await wait_learner_drained(js, spec, timeout=60)
        pointer = await read_pointer(await jetstream.policies_bucket(js), policy_id)
        assert pointer is not None, "simic published no pointer"
        blob = await fetch_object(await jetstream.weights_store(js), pointer.object_name)
        records = await step_records(js, spec.run_id)
    finally:
        await nc.close()
    assert status.state is L.RunState.COMPLETED, status
    assert audit.published == EPISODES * LENGTH and audit.ack_pending == 0, audit
    assert pointer.version >= 1 and blob is not None and sha256_hex(blob) == pointer.sha256
    # Round 1 acted with weights Simic wrote and Tamiyo loaded, each under its own user.
    last_round = [r for r in records if r.episode >= N_ENVS]
    assert last_round and all(r.policy_version >= 1 for r in last_round), [r.policy_version for r in last_round]
    assert not permission_violations(stack), permission_violations(stack)[:5]
