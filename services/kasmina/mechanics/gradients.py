"""Per-slot gradient telemetry read after backward: seed gradient norm, health and the seed/host ratio.

Formulas: reference/kasmina.md §1.3 item 15 (health, vanishing, exploding) and §5 item 102 (ratio, EMA).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor

from leyline_schemas.enums import SeedStage
from services.kasmina.mechanics.model import MorphogeneticModel

VANISHING_NORM = 1e-7
# Ten times the training max grad norm of 10.0 (§1.3 item 15).
EXPLODING_NORM = 100.0
HOST_NORM_EPSILON = 1e-8
RATIO_CEILING = 10.0
EMA_DECAY = 0.9
DEFAULT_MONITORED_STAGES = frozenset({SeedStage.TRAINING, SeedStage.BLENDING})


class SeedGradientReport(NamedTuple):
    """The gradient telemetry of one seed: EMA norm, latest health, EMA ratio and the latest flags."""

    gradient_norm: float
    gradient_health: float
    ratio: float
    has_vanishing: bool
    has_exploding: bool


def gradient_health(tensor_norms: Sequence[float]) -> tuple[float, bool, bool]:
    """`clamp(1 − 0.5·frac_vanishing − 0.8·frac_exploding, 0, 1)`, 0 when the global norm is non-finite (§1.3 item 15).

    Returns (health, has_vanishing, has_exploding) over per-parameter-tensor gradient norms.
    """
    if not tensor_norms:
        return 0.0, False, False
    vanishing = sum(1 for n in tensor_norms if n < VANISHING_NORM)
    exploding = sum(1 for n in tensor_norms if not math.isfinite(n) or n > EXPLODING_NORM)
    if not math.isfinite(_global_norm(tensor_norms)):
        return 0.0, vanishing > 0, True
    count = len(tensor_norms)
    health = 1.0 - 0.5 * vanishing / count - 0.8 * exploding / count
    return min(1.0, max(0.0, health)), vanishing > 0, exploding > 0


def gradient_ratio(seed_norm: float, host_norm: float, host_params: int, seed_params: int) -> float:
    """`min(10, (‖g_seed‖/‖g_host‖)·sqrt(P_host/P_seed))` (§5 item 102).

    0 when ‖g_host‖ < 1e-8; the unscaled ratio when either parameter count is 0.
    """
    if host_norm < HOST_NORM_EPSILON:
        return 0.0
    raw = seed_norm / host_norm
    if host_params > 0 and seed_params > 0:
        raw *= math.sqrt(host_params / seed_params)
    return min(RATIO_CEILING, raw)


def _global_norm(tensor_norms: Sequence[float]) -> float:
    return math.sqrt(sum(n * n for n in tensor_norms))


def _ema(previous: float | None, value: float, decay: float) -> float:
    return value if previous is None else decay * previous + (1.0 - decay) * value


@dataclass
class _SlotGradients:
    norm_ema: float | None = None
    ratio_ema: float | None = None
    health: float = 0.0
    has_vanishing: bool = False
    has_exploding: bool = False


class GradientMonitor:
    """Reads gradients left by backward (before the optimizer zeroes them) and keeps per-slot EMAs."""

    def __init__(self, decay: float = EMA_DECAY, stages: frozenset[SeedStage] = DEFAULT_MONITORED_STAGES) -> None:
        self.decay = decay
        self.stages = stages
        self._slots: dict[str, _SlotGradients] = {}

    def observe(self, model: MorphogeneticModel) -> list[str]:
        """Measure every slot whose seed is in a monitored stage and has gradients; returns the slots measured."""
        host_grads = [p.grad for p in model.host_parameters() if p.grad is not None]
        host_count = sum(g.numel() for g in host_grads)
        seed_grads: dict[str, list[Tensor]] = {}
        for slot in model.seed_slots():
            if slot.has_seed and slot.stage in self.stages:
                grads = [p.grad for p in slot.seed_parameters() if p.grad is not None]
                if grads:
                    seed_grads[slot.slot_id] = grads
        if not seed_grads:
            return []
        flat = host_grads + [g for grads in seed_grads.values() for g in grads]
        # One device read for every tensor norm of this step.
        norms: list[float] = torch.stack([torch.linalg.vector_norm(g.detach().float()) for g in flat]).tolist()
        host_norm = _global_norm(norms[: len(host_grads)])
        offset = len(host_grads)
        for slot_id, grads in seed_grads.items():
            tensor_norms = norms[offset : offset + len(grads)]
            offset += len(grads)
            self._record(slot_id, tensor_norms, host_norm, host_count, sum(g.numel() for g in grads))
        return list(seed_grads)

    def _record(
        self, slot_id: str, tensor_norms: list[float], host_norm: float, host_count: int, seed_count: int
    ) -> None:
        entry = self._slots.setdefault(slot_id, _SlotGradients())
        entry.health, entry.has_vanishing, entry.has_exploding = gradient_health(tensor_norms)
        seed_norm = _global_norm(tensor_norms)
        # A non-finite step is reported through the flags and health, never folded into the averages.
        if math.isfinite(seed_norm) and math.isfinite(host_norm):
            entry.norm_ema = _ema(entry.norm_ema, seed_norm, self.decay)
            ratio = gradient_ratio(seed_norm, host_norm, host_count, seed_count)
            entry.ratio_ema = _ema(entry.ratio_ema, ratio, self.decay)

    def report(self, slot_id: str) -> SeedGradientReport | None:
        """(gradient_norm, gradient_health, ratio, has_vanishing, has_exploding), or None if never measured."""
        entry = self._slots.get(slot_id)
        if entry is None:
            return None
        return SeedGradientReport(
            gradient_norm=entry.norm_ema if entry.norm_ema is not None else 0.0,
            gradient_health=entry.health,
            ratio=entry.ratio_ema if entry.ratio_ema is not None else 0.0,
            has_vanishing=entry.has_vanishing,
            has_exploding=entry.has_exploding,
        )

    def state(self) -> dict[str, dict[str, Any]]:
        """Each measured slot's EMAs and latest flags as plain values (a host checkpoint)."""
        return {slot_id: asdict(entry) for slot_id, entry in self._slots.items()}

    def load_state(self, state: dict[str, dict[str, Any]]) -> None:
        self._slots = {slot_id: _SlotGradients(**fields) for slot_id, fields in state.items()}

    def reset(self, slot_id: str | None = None) -> None:
        """Forget one slot's history (on prune or germination), or every slot's."""
        if slot_id is None:
            self._slots.clear()
        else:
            self._slots.pop(slot_id, None)
