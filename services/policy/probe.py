"""The contribution probe (plans/counterfactual-oracle.md §6): a head that predicts, per slot, what the oracle's
loss-based leave-one-out would say (μ, in normalised units), how unsure it is (σ², from a softplus pre-activation ρ)
and whether the seed will turn out harmful (a logit); its loss, masked so that unlabelled entries add exactly zero;
the target normaliser; and the standalone probe of Phase 1 (its own GRU encoder over the policy's observations).

The plan puts the head in Tamiyo's network; after the layout work the network lives in this shared library, so the
probe does too. Probe outputs are beliefs for control and display, never reward inputs (§2 rule 2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: σ² = clamp(softplus(ρ), e⁻⁵, e²) in normalised target units (§6.5, Choice 3).
VARIANCE_MIN = math.exp(-5.0)
VARIANCE_MAX = math.exp(2.0)
#: softplus⁻¹(1): σ² = 1 at initialisation (§6.3).
RHO_INIT = math.log(math.e - 1.0)
#: y = clip(Δℓ / s, −5, 5) (§6.4).
TARGET_CLIP = 5.0
#: Below this many labelled samples the scale is 1 (identity) (§6.4, O8).
SCALE_MIN_SAMPLES = 32


@dataclass(frozen=True)
class ProbeOutput:
    """Per slot [..., S]: μ, the variance pre-activation ρ and the harm logit."""

    mu: Tensor
    rho: Tensor
    harm_logit: Tensor

    @property
    def variance(self) -> Tensor:
        return probe_variance(self.rho)

    @property
    def p_harm(self) -> Tensor:
        return torch.sigmoid(self.harm_logit)


def probe_variance(rho: Tensor) -> Tensor:
    """σ² = clamp(softplus(ρ), e⁻⁵, e²); outside the clamp ρ gets no gradient (O4)."""
    return torch.clamp(F.softplus(rho), VARIANCE_MIN, VARIANCE_MAX)


class ProbeHead(nn.Module):
    """Linear(h→hh) → LayerNorm → ReLU → Dropout(0.1) → Linear(hh→hh/2) → ReLU → Linear(hh/2 → 3·S) (§6.3).

    The last layer is orthogonal with gain 0.1 and its bias starts at μ = 0, ρ = softplus⁻¹(1) (σ² = 1) and a harm
    logit of 0 (p = 0.5). Outputs are laid out [μ × S | ρ × S | harm × S].
    """

    def __init__(self, in_features: int, num_slots: int, hidden: int = 128) -> None:
        super().__init__()
        if num_slots < 1 or hidden < 2:
            raise ValueError(f"a probe needs at least one slot and hidden >= 2, got {num_slots} and {hidden}")
        self.num_slots = num_slots
        last = nn.Linear(hidden // 2, 3 * num_slots)
        nn.init.orthogonal_(last.weight, gain=0.1)
        with torch.no_grad():
            last.bias.zero_()
            last.bias[num_slots : 2 * num_slots] = RHO_INIT
        self.layers = nn.Sequential(
            nn.Linear(in_features, hidden),
            nn.LayerNorm(hidden),
            nn.ReLU(),
            nn.Dropout(0.1),
            nn.Linear(hidden, hidden // 2),
            nn.ReLU(),
            last,
        )

    def forward(self, features: Tensor) -> ProbeOutput:
        out = self.layers(features)
        mu, rho, harm = out.split(self.num_slots, dim=-1)
        return ProbeOutput(mu=mu, rho=rho, harm_logit=harm)


@dataclass(frozen=True)
class ProbeLoss:
    """The two terms, their sum and how many entries each was averaged over."""

    nll: Tensor
    bce: Tensor
    labelled: int
    harm_labelled: int

    @property
    def total(self) -> Tensor:
        return self.nll + self.bce


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    # The denominator is clamped at 1, so a batch with no label adds exactly 0, never NaN (§6.5).
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def probe_loss(output: ProbeOutput, target: Tensor, target_mask: Tensor, harm: Tensor, harm_mask: Tensor) -> ProbeLoss:
    """Gaussian NLL ½((y − μ)²/σ² + ln σ²) where `target_mask`, BCE on the harm logit where `harm_mask` (§6.5).

    Masked entries may hold anything (NaN included): they are replaced before any arithmetic, so they add zero loss
    and zero gradient (O4, O5).
    """
    mask = target_mask.to(output.mu.dtype)
    y = torch.where(target_mask, target, torch.zeros_like(target))
    variance = output.variance
    nll = _masked_mean(0.5 * ((y - output.mu) ** 2 / variance + torch.log(variance)), mask)
    hmask = harm_mask.to(output.harm_logit.dtype)
    h = torch.where(harm_mask, harm, torch.zeros_like(harm))
    bce = _masked_mean(F.binary_cross_entropy_with_logits(output.harm_logit, h, reduction="none"), hmask)
    return ProbeLoss(nll=nll, bce=bce, labelled=int(target_mask.sum()), harm_labelled=int(harm_mask.sum()))


class TargetNormalizer:
    """The running scale s of raw Δℓ (Welford std over labelled samples): y = clip(Δℓ / s, −5, 5).

    Identity below 32 samples; never subtracts a mean, since the sign is the signal (§6.4, O8).
    """

    def __init__(self) -> None:
        self.count = 0
        self.mean = 0.0
        self.m2 = 0.0

    def update(self, values: Tensor) -> None:
        for value in values.detach().double().flatten().tolist():
            if not math.isfinite(value):
                continue
            self.count += 1
            delta = value - self.mean
            self.mean += delta / self.count
            self.m2 += delta * (value - self.mean)

    @property
    def scale(self) -> float:
        if self.count < SCALE_MIN_SAMPLES:
            return 1.0
        std = math.sqrt(self.m2 / (self.count - 1))
        return std if std > 1e-12 else 1.0

    def normalise(self, raw: Tensor) -> Tensor:
        return torch.clamp(raw / self.scale, -TARGET_CLIP, TARGET_CLIP)

    def state_dict(self) -> dict[str, float]:
        return {"count": float(self.count), "mean": self.mean, "m2": self.m2}

    @classmethod
    def from_state_dict(cls, state: dict[str, float]) -> TargetNormalizer:
        normalizer = cls()
        normalizer.count, normalizer.mean, normalizer.m2 = int(state["count"]), state["mean"], state["m2"]
        return normalizer


class StandaloneProbe(nn.Module):
    """Phase 1's probe (§8): a private GRU over the episode's observations, then the probe head per step.

    Input [B, T, obs]; output per step and slot [B, T, S]. It sees only what the policy may see (the caller passes
    telemetry-mode observations), and nothing of the policy's weights.
    """

    def __init__(self, obs_size: int, num_slots: int, hidden: int = 64, head_hidden: int = 128) -> None:
        super().__init__()
        self.encoder = nn.GRU(obs_size, hidden, batch_first=True)
        self.head = ProbeHead(hidden, num_slots, head_hidden)

    def forward(self, observations: Tensor) -> ProbeOutput:
        features, _ = self.encoder(observations)
        result: ProbeOutput = self.head(features)
        return result
