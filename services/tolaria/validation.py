"""Fused validation: main, each slot off, solo-on, all-off and pairs per batch (tolaria_karn.md §3.6–3.7).

The configurations are walked as a tree over the slots (`MorphogeneticModel.forward_configs`) rather than
stacked on the batch axis: what they share upstream of a slot runs once, so K configurations cost far less than
K forwards, and each tensor stays one batch in size (K stacked batches made the pass memory-bound on a CPU).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from leyline_schemas import CoalitionValue, SeedStage, ShapleyComputed
from services.kasmina.mechanics.model import MorphogeneticModel
from services.tolaria.shapley import ShapleyEstimate, coalitions_for, shapley_values


@dataclass
class ConfigResult:
    name: str
    alphas: dict[str, float]
    correct: float = 0.0
    count: int = 0
    loss_sum: float = 0.0
    batches: int = 0

    @property
    def accuracy(self) -> float:
        return 100.0 * self.correct / max(1, self.count)


@dataclass
class ValidationResult:
    """Main-config loss and accuracy plus every counterfactual the slots need."""

    val_loss: float
    val_accuracy: float
    contributions: dict[str, float] = field(default_factory=dict)
    solo_on: dict[str, float] = field(default_factory=dict)
    all_off_accuracy: float | None = None
    interactions: dict[tuple[str, str], float] = field(default_factory=dict)
    configs: dict[str, float] = field(default_factory=dict)
    #: The alpha configurations evaluated, main (`{}`) first, in the order `configs` lists their accuracies.
    config_alphas: list[dict[str, float]] = field(default_factory=list)


def measured_slots(model: MorphogeneticModel, include_fossils: bool = False) -> list[str]:
    """Slots whose seed is active with alpha > 0; fossils only when a drip reward keeps them measured (§3.6)."""
    measured = []
    for slot in model.seed_slots():
        if not slot.is_active or slot.alpha <= 0.0:
            continue
        if slot.stage is SeedStage.FOSSILIZED and not include_fossils:
            continue
        measured.append(slot.slot_id)
    return measured


def counterfactual_configs(active: list[str]) -> list[tuple[str, dict[str, float]]]:
    """Config 0 is main; then each slot off, solo-on, all-off (2–4 seeds) and pairs-on (3–4 seeds)."""
    configs: list[tuple[str, dict[str, float]]] = [("main", {})]
    for sid in active:
        configs.append((f"off:{sid}", {sid: 0.0}))
    if len(active) >= 2:
        for sid in active:
            configs.append((f"solo:{sid}", {other: 0.0 for other in active if other != sid}))
        if len(active) <= 4:
            configs.append(("all_off", dict.fromkeys(active, 0.0)))
    if 3 <= len(active) <= 4:
        for a, b in itertools.combinations(active, 2):
            configs.append((f"pair:{a}+{b}", {other: 0.0 for other in active if other not in (a, b)}))
    return configs


def _per_sample_loss(logits: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Per-sample mean loss and per-sample correct count (per token for language models)."""
    if logits.dim() == 3:
        loss = F.cross_entropy(logits.transpose(1, 2), y, reduction="none").mean(dim=1)
        correct = (logits.argmax(-1) == y).float().sum(dim=1)
        return loss, correct
    return F.cross_entropy(logits, y, reduction="none"), (logits.argmax(-1) == y).float()


@torch.inference_mode()
def evaluate_configs(
    model: MorphogeneticModel, batches: list[tuple[Tensor, Tensor]], device: torch.device, configs: list[ConfigResult]
) -> list[ConfigResult]:
    """Every alpha configuration on every batch, sharing what configurations have in common
    (`MorphogeneticModel.forward_configs`); accumulates loss and accuracy per config."""
    alphas = [c.alphas for c in configs]
    was_training = model.training
    model.eval()
    try:
        for x, y in batches:
            x = x.to(device, non_blocking=True)
            y = y.to(device, non_blocking=True)
            samples = x.shape[0] * (y[0].numel() if y.dim() > 1 else 1)
            for members, logits in model.forward_configs(x, alphas):
                loss, correct = _per_sample_loss(logits.float(), y)
                loss_mean, correct_sum = loss.mean().item(), correct.sum().item()
                for index in members:
                    config = configs[index]
                    config.loss_sum += loss_mean
                    config.batches += 1
                    config.correct += correct_sum
                    config.count += samples
    finally:
        model.train(was_training)
    return configs


def fused_validate(
    model: MorphogeneticModel,
    batches: list[tuple[Tensor, Tensor]],
    device: torch.device,
    include_fossils: bool = False,
) -> ValidationResult:
    active = measured_slots(model, include_fossils)
    configs = evaluate_configs(
        model, batches, device, [ConfigResult(name, alphas) for name, alphas in counterfactual_configs(active)]
    )
    main = configs[0]
    by_name = {c.name: c.accuracy for c in configs}
    result = ValidationResult(
        val_loss=main.loss_sum / max(1, main.batches),
        val_accuracy=main.accuracy,
        configs=by_name,
        config_alphas=[c.alphas for c in configs],
    )
    for sid in active:
        result.contributions[sid] = main.accuracy - by_name[f"off:{sid}"]
    if len(active) == 1:
        only = active[0]
        result.solo_on[only] = main.accuracy
        result.all_off_accuracy = by_name[f"off:{only}"]
    elif len(active) >= 2:
        for sid in active:
            result.solo_on[sid] = by_name[f"solo:{sid}"]
        result.all_off_accuracy = by_name.get("all_off")
    if result.all_off_accuracy is not None and len(active) >= 2:
        empty = result.all_off_accuracy
        for a, b in itertools.combinations(active, 2):
            both = main.accuracy if len(active) == 2 else by_name.get(f"pair:{a}+{b}")
            if both is not None:
                # The interaction index uses solo-ON accuracies, never leave-one-out (tamiyo_simic.md §8.4).
                result.interactions[(a, b)] = both - result.solo_on[a] - result.solo_on[b] + empty
    return result


@dataclass
class TerminalAttribution:
    """Coalition accuracies and Shapley values of the measured seeds at an episode's last epoch."""

    strategy: str
    slot_ids: list[str]
    coalitions: dict[frozenset[str], float]
    shapley: dict[str, ShapleyEstimate]


def terminal_attribution(
    model: MorphogeneticModel, batches: list[tuple[Tensor, Tensor]], device: torch.device, seed: int
) -> TerminalAttribution | None:
    """Evaluate the coalitions the Shapley engine asks for (enabled seeds at alpha 1, others off) in fused passes."""
    active = measured_slots(model)
    if not active:
        return None
    strategy, coalitions = coalitions_for(active, seed=seed)
    configs = [ConfigResult(",".join(sorted(c)), {s: 1.0 if s in c else 0.0 for s in active}) for c in coalitions]
    evaluated = evaluate_configs(model, batches, device, configs)
    accuracies = {coalition: result.accuracy for coalition, result in zip(coalitions, evaluated, strict=True)}
    estimates = shapley_values(active, accuracies.get, seed=seed)
    return TerminalAttribution(strategy=strategy, slot_ids=active, coalitions=accuracies, shapley=estimates)


def shapley_event(attribution: TerminalAttribution) -> ShapleyComputed:
    return ShapleyComputed(
        strategy=attribution.strategy,
        slot_ids=attribution.slot_ids,
        coalitions=[CoalitionValue(slots=sorted(c), accuracy=a) for c, a in attribution.coalitions.items()],
        shapley={s: e.mean for s, e in attribution.shapley.items()},
        shapley_std={s: e.std for s, e in attribution.shapley.items()},
    )
