"""Batched decisions (`LearnedPolicy.decide_many`): each is the decision its request gets alone."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import msgspec
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import leyline_schemas as L
from services.policy.normalization import ObservationNormalizer
from services.tamiyo.batching import DecisionBatcher
from services.tamiyo.learned import LearnedPolicy, PolicyInputError
from services.tamiyo.policies import ServedPolicy
from services.tamiyo.service import TamiyoSettings
from tests.tamiyo.policy_helpers import decision_request, tiny_network

OBS = len(decision_request("line").observation)


def _policy() -> LearnedPolicy:
    network = tiny_network(seed=3)
    normalizer = ObservationNormalizer(network.config.obs_size)
    normalizer.update(torch.randn(64, network.config.obs_size, generator=torch.Generator().manual_seed(3)) * 2 + 1)
    return LearnedPolicy(network, normalizer, policy_id="line", version=5, value_scale=2.0)


POLICY = _policy()


def _close(batched: L.Decision, alone: L.Decision) -> None:
    """Same action, reason and version; the floats equal to float32 rounding of a batched matmul."""
    assert batched.action == alone.action
    assert (batched.policy_version, batched.reason) == (alone.policy_version, alone.reason)
    for field in L.HEAD_NAMES:
        assert getattr(batched.log_probs, field) == pytest.approx(getattr(alone.log_probs, field), abs=1e-5)
        assert getattr(batched.entropies, field) == pytest.approx(getattr(alone.entropies, field), abs=1e-5)
    assert batched.value == pytest.approx(alone.value, abs=1e-5)
    mine, theirs = L.unpack_float32(batched.policy_state), L.unpack_float32(alone.policy_state)
    assert mine == pytest.approx(theirs, abs=1e-5)


request_strategy = st.builds(
    lambda epoch, env, deterministic, scale, carried: (epoch, env, deterministic, scale, carried),
    st.integers(1, 40),
    st.integers(0, 15),
    st.booleans(),
    st.floats(-3.0, 3.0),
    st.booleans(),
)


@settings(max_examples=40, deadline=None)
@given(st.lists(request_strategy, min_size=1, max_size=16))
def test_every_batched_decision_is_the_one_its_request_gets_alone(
    specs: list[tuple[int, int, bool, float, bool]],
) -> None:
    requests = []
    for epoch, env, deterministic, scale, carried in specs:
        obs = [scale * ((i % 7) - 3) / 3 for i in range(OBS)]
        request = decision_request("line", epoch=epoch, env_id=env, deterministic=deterministic, observation=obs)
        if carried:  # a recurrent state from an earlier decision, not zeros
            request = msgspec.structs.replace(request, policy_state=POLICY.decide(request).policy_state)
        requests.append(request)
    batched = POLICY.decide_many(requests)
    assert len(batched) == len(requests)
    for decision, request in zip(batched, requests, strict=True):
        assert isinstance(decision, L.Decision)
        _close(decision, POLICY.decide(request))


def test_a_bad_request_in_a_batch_gets_its_own_error_and_the_others_are_decided() -> None:
    good = [decision_request("line", epoch=e) for e in (1, 2)]
    bad = decision_request("line", observation=[0.0] * 3)
    out = POLICY.decide_many([good[0], bad, good[1]])
    assert isinstance(out[1], PolicyInputError) and out[1].field == "observation"
    for decision, request in zip((out[0], out[2]), good, strict=True):
        assert isinstance(decision, L.Decision)
        _close(decision, POLICY.decide(request))
    assert POLICY.decide_many([]) == []


class _Counting:
    """The policy's batched path, recording the size of every call."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def __call__(self, requests: Sequence[L.DecisionRequest]) -> list[L.Decision | PolicyInputError]:
        self.sizes.append(len(requests))
        return POLICY.decide_many(requests)


def _served(decide_many: _Counting) -> ServedPolicy:
    return ServedPolicy("line", L.PolicyKind.LEARNED, 5, POLICY.decide, decide_many=decide_many)


def test_requests_arriving_together_are_decided_in_one_batch_and_a_lone_one_alone() -> None:
    calls = _Counting()
    served = _served(calls)
    batcher = DecisionBatcher(window_s=0.0, max_batch=64)
    requests = [decision_request("line", epoch=1 + i % 5, env_id=i) for i in range(16)]

    async def together() -> list[L.Decision]:
        return await asyncio.gather(*(batcher.decide(served, r) for r in requests))

    decisions = asyncio.run(together())
    assert calls.sizes == [16] and batcher.stats.largest == 16
    for decision, request in zip(decisions, requests, strict=True):
        _close(decision, POLICY.decide(request))
    lone = asyncio.run(batcher.decide(served, requests[3]))
    assert calls.sizes == [16], "a batch of one takes the policy's own decide"
    assert lone == POLICY.decide(requests[3])


def test_a_window_gathers_late_arrivals_max_batch_splits_and_a_refused_request_fails_alone() -> None:
    calls = _Counting()
    served = _served(calls)
    batcher = DecisionBatcher(window_s=0.001, max_batch=4)
    requests = [decision_request("line", env_id=i) for i in range(6)]
    requests[2] = decision_request("line", observation=[0.0] * 3)  # wrong size: PolicyInputError for it alone

    async def staggered() -> list[L.Decision | BaseException]:
        first = [asyncio.ensure_future(batcher.decide(served, r)) for r in requests[:2]]
        await asyncio.sleep(0)  # a later event-loop pass, within the window
        rest = [asyncio.ensure_future(batcher.decide(served, r)) for r in requests[2:]]
        return await asyncio.gather(*first, *rest, return_exceptions=True)

    out = asyncio.run(staggered())
    assert calls.sizes == [4, 2], "four fill a batch at once; the other two go when the window closes"
    assert isinstance(out[2], PolicyInputError) and out[2].field == "observation"
    for index in (0, 1, 3, 4, 5):
        decision = out[index]
        assert isinstance(decision, L.Decision)
        _close(decision, POLICY.decide(requests[index]))


def test_batching_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="0 to 1 ms"):
        DecisionBatcher(window_s=0.002)
    with pytest.raises(ValueError, match="max_batch"):
        DecisionBatcher(max_batch=0)
    with pytest.raises(ValueError, match="ESPER_DECISION_BATCH_WINDOW_MS"):
        TamiyoSettings.from_env(environ={"ESPER_DECISION_BATCH_WINDOW_MS": "5"})
    assert TamiyoSettings.from_env(environ={"ESPER_DECISION_MAX_BATCH": "1"}).decision_max_batch == 1
