"""Blend operators that compose host features h with seed output s at amplitude a (reference/kasmina.md §4.5)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from leyline_schemas.enums import AlphaAlgorithm, Topology


def _amplitude(alpha: Tensor, like: Tensor) -> Tensor:
    # Aligning dtype to h keeps the operators safe under bf16 autocast (§4.5 item 90).
    return alpha.to(device=like.device, dtype=like.dtype).clamp(0.0, 1.0)


def blend_add(h: Tensor, s: Tensor, alpha: Tensor) -> Tensor:
    """ADD: `lerp(h, s, a) = h + a·(s − h)`; ∂y/∂h = 1−a, ∂y/∂s = a (§4.5 item 87)."""
    return torch.lerp(h, s.to(h.dtype), _amplitude(alpha, h))


def blend_multiply(h: Tensor, s: Tensor, seed_input: Tensor, alpha: Tensor) -> Tensor:
    """MULTIPLY valve: `h·(1 + a·tanh(s − seed_input))`, bounded by h·(1±a) (§4.5 item 88).

    The seed input is detached so no −h gradient path appears inside tanh.
    """
    residual = s.to(h.dtype) - seed_input.detach().to(h.dtype)
    return h * (1.0 + _amplitude(alpha, h) * torch.tanh(residual))


def gate_alpha(alpha: Tensor, gate: Tensor, like: Tensor) -> Tensor:
    """GATE effective amplitude `clamp(a·clamp(g, 0, 1), 0, 1)` (§4.5 item 89)."""
    return (_amplitude(alpha, like) * gate.to(like.dtype).clamp(0.0, 1.0)).clamp(0.0, 1.0)


def blend_gate(h: Tensor, s: Tensor, alpha: Tensor, gate: Tensor) -> Tensor:
    """GATE: `lerp(h, s, a_eff)` with the per-sample gate folded into the amplitude (§4.5 item 89)."""
    return torch.lerp(h, s.to(h.dtype), gate_alpha(alpha, gate, h))


class GatedBlend(nn.Module):
    """GATE's per-sample gate: pool → Linear(C→max(8,C//4)) → ReLU → Linear(→1) → Sigmoid (§4.5 item 89)."""

    def __init__(self, channels: int, topology: Topology) -> None:
        super().__init__()
        self.topology = Topology(topology)
        hidden = max(8, channels // 4)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, 1)

    def forward(self, x: Tensor) -> Tensor:
        # CNN maps (N,C,*spatial) pool every spatial axis, 1-D or 2-D; transformer features (N,T,D) pool tokens.
        pooled = x.flatten(2).mean(dim=2) if self.topology is Topology.CNN else x.mean(dim=1)
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(pooled))))
        return gate.reshape(-1, *([1] * (x.dim() - 1)))


def blend(
    algorithm: AlphaAlgorithm, h: Tensor, s: Tensor, seed_input: Tensor, alpha: Tensor, gate: GatedBlend | None
) -> Tensor:
    """Apply one operator; a gate network must be present exactly when the algorithm is GATE (invariant I5)."""
    if algorithm is AlphaAlgorithm.GATE:
        if gate is None:
            raise RuntimeError("I5: GATE blending needs a gate network and the slot has none")
        return blend_gate(h, s, alpha, gate(seed_input))
    if gate is not None:
        raise RuntimeError(f"I5: {algorithm.name} blending must not carry a gate network")
    if algorithm is AlphaAlgorithm.MULTIPLY:
        return blend_multiply(h, s, seed_input, alpha)
    return blend_add(h, s, alpha)
