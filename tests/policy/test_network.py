"""FactoredRecurrentActorCritic (§4): sizes, initialisation, the residual LSTM, detached auxiliary heads (12.12)."""

from __future__ import annotations

import math

import torch

from leyline_schemas import BLUEPRINT_NULL_INDEX, HEAD_NAMES
from services.policy.network import FactoredRecurrentActorCritic, NetworkConfig, ResidualLSTM, seeded_network


def test_reference_sizes_for_three_slots() -> None:
    config = NetworkConfig(num_slots=3)
    network = FactoredRecurrentActorCritic(config)
    # kasmina2 phase 0 (invariant 32): 25 + 32·3 features, 8 ops, 14 blueprints with a 15-row embedding.
    assert config.obs_size == 121
    assert network.feature_net[0].in_features == 133  # 121 + 3 slots × 4-dim blueprint embedding (§10.1)
    assert network.embedding.table.num_embeddings == 15 == BLUEPRINT_NULL_INDEX + 1
    out = network(torch.zeros(2, 5, 121), torch.full((2, 5, 3), -1), network.initial_state(2))
    sizes = {head: logits.shape[-1] for head, logits in out.logits.items()}
    assert sizes == {
        "slot": 3,
        "blueprint": 14,
        "style": 4,
        "tempo": 3,
        "alpha_target": 3,
        "alpha_speed": 4,
        "alpha_curve": 5,
        "op": 8,
    }
    assert out.value.shape == (2, 5) and out.state[0].shape == (1, 2, 512)
    assert network.contributions(out.features).shape == (2, 5, 3)
    assert network.q_values(out.features).shape == (2, 5, 8)
    assert network.q_head[0].in_features == 512 + 8


def test_initialisation_follows_the_reference() -> None:
    network = seeded_network(NetworkConfig(num_slots=2, hidden=32, head_hidden=16, lstm_layers=2), seed=3)
    for lstm in network.lstm.lstms:
        h = 32
        for bias in (lstm.bias_ih_l0.detach(), lstm.bias_hh_l0.detach()):
            # §4.3: the forget quarter of BOTH bias vectors is 1 + ln(L), the rest is zero.
            assert torch.allclose(bias[h : 2 * h], torch.full((h,), 1.0 + math.log(2)))
            assert float(bias[:h].abs().sum() + bias[2 * h :].abs().sum()) == 0.0
        weight = lstm.weight_hh_l0.detach()
        assert torch.allclose(weight.T @ weight, torch.eye(h), atol=1e-5)
    # §4.8: tiny last layers make the initial heads nearly uniform and the critic nearly zero.
    out = network(torch.randn(4, 3, network.config.obs_size), torch.full((4, 3, 2), -1), network.initial_state(4))
    assert all(float(logits.detach().abs().max()) < 0.1 for logits in out.logits.values())
    first = network.feature_net[0]
    assert float(first.bias.detach().abs().sum()) == 0.0
    table = network.embedding.table.weight.detach()
    assert table.shape == (BLUEPRINT_NULL_INDEX + 1, 4) and 0.005 < float(table.std()) < 0.05
    same = seeded_network(NetworkConfig(num_slots=2, hidden=32, head_hidden=16, lstm_layers=2), seed=3)
    assert all(
        torch.equal(a, b) for a, b in zip(network.state_dict().values(), same.state_dict().values(), strict=True)
    )


def test_empty_slot_index_uses_the_null_embedding_row() -> None:
    network = seeded_network(NetworkConfig(num_slots=1, hidden=16, head_hidden=8), seed=0)
    assert torch.equal(network.embedding(torch.tensor([-1])), network.embedding(torch.tensor([BLUEPRINT_NULL_INDEX])))


def test_sequence_and_step_by_step_unrolls_agree_and_restarts_zero_the_state() -> None:
    torch.manual_seed(0)
    lstm = ResidualLSTM(8, layers=2)
    x = torch.randn(3, 6, 8)
    zeros = (torch.zeros(2, 3, 8), torch.zeros(2, 3, 8))
    whole, _ = lstm(x, zeros)
    state, steps = zeros, []
    for t in range(6):
        out, state = lstm(x[:, t : t + 1], state)
        steps.append(out)
    assert torch.allclose(whole, torch.cat(steps, 1), atol=1e-6)
    starts = torch.zeros(3, 6, dtype=torch.bool)
    starts[1, 3] = True  # env 1 is reset before step 3 (a governor rollback)
    restarted, _ = lstm(
        x,
        (torch.randn(2, 3, 8), torch.randn(2, 3, 8)),
        torch.cat([torch.ones(3, 1, dtype=torch.bool), starts[:, 1:]], 1),
    )
    fresh, _ = lstm(x[1:2, 3:], (torch.zeros(2, 1, 8), torch.zeros(2, 1, 8)))
    assert torch.allclose(restarted[1, 3:], fresh[0], atol=1e-6)
    assert torch.allclose(restarted[0], whole[0], atol=1e-6)


def _trunk_grads(network: FactoredRecurrentActorCritic) -> float:
    trunk = [*network.feature_net.parameters(), *network.lstm.parameters(), *network.embedding.parameters()]
    return sum(float(p.grad.abs().sum()) for p in trunk if p.grad is not None)


def test_q_and_contribution_losses_never_reach_the_trunk_but_value_and_policy_do() -> None:
    network = seeded_network(NetworkConfig(num_slots=2, hidden=16, head_hidden=8), seed=1)
    obs, indices = torch.randn(2, 4, network.config.obs_size), torch.randint(-1, 13, (2, 4, 2))

    def backward(loss_of) -> float:  # type: ignore[no-untyped-def]
        network.zero_grad(set_to_none=True)
        out = network(obs, indices, network.initial_state(2))
        loss_of(out).backward()
        return _trunk_grads(network)

    q_only = backward(lambda out: network.q_value(out.features, torch.zeros(2, 4, dtype=torch.long)).pow(2).sum())
    assert q_only == 0.0 and any(p.grad is not None for p in network.q_head.parameters())
    assert backward(lambda out: network.contributions(out.features).pow(2).sum()) == 0.0
    assert backward(lambda out: out.value.pow(2).sum()) > 0.0
    assert backward(lambda out: sum(out.logits[h].logsumexp(-1).sum() for h in HEAD_NAMES)) > 0.0
