"""What a PPO update reports about itself (reference/tamiyo_simic.md §5.16), gathered apart from the loss.

Nothing here feeds a gradient or the early stop: `ClipGauge` watches one minibatch's ratios, `UpdateTally` averages
the figures of the optimizer steps taken, and `UpdateStats` is what telemetry and the checkpoint note carry.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from leyline_schemas import HEAD_NAMES
from services.policy.network import FactoredRecurrentActorCritic
from services.simic.evaluation import Evaluation
from services.simic.ppo_losses import Coefficients, LossTerms, masked_mean
from services.simic.rollout import RolloutBatch


@dataclass
class UpdateStats:
    """Diagnostics of one update (§5.16)."""

    policy_loss: float = 0.0
    value_loss: float = 0.0
    q_loss: float = 0.0
    aux_loss: float = 0.0
    entropy_loss: float = 0.0
    floor_penalty: float = 0.0
    approx_kl: float = 0.0
    clip_fraction: float = 0.0
    explained_variance: float = 0.0
    epochs_run: int = 0
    optimizer_steps: int = 0
    skipped_steps: int = 0
    early_stopped: bool = False
    head_entropies: dict[str, float] = field(default_factory=dict)
    diagnostics: dict[str, float] = field(default_factory=dict)
    update_seconds: float = 0.0


@dataclass
class ClipGauge:
    """One minibatch's ratios against the clip range: how many of the M_k steps fell outside 1±ε, and the largest."""

    outside: float = 0.0
    counted: float = 0.0
    ratio_max: float = 0.0

    def measure(self, ratio: torch.Tensor, mask: torch.Tensor, clip: float) -> None:
        with torch.no_grad():
            self.outside += float((((ratio - 1.0).abs() > clip) & mask).sum())
            self.counted += float(mask.sum())
            if bool(mask.any()):
                self.ratio_max = max(self.ratio_max, float(ratio[mask].max()))

    @property
    def clip_fraction(self) -> float:
        return self.outside / max(self.counted, 1.0)


@dataclass
class UpdateTally:
    """Running sums over the optimizer steps of one update; a minibatch that took no step adds nothing."""

    sums: dict[str, float] = field(default_factory=dict)
    steps: int = 0
    ratio_max: float = 0.0

    def add(self, terms: LossTerms, gauge: ClipGauge, grad_norm: float) -> None:
        self.steps += 1
        for name, value in (
            ("policy_loss", float(terms.policy.detach())),
            ("value_loss", float(terms.value.detach())),
            ("q_loss", float(terms.q.detach())),
            ("aux_loss", float(terms.aux.detach())),
            ("entropy_loss", float(terms.entropy.detach())),
            ("floor_penalty", float(terms.floor.detach())),
            ("approx_kl", terms.approx_kl),
            ("clip_fraction", gauge.clip_fraction),
            ("grad_norm", grad_norm),
        ):
            self.sums[name] = self.sums.get(name, 0.0) + value
        self.ratio_max = max(self.ratio_max, gauge.ratio_max)

    def means(self) -> dict[str, float]:
        return {name: total / max(self.steps, 1) for name, total in self.sums.items()}


@dataclass(frozen=True)
class RoundFigures:
    """The anchor pass and the round's GAE figures, in raw return units, as the update saw them before its epochs."""

    reference: Evaluation
    acting: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    values: torch.Tensor


def summarize(
    stats: UpdateStats,
    tally: UpdateTally,
    network: FactoredRecurrentActorCritic,
    batch: RolloutBatch,
    figures: RoundFigures,
    *,
    c: Coefficients,
    value_scale: float,
    current_version: int,
) -> None:
    """Fill `stats` once the epochs are over: mean losses, per-head entropies at the anchor and the §5.16 extras."""
    means = tally.means()
    stats.policy_loss = means.get("policy_loss", 0.0)
    stats.value_loss = means.get("value_loss", 0.0)
    stats.q_loss = means.get("q_loss", 0.0)
    stats.aux_loss = means.get("aux_loss", 0.0)
    stats.entropy_loss = means.get("entropy_loss", 0.0)
    stats.floor_penalty = means.get("floor_penalty", 0.0)
    stats.approx_kl = means.get("approx_kl", 0.0)
    stats.clip_fraction = means.get("clip_fraction", 0.0)
    reference = figures.reference
    stats.head_entropies = {
        head: float(masked_mean(reference.entropies[head], batch.causal[head] & figures.acting)) for head in HEAD_NAMES
    }
    network.eval()
    with torch.no_grad():
        q_all = network.q_values(reference.features[0, 0])
        lstm_rms = float(reference.features.pow(2).mean().sqrt())
    agreement = rollout_agreement(batch, reference, current_version)
    stats.diagnostics = {
        "grad_norm": means.get("grad_norm", 0.0),
        "ratio_max": tally.ratio_max,
        "advantage_mean": float(figures.advantages.mean()),
        "advantage_std": float(figures.advantages.std(unbiased=False)),
        "return_mean": float(figures.returns.mean()),
        "return_std": float(figures.returns.std(unbiased=False)),
        "value_mean": float(figures.values.mean()),
        "value_scale": value_scale,
        "forced_ratio": float(batch.forced.float().mean()),
        "entropy_coef": c.entropy,
        "value_coef": c.value,
        "lstm_out_rms": lstm_rms,
        "q_spread": float(q_all.max() - q_all.min()),
        "optimizer_steps": float(stats.optimizer_steps),
        "skipped_steps": float(stats.skipped_steps),
        "rollout_logprob_gap": agreement,
        **{f"q_op{op}": float(q) for op, q in enumerate(q_all.tolist())},
    }


def rollout_agreement(batch: RolloutBatch, reference: Evaluation, current_version: int) -> float:
    """Max |rollout − anchor| joint log-prob over steps sampled by the version being trained (12.4 at runtime)."""
    same = batch.acted & (batch.policy_versions == current_version)
    if not bool(same.any()):
        return 0.0
    joint_rollout = sum(batch.rollout_log_probs[head] for head in HEAD_NAMES)
    joint_anchor = sum(reference.log_probs[head] for head in HEAD_NAMES)
    assert isinstance(joint_rollout, torch.Tensor) and isinstance(joint_anchor, torch.Tensor)
    return float((joint_rollout - joint_anchor).abs()[same].max())
