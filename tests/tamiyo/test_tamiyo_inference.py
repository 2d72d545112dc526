"""The serving kernel computes exactly what the training network computes for one decision step."""

from __future__ import annotations

import msgspec
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from leyline_schemas.decisions import HEAD_NAMES
from services.policy.network import FactoredRecurrentActorCritic, NetworkConfig, seeded_network
from services.tamiyo.inference import DecisionKernel


def _scrambled(config: NetworkConfig, seed: int) -> FactoredRecurrentActorCritic:
    """A network whose every weight is far from its initialisation, so no head or gate is near zero or identity."""
    network = seeded_network(config, seed)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for param in network.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * 0.3)
    return network.eval()


@settings(max_examples=25, deadline=None)
@given(
    num_slots=st.integers(1, 4),
    hidden=st.sampled_from([8, 16, 48]),
    head_hidden=st.sampled_from([8, 16, 32]),
    layers=st.integers(1, 2),
    seed=st.integers(0, 10_000),
)
def test_kernel_step_equals_the_network_forward(
    num_slots: int, hidden: int, head_hidden: int, layers: int, seed: int
) -> None:
    config = NetworkConfig(num_slots=num_slots, hidden=hidden, head_hidden=head_hidden, lstm_layers=layers)
    network = _scrambled(config, seed)
    kernel = DecisionKernel(network)
    generator = torch.Generator().manual_seed(seed)
    obs = torch.randn(config.obs_size, generator=generator)
    indices = torch.randint(-1, 13, (num_slots,), generator=generator)
    state = (
        torch.randn(layers, 1, hidden, generator=generator),
        torch.randn(layers, 1, hidden, generator=generator),
    )
    with torch.inference_mode():
        expected = network(obs.view(1, 1, -1), indices.view(1, 1, -1), state)
        logits, value, (h, c) = kernel.step(obs, indices, state)
    assert set(logits) == set(HEAD_NAMES)
    for head in HEAD_NAMES:
        torch.testing.assert_close(logits[head], expected.logits[head][0, 0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(value, expected.value[0, 0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(h, expected.state[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(c, expected.state[1], rtol=1e-4, atol=1e-5)


def test_kernel_is_a_snapshot_of_the_weights_it_was_built_from() -> None:
    config = NetworkConfig(num_slots=2, hidden=16, head_hidden=8)
    network = _scrambled(config, 3)
    kernel = DecisionKernel(network)
    obs, indices = torch.ones(config.obs_size), torch.tensor([0, -1])
    state = network.initial_state()
    before = kernel.step(obs, indices, state)[0]["op"].clone()
    with torch.no_grad():
        for param in network.parameters():
            param.mul_(2.0)
    torch.testing.assert_close(kernel.step(obs, indices, state)[0]["op"], before)


def test_a_wait_decision_computes_the_op_head_only_and_matches_the_full_decision() -> None:
    """Lazy heads: hierarchical sampling reads a head only when the op leaves it a choice."""
    from services.policy.normalization import ObservationNormalizer
    from services.policy.sampling import sample_action
    from services.tamiyo.learned import LearnedPolicy, request_generator
    from tests.tamiyo.policy_helpers import decision_request

    config = NetworkConfig(num_slots=2, hidden=16, head_hidden=8)
    network = _scrambled(config, 5)
    policy = LearnedPolicy(network, ObservationNormalizer(config.obs_size), policy_id="line", version=1)
    request = decision_request("line")
    wait_only = msgspec.structs.replace(request.masks, op=[i == 0 for i in range(len(request.masks.op))])
    obs, indices, state = policy._inputs(request)
    with torch.inference_mode():
        logits, _, _ = policy.kernel.step(obs, indices, state)
        sampled = sample_action(logits, wait_only, generator=request_generator(request, 1))
        assert sampled.action["op"] == 0 and logits.computed == ()  # a single legal op: not even the op head
        logits, _, _ = policy.kernel.step(obs, indices, state)
        sample_action(logits, request.masks, generator=request_generator(request, 1))
        assert "op" in logits.computed
        expected = network(obs.view(1, 1, -1), indices.view(1, 1, -1), state)
        for head in logits.computed:
            torch.testing.assert_close(logits[head], expected.logits[head][0, 0], rtol=1e-4, atol=1e-5)


def test_a_head_of_another_shape_is_refused_rather_than_packed_wrongly() -> None:
    network = seeded_network(NetworkConfig(num_slots=2, hidden=16, head_hidden=8), 0)
    network.heads["op"] = nn.Sequential(nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 6))
    with pytest.raises(ValueError, match="head 'op'"):
        DecisionKernel(network)
