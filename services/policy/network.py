"""FactoredRecurrentActorCritic: Tamiyo's learned policy network (reference/tamiyo_simic.md §4).

Normalised observation ⊕ blueprint embeddings → feature net → residual LSTM → eight action heads and V(s);
an auxiliary Q(s, op) and a per-slot contribution predictor read a DETACHED copy of the LSTM output, so their
losses never shape the trunk (§4.6–4.7, invariant 12.12).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import torch
from torch import nn

from leyline_schemas.decisions import HEAD_NAMES
from leyline_schemas.enums import BLUEPRINT_NULL_INDEX, LifecycleOp
from leyline_schemas.heads import head_sizes
from leyline_schemas.observation import observation_size

EMBED_DIM = 4  # §4.1
VALUE_HEAD_SCHEMA = 2  # §4.6: V(s) baseline + detached Q(s, op) telemetry head

LSTMState = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class NetworkConfig:
    """Sizes of the network; the reference uses hidden 512 and head_hidden 256 with one LSTM layer (§4.2–4.4)."""

    num_slots: int
    hidden: int = 512
    head_hidden: int = 256
    lstm_layers: int = 1

    def __post_init__(self) -> None:
        if self.num_slots < 1:
            raise ValueError(f"network needs at least one slot, got {self.num_slots}")
        if self.hidden < 8 or self.head_hidden < 8 or self.lstm_layers < 1:
            raise ValueError(f"network sizes too small: {self}")

    @property
    def obs_size(self) -> int:
        return observation_size(self.num_slots)

    @property
    def state_floats(self) -> int:
        """How many float32 values the packed (h, c) recurrent state holds."""
        return 2 * self.lstm_layers * self.hidden

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    @staticmethod
    def from_dict(values: dict[str, Any]) -> NetworkConfig:
        return NetworkConfig(**{key: int(values[key]) for key in ("num_slots", "hidden", "head_hidden", "lstm_layers")})


class PolicyOutput(NamedTuple):
    """Per-head logits [B, T, n], V(s) [B, T] in value-normalised units, the LSTM output and the new state."""

    logits: dict[str, torch.Tensor]
    value: torch.Tensor
    features: torch.Tensor
    state: LSTMState


def _linear(in_features: int, out_features: int, gain: float = math.sqrt(2.0)) -> nn.Linear:
    # §4.8: orthogonal weights, zero bias.
    layer = nn.Linear(in_features, out_features)
    nn.init.orthogonal_(layer.weight, gain=gain)
    nn.init.zeros_(layer.bias)
    return layer


class BlueprintEmbedding(nn.Module):
    """(13 + 1) × 4 table; index −1 (empty slot) maps to the trainable null row 13 (§4.1)."""

    def __init__(self) -> None:
        super().__init__()
        self.table = nn.Embedding(BLUEPRINT_NULL_INDEX + 1, EMBED_DIM)
        nn.init.normal_(self.table.weight, mean=0.0, std=0.02)

    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        indices = torch.where(indices < 0, BLUEPRINT_NULL_INDEX, indices)
        result: torch.Tensor = self.table(indices.long())
        return result


class ResidualLSTM(nn.Module):
    """Per layer: LSTM → LayerNorm → + input (§4.3); hidden is zeroed wherever a sequence (re)starts."""

    def __init__(self, size: int, layers: int) -> None:
        super().__init__()
        self.size = size
        self.layers = layers
        self.lstms = nn.ModuleList(nn.LSTM(size, size, batch_first=True) for _ in range(layers))
        self.norms = nn.ModuleList(nn.LayerNorm(size) for _ in range(layers))
        forget_bias = 1.0 + math.log(layers)
        for lstm in self.lstms:
            assert isinstance(lstm, nn.LSTM)
            nn.init.orthogonal_(lstm.get_parameter("weight_ih_l0"))
            nn.init.orthogonal_(lstm.get_parameter("weight_hh_l0"))
            for bias in (lstm.get_parameter("bias_ih_l0"), lstm.get_parameter("bias_hh_l0")):
                nn.init.zeros_(bias)
                # PyTorch orders the gates input, forget, cell, output: the second quarter is the forget gate.
                with torch.no_grad():
                    bias[size : 2 * size].fill_(forget_bias)

    def _run(self, x: torch.Tensor, state: LSTMState) -> tuple[torch.Tensor, LSTMState]:
        h_out, c_out = [], []
        for layer, (lstm, norm) in enumerate(zip(self.lstms, self.norms, strict=True)):
            out, (h, c) = lstm(x, (state[0][layer : layer + 1].contiguous(), state[1][layer : layer + 1].contiguous()))
            x = norm(out) + x
            h_out.append(h)
            c_out.append(c)
        return x, (torch.cat(h_out), torch.cat(c_out))

    def forward(
        self, x: torch.Tensor, state: LSTMState, starts: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, LSTMState]:
        """x [B, T, size]; state (h, c) each [layers, B, size]; `starts` [B, T] zeroes the state before a step."""
        if starts is None or not bool(starts[:, 1:].any()):
            if starts is not None:
                keep = (~starts[:, 0]).float().view(1, -1, 1)
                state = (state[0] * keep, state[1] * keep)
            return self._run(x, state)
        # A restart inside a sequence (a governor rollback resets the policy's memory): unroll step by step.
        outputs = []
        for t in range(x.shape[1]):
            keep = (~starts[:, t]).float().view(1, -1, 1)
            out, state = self._run(x[:, t : t + 1], (state[0] * keep, state[1] * keep))
            outputs.append(out)
        return torch.cat(outputs, dim=1), state


#: What PPOUpdateCompleted.architecture says for this network (tamiyo4's slot transformer will say "slot_transformer").
ARCHITECTURE = "lstm"


class FactoredRecurrentActorCritic(nn.Module):
    """§4: a shared recurrent trunk, eight factored heads, V(s), and the detached Q(s, op) and contribution heads."""

    def __init__(self, config: NetworkConfig) -> None:
        super().__init__()
        self.config = config
        h, hh = config.hidden, config.head_hidden
        self.embedding = BlueprintEmbedding()
        self.feature_net = nn.Sequential(
            _linear(config.obs_size + EMBED_DIM * config.num_slots, h), nn.LayerNorm(h), nn.ReLU()
        )
        self.lstm = ResidualLSTM(h, config.lstm_layers)
        sizes = head_sizes(config.num_slots)
        heads: dict[str, nn.Module] = {}
        for head in HEAD_NAMES:
            if head == "blueprint":
                # §4.4: the blueprint head is one layer deeper than the others.
                heads[head] = nn.Sequential(
                    _linear(h, h), nn.ReLU(), _linear(h, hh), nn.ReLU(), _linear(hh, sizes[head], gain=0.01)
                )
            else:
                heads[head] = nn.Sequential(_linear(h, hh), nn.ReLU(), _linear(hh, sizes[head], gain=0.01))
        self.heads = nn.ModuleDict(heads)
        self.value_head = self._critic(h)
        self.q_head = self._critic(h + len(LifecycleOp))
        self.contribution_head = nn.Sequential(
            _linear(h, hh),
            nn.LayerNorm(hh),
            nn.ReLU(),
            nn.Dropout(0.1),
            _linear(hh, hh // 2),
            nn.ReLU(),
            _linear(hh // 2, config.num_slots, gain=0.1),
        )

    def _critic(self, in_features: int) -> nn.Sequential:
        # §4.5–4.6: 256 LN ReLU → 128 LN ReLU → 64 ReLU → 1 at the reference sizes.
        hh = self.config.head_hidden
        return nn.Sequential(
            _linear(in_features, hh),
            nn.LayerNorm(hh),
            nn.ReLU(),
            _linear(hh, hh // 2),
            nn.LayerNorm(hh // 2),
            nn.ReLU(),
            _linear(hh // 2, hh // 4),
            nn.ReLU(),
            _linear(hh // 4, 1, gain=0.1),
        )

    def initial_state(self, batch: int = 1) -> LSTMState:
        """Zeros: the recurrent state at every episode start (§4.3)."""
        shape = (self.config.lstm_layers, batch, self.config.hidden)
        return torch.zeros(shape), torch.zeros(shape)

    def forward(
        self,
        obs: torch.Tensor,
        blueprint_indices: torch.Tensor,
        state: LSTMState,
        starts: torch.Tensor | None = None,
    ) -> PolicyOutput:
        """obs [B, T, obs_size] (already normalised), blueprint_indices [B, T, S]; heads are computed in fp32."""
        embedded = self.embedding(blueprint_indices).flatten(start_dim=-2)
        features = self.feature_net(torch.cat([obs, embedded], dim=-1))
        lstm_out, new_state = self.lstm(features, state, starts)
        logits = {head: module(lstm_out).float() for head, module in self.heads.items()}
        value = self.value_head(lstm_out).squeeze(-1).float()
        return PolicyOutput(logits=logits, value=value, features=lstm_out, state=new_state)

    def q_value(self, features: torch.Tensor, op: torch.Tensor) -> torch.Tensor:
        """Q(s, op) [B, T] from the DETACHED trunk output (telemetry only, §4.6)."""
        one_hot = nn.functional.one_hot(op.long(), len(LifecycleOp)).float()
        result: torch.Tensor = self.q_head(torch.cat([features.detach(), one_hot], dim=-1)).squeeze(-1)
        return result

    def q_values(self, features: torch.Tensor) -> torch.Tensor:
        """Q for all six ops [..., 6] (the spread over legal ops is reported per update)."""
        ops = torch.arange(len(LifecycleOp))
        expanded = features.detach().unsqueeze(-2).expand(*features.shape[:-1], len(LifecycleOp), features.shape[-1])
        return self.q_value(expanded, ops.expand(*features.shape[:-1], len(LifecycleOp)))

    def contributions(self, features: torch.Tensor) -> torch.Tensor:
        """Predicted per-slot counterfactual contribution [..., S] from the DETACHED trunk output (§4.7)."""
        result: torch.Tensor = self.contribution_head(features.detach())
        return result


def seeded_network(config: NetworkConfig, seed: int) -> FactoredRecurrentActorCritic:
    """A freshly initialised network whose weights depend only on `config` and `seed`."""
    devices: list[int] = []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        return FactoredRecurrentActorCritic(config)
