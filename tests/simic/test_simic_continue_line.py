"""Continuing a trained line in a new run (`esper run --resume-line`): the first new version is latest + 1, trained on
from the stored weights, optimiser and normalisers of the checkpoint that produced the latest (a real nats-server)."""

from __future__ import annotations

import asyncio
import uuid

import msgspec
import torch
from nats.aio.client import Client

import leyline_schemas as L
from services.policy.pointers import fetch_object, learned_pointer, read_pointer, write_pointer
from services.runtime import jetstream
from services.runtime.bus import TelemetryPublisher, connect
from services.runtime.settings import RuntimeSettings
from services.simic.learner import ArmLearner, checkpoint_object
from services.simic.versions import VersionPublisher
from tests.simic.simic_helpers import learner_config, play_round, run_spec


async def _publisher(url: str) -> tuple[VersionPublisher, Client]:
    nc = await connect(RuntimeSettings.from_env({"service": "test", "nats_url": url}))
    js = nc.jetstream()
    await jetstream.bootstrap(js)
    publisher = VersionPublisher(
        await jetstream.weights_store(js), await jetstream.policies_bucket(js), TelemetryPublisher(js, "test")
    )
    return publisher, nc


def _spec(run_id: str, line: str, from_version: int = 0) -> L.RunSpec:
    base = run_spec(n_envs=2, rounds=1)
    arm = msgspec.structs.replace(base.arms[0], policy_id=line, from_version=from_version)
    return msgspec.structs.replace(base, run_id=run_id, arms=[arm])


async def _train_round(publisher: VersionPublisher, spec: L.RunSpec, learner: ArmLearner) -> int:
    for scored in play_round(learner, 0):
        learner.accept(scored)
    update = learner.update()
    await publisher.commit(spec, learner, update)
    return update.version


def _same_state(a: ArmLearner, b: ArmLearner) -> None:
    for (name, x), (_, y) in zip(a.network.state_dict().items(), b.network.state_dict().items(), strict=True):
        assert torch.equal(x, y), name
    for x, y in zip(a.network.parameters(), b.network.parameters(), strict=True):
        sa, sb = a.optimizer.state.get(x, {}), b.optimizer.state.get(y, {})
        assert set(sa) == set(sb) and all(torch.equal(torch.as_tensor(sa[k]), torch.as_tensor(sb[k])) for k in sa)
    assert b.optimizer.state, "the optimiser's moments come along"
    for mine, theirs in (
        (a.obs_normalizer.tensors(), b.obs_normalizer.tensors()),
        (a.reward_normalizer.tensors(), b.reward_normalizer.tensors()),
        (a.value_normalizer.tensors(), b.value_normalizer.tensors()),
    ):
        assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert a.updates_done == b.updates_done


def test_a_continued_line_resumes_from_the_checkpoint_of_its_latest_version(nats_url: str) -> None:
    async def go() -> None:
        publisher, nc = await _publisher(nats_url)
        line = f"cont-{uuid.uuid4().hex[:8]}"
        config = learner_config()
        first = _spec(f"first-{uuid.uuid4().hex[:6]}", line)
        trained = await publisher.load_arm(first, 0, config)  # a fresh line: v0 published
        assert await _train_round(publisher, first, trained) == 1
        pointer = await read_pointer(publisher.policies, line)
        assert pointer is not None and pointer.version == 1
        assert pointer.checkpoint == checkpoint_object(first.run_id, "arm0")

        second = _spec(f"second-{uuid.uuid4().hex[:6]}", line, from_version=1)
        resumed = await publisher.load_arm(second, 0, config)
        assert (resumed.version, resumed.rounds_done, resumed.base_version) == (1, 0, 1)
        _same_state(trained, resumed)
        assert await _train_round(publisher, second, resumed) == 2, "the first new version is latest + 1"
        pointer = await read_pointer(publisher.policies, line)
        assert pointer is not None and pointer.version == 2
        assert pointer.checkpoint == checkpoint_object(second.run_id, "arm0")
        await nc.close()

    asyncio.run(go())


def test_a_repointed_version_without_a_checkpoint_continues_from_its_weights(nats_url: str) -> None:
    async def go() -> None:
        publisher, nc = await _publisher(nats_url)
        line = f"repointed-{uuid.uuid4().hex[:8]}"
        config = learner_config()
        first = _spec(f"first-{uuid.uuid4().hex[:6]}", line)
        trained = await publisher.load_arm(first, 0, config)
        await _train_round(publisher, first, trained)
        blob = await fetch_object(publisher.store, L.subjects.weights_object(line, 1))
        assert blob is not None
        await write_pointer(publisher.policies, learned_pointer(line, 1, blob))  # as `esper policy use` writes it

        resumed = await publisher.load_arm(_spec(f"second-{uuid.uuid4().hex[:6]}", line, from_version=1), 0, config)
        assert resumed.version == 1
        for (name, x), (_, y) in zip(
            trained.network.state_dict().items(), resumed.network.state_dict().items(), strict=True
        ):
            assert torch.equal(x, y), name
        assert torch.equal(
            trained.obs_normalizer.tensors()["obs_norm.mean"], resumed.obs_normalizer.tensors()["obs_norm.mean"]
        )
        assert not resumed.optimizer.state, "without a checkpoint the optimiser starts afresh"
        await nc.close()

    asyncio.run(go())
