"""One decision step of a FactoredRecurrentActorCritic as a handful of fused tensor ops, for serving.

A decision is batch 1, sequence 1. Run through the training network it is ~60 small module calls (eight heads of
two or three layers, a critic of four, per-layer LSTM and LayerNorm), and at that size the per-call overhead, not
the arithmetic, dominates Tamiyo's share of the decision round trip (ARCHITECTURE.md §10 budgets the whole round
trip at 5 ms p99). The kernel packs the same weights once per loaded version:

- each LSTM layer's input and recurrent weights side by side, so a step is one matmul over [x, h];
- the action heads as plain weight matrices, evaluated lazily: hierarchical sampling reads a head's logits only
  when the sampled op leaves that head more than one legal value, so a WAIT (most decisions) computes the op head
  alone and never reads the other heads' ~4 MB of weights (at hidden 512 a decision is memory-bound).

It computes exactly what `FactoredRecurrentActorCritic.forward` computes for one step (a test holds the two
together to float rounding); the Q and contribution heads, which no decision reports, are skipped. Training,
rollouts in the learner and PPO keep using the network itself.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from leyline_schemas.decisions import HEAD_NAMES
from leyline_schemas.enums import BLUEPRINT_NULL_INDEX
from services.policy.network import FactoredRecurrentActorCritic, LSTMState


@dataclass(frozen=True)
class _Norm:
    weight: torch.Tensor
    bias: torch.Tensor
    eps: float

    @staticmethod
    def of(module: nn.Module) -> _Norm:
        assert isinstance(module, nn.LayerNorm)
        return _Norm(*_copy(module), module.eps)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, (x.shape[-1],), self.weight, self.bias, self.eps)


@dataclass(frozen=True)
class _Layer:
    """A packed LSTM layer: gates = [x, h] @ weight.T + bias, PyTorch's gate order (input, forget, cell, output)."""

    weight: torch.Tensor
    bias: torch.Tensor
    norm: _Norm


def _linears(module: nn.Module) -> list[nn.Linear]:
    return [m for m in module.modules() if isinstance(m, nn.Linear)]


def _copy(layer: nn.Linear | nn.LayerNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """A layer's weight and bias, detached copies (the kernel is a snapshot of the version it was built from)."""
    return layer.weight.detach().clone(), layer.bias.detach().clone()


def _check_head_shape(name: str, module: nn.Module) -> None:
    """Heads are evaluated as Linear → ReLU (→ Linear → ReLU) → Linear; refuse any head built otherwise."""
    layers = list(module.children()) if isinstance(module, nn.Sequential) else []
    kinds = [type(layer) for layer in layers]
    expected_two = [nn.Linear, nn.ReLU, nn.Linear]
    expected_three = [nn.Linear, nn.ReLU, nn.Linear, nn.ReLU, nn.Linear]
    if kinds not in (expected_two, expected_three):
        raise ValueError(f"head {name!r} is not Linear/ReLU layers: {[k.__name__ for k in kinds]}")


class HeadLogits(Mapping[str, torch.Tensor]):
    """The eight heads' logits for one trunk output, each computed on first access and then kept."""

    def __init__(self, heads: dict[str, list[tuple[torch.Tensor, torch.Tensor]]], trunk: torch.Tensor) -> None:
        self._heads = heads
        self._trunk = trunk
        self._done: dict[str, torch.Tensor] = {}

    def __getitem__(self, head: str) -> torch.Tensor:
        logits = self._done.get(head)
        if logits is None:
            layers = self._heads[head]  # KeyError for an unknown head, as a dict would
            x = self._trunk
            for weight, bias in layers[:-1]:
                x = F.relu(F.linear(x, weight, bias))
            logits = self._done[head] = F.linear(x, *layers[-1])
        return logits

    def __iter__(self) -> Iterator[str]:
        return iter(self._heads)

    def __len__(self) -> int:
        return len(self._heads)

    @property
    def computed(self) -> tuple[str, ...]:
        return tuple(self._done)


class BatchHeadLogits:
    """The eight heads' logits [B, n] for a batch of trunk outputs, each head computed for every row on first access;
    `row(i)` is request i's view, the Mapping `sample_action` reads."""

    def __init__(self, heads: dict[str, list[tuple[torch.Tensor, torch.Tensor]]], trunk: torch.Tensor) -> None:
        self._all = HeadLogits(heads, trunk)

    def row(self, index: int) -> Mapping[str, torch.Tensor]:
        return _Row(self._all, index)

    @property
    def computed(self) -> tuple[str, ...]:
        return self._all.computed


class _Row(Mapping[str, torch.Tensor]):
    def __init__(self, batch: HeadLogits, index: int) -> None:
        self._batch, self._index = batch, index

    def __getitem__(self, head: str) -> torch.Tensor:
        return self._batch[head][self._index]

    def __iter__(self) -> Iterator[str]:
        return iter(self._batch)

    def __len__(self) -> int:
        return len(self._batch)


class DecisionKernel:
    """One network version's weights, copied; `step` returns the heads' (lazy) logits, V(s) and the new state."""

    def __init__(self, network: FactoredRecurrentActorCritic) -> None:
        with torch.no_grad():
            self.null_index = BLUEPRINT_NULL_INDEX
            self.embedding = network.embedding.table.weight.detach().clone()
            feature_linear, feature_norm = network.feature_net[0], network.feature_net[1]
            assert isinstance(feature_linear, nn.Linear)
            self.feature_weight, self.feature_bias = _copy(feature_linear)
            self.feature_norm = _Norm.of(feature_norm)
            self.layers: list[_Layer] = []
            for lstm, norm in zip(network.lstm.lstms, network.lstm.norms, strict=True):
                assert isinstance(lstm, nn.LSTM)
                self.layers.append(
                    _Layer(
                        weight=torch.cat([lstm.get_parameter("weight_ih_l0"), lstm.get_parameter("weight_hh_l0")], 1)
                        .detach()
                        .clone(),
                        bias=(lstm.get_parameter("bias_ih_l0") + lstm.get_parameter("bias_hh_l0")).detach().clone(),
                        norm=_Norm.of(norm),
                    )
                )
            self.heads: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
            for head in HEAD_NAMES:
                module = network.heads[head]
                _check_head_shape(head, module)
                self.heads[head] = [_copy(m) for m in _linears(module)]
            critic = _linears(network.value_head)
            norms = [m for m in network.value_head.modules() if isinstance(m, nn.LayerNorm)]
            if len(critic) != 4 or len(norms) != 2:
                raise ValueError("value head is not the §4.5 critic (4 linear layers, 2 LayerNorms)")
            self.critic = [_copy(m) for m in critic]
            self.critic_norms = [_Norm.of(n) for n in norms]

    def step(
        self, obs: torch.Tensor, blueprint_indices: torch.Tensor, state: LSTMState
    ) -> tuple[HeadLogits, torch.Tensor, LSTMState]:
        """obs [obs_size] (already normalised), blueprint_indices [S], state (h, c) each [layers, 1, hidden]."""
        indices = torch.where(blueprint_indices < 0, self.null_index, blueprint_indices)
        embedded = self.embedding[indices.long()].flatten()
        x = F.relu(self.feature_norm(F.linear(torch.cat([obs, embedded]), self.feature_weight, self.feature_bias)))
        h_out, c_out = [], []
        for index, layer in enumerate(self.layers):
            h, c = state[0][index, 0], state[1][index, 0]
            gates = F.linear(torch.cat([x, h]), layer.weight, layer.bias)
            i, f, g, o = gates.chunk(4)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            x = layer.norm(h) + x
            h_out.append(h)
            c_out.append(c)
        new_state = (torch.stack(h_out).unsqueeze(1), torch.stack(c_out).unsqueeze(1))
        return HeadLogits(self.heads, x), self._value(x).squeeze(-1), new_state

    def step_batch(
        self, obs: torch.Tensor, blueprint_indices: torch.Tensor, state: LSTMState
    ) -> tuple[BatchHeadLogits, torch.Tensor, LSTMState]:
        """B decisions in one pass: obs [B, obs_size] (normalised), blueprint_indices [B, S], state (h, c) each
        [layers, B, hidden]. Row i computes what `step` computes for request i, to float rounding (a batched matmul
        may round differently from a single one); the weights are read once for the whole batch."""
        indices = torch.where(blueprint_indices < 0, self.null_index, blueprint_indices)
        embedded = self.embedding[indices.long()].flatten(1)
        x = F.relu(self.feature_norm(F.linear(torch.cat([obs, embedded], 1), self.feature_weight, self.feature_bias)))
        h_out, c_out = [], []
        for index, layer in enumerate(self.layers):
            h, c = state[0][index], state[1][index]
            gates = F.linear(torch.cat([x, h], 1), layer.weight, layer.bias)
            i, f, g, o = gates.chunk(4, dim=-1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            x = layer.norm(h) + x
            h_out.append(h)
            c_out.append(c)
        new_state = (torch.stack(h_out), torch.stack(c_out))
        return BatchHeadLogits(self.heads, x), self._value(x).squeeze(-1), new_state

    def _value(self, x: torch.Tensor) -> torch.Tensor:
        v = x
        for index, (weight, bias) in enumerate(self.critic):
            v = F.linear(v, weight, bias)
            if index < len(self.critic_norms):
                v = self.critic_norms[index](v)
            if index < len(self.critic) - 1:
                v = F.relu(v)
        return v
