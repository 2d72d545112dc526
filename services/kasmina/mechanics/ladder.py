"""The conv ladder: a CNN seed whose capacity is a level, the number of residual 3×3 rungs it runs
(plans/kasmina2-phase0.md §6.1–6.3).

Every rung exists from germination; the level only decides how many the forward runs. Inactive rungs are skipped,
never masked (Choice 2), so they stay outside the autograd graph: their gradients are None and their weights do not
move. A level change never touches `requires_grad` (Choice 5): the blend-out freeze owns those flags.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from leyline_schemas.enums import SeedInternalKind
from leyline_schemas.lifecycle import InternalSpec
from services.kasmina.mechanics.feature_maps import conv_class, group_norm


@runtime_checkable
class MicrostructuredSeed(Protocol):
    """A seed with an internal level in [0, internal_max_level] that can change after germination (§6.1 item 3)."""

    @property
    def internal_kind(self) -> SeedInternalKind: ...

    @property
    def internal_level(self) -> int: ...

    @property
    def internal_max_level(self) -> int: ...

    def set_internal_level(self, level: int) -> list[nn.Parameter]: ...

    def active_param_count(self) -> int: ...

    def rung_parameters(self, index: int) -> list[nn.Parameter]: ...


class LadderRung(nn.Module):
    """`h ↦ γ ⊙ ReLU(GN(conv3×3 h))` with γ ∈ ℝ^C at 0, so a fresh rung adds exactly nothing (§6.1 item 1).

    9C² + 3C parameters on images (3C² + 3C on 1-D signals): the conv, GroupNorm's affine pair and γ.
    """

    def __init__(self, channels: int, spatial_dims: int = 2) -> None:
        super().__init__()
        self.conv = conv_class(spatial_dims)(channels, channels, 3, padding=1, bias=False)
        self.norm = group_norm(channels)
        self.scale = nn.Parameter(torch.zeros(channels))

    def forward(self, h: Tensor) -> Tensor:
        gamma = self.scale.view(1, -1, *([1] * (h.dim() - 2)))
        result: Tensor = gamma * F.relu(self.norm(self.conv(h)))
        return result


class ConvLadderSeed(nn.Module):
    """`h ← h + rung_i(h)` for the active rungs i = 0 … level−1; level 0 is the identity (§6.1 item 2)."""

    def __init__(self, channels: int, max_level: int, initial_level: int, spatial_dims: int = 2) -> None:
        super().__init__()
        if max_level < 1:
            raise ValueError(f"conv ladder needs max_level ≥ 1, got {max_level}")
        self.rungs = nn.ModuleList(LadderRung(channels, spatial_dims) for _ in range(max_level))
        self._level = 0
        self.set_internal_level(initial_level)

    @classmethod
    def from_spec(cls, channels: int, spec: InternalSpec, spatial_dims: int = 2) -> ConvLadderSeed:
        """The ladder an internal-structure spec describes (leyline `SEED_INTERNALS`, §4.2 item 4)."""
        if spec.kind is not SeedInternalKind.CONV_LADDER:
            raise ValueError(f"a conv ladder needs kind CONV_LADDER, the spec says {spec.kind.name}")
        return cls(channels, spec.max_level, spec.initial_level, spatial_dims)

    @property
    def internal_kind(self) -> SeedInternalKind:
        return SeedInternalKind.CONV_LADDER

    @property
    def internal_level(self) -> int:
        return self._level

    @property
    def internal_max_level(self) -> int:
        return len(self.rungs)

    def set_internal_level(self, level: int) -> list[nn.Parameter]:
        """Run `level` rungs from now on; returns the parameters of the rungs switched on or off.

        Raises ValueError outside [0, max]: a level is never clamped (Choice 6). A rung switched off drops its
        gradient, since it has left the graph.
        """
        if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= self.internal_max_level:
            raise ValueError(f"conv ladder level must be an int in [0, {self.internal_max_level}], got {level!r}")
        low, high = sorted((self._level, level))
        toggled = [p for i in range(low, high) for p in self.rung_parameters(i)]
        if level < self._level:
            for p in toggled:
                p.grad = None
        self._level = level
        return toggled

    def rung_parameters(self, index: int) -> list[nn.Parameter]:
        """The parameters of rung `index`, in module order: γ, the conv weight, GroupNorm's weight and bias."""
        if not 0 <= index < self.internal_max_level:
            raise IndexError(f"conv ladder has rungs 0 … {self.internal_max_level - 1}, not {index}")
        return list(self.rungs[index].parameters())

    def active_param_count(self) -> int:
        """Parameters of the active rungs, counted from the structure: level·(9C² + 3C) on images (§6.4 item 1)."""
        return sum(p.numel() for i in range(self._level) for p in self.rung_parameters(i))

    def forward(self, x: Tensor) -> Tensor:
        h = x
        for rung in self.rungs[: self._level]:
            h = h + rung(h)
        return h

    def extra_repr(self) -> str:
        return f"level={self._level}/{self.internal_max_level}"
