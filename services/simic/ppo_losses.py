"""The terms of the PPO loss, one function each, named as in Schulman et al. 2017 (reference/tamiyo_simic.md §5.11–14).

r_t(θ) is `probability_ratio`, L^CLIP is `clipped_surrogate`, L^VF is `weighted_value_loss` (unclipped, as in the
reference: §5.2), S is `entropy_bonus` and the early-stop KL is `approx_kl`; `LossTerms.total` adds them with the
coefficients of §5.12. Everything here is per head and masked, which is the only addition to textbook PPO.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# §5.12: per-head entropy multipliers, entropy floors and floor-penalty coefficients.
ENTROPY_MULTIPLIERS = {
    "op": 1.0,
    "slot": 1.0,
    "blueprint": 1.3,
    "style": 1.2,
    "tempo": 1.3,
    "alpha_target": 1.2,
    "alpha_speed": 1.2,
    "alpha_curve": 1.2,
}
ENTROPY_FLOORS = {
    "op": 0.30,
    "slot": 0.15,
    "blueprint": 0.20,
    "style": 0.15,
    "tempo": 0.20,
    "alpha_target": 0.10,
    "alpha_speed": 0.10,
    "alpha_curve": 0.10,
}
FLOOR_COEFFICIENTS = {
    "op": 0.3,
    "slot": 0.1,
    "blueprint": 0.3,
    "style": 0.1,
    "tempo": 0.3,
    "alpha_target": 0.1,
    "alpha_speed": 0.1,
    "alpha_curve": 0.1,
}
LOG_RATIO_CLIP = 20.0  # §5.11, per head
JOINT_LOG_RATIO_CLIP = 30.0
AUX_TARGET_CLIP = 10.0  # §5.12


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the masked entries; the denominator is clamped at 1 so an empty mask gives 0 (§5.12)."""
    mask = mask.float()
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def probability_ratio(log_prob: torch.Tensor, ref_log_prob: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """r_k = π_k/π_k^ref through the log ratio clipped at ±20 (§5.11). Returns (ratio, log ratio)."""
    log_ratio = (log_prob - ref_log_prob).clamp(-LOG_RATIO_CLIP, LOG_RATIO_CLIP)
    return log_ratio.exp(), log_ratio


def clipped_surrogate(
    log_prob: torch.Tensor,
    ref_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    causal: torch.Tensor,
    acting: torch.Tensor,
    clip: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One head's clipped loss −mean_{M_k} min(r·A_k, clip(r, 1±ε)·A_k) (§5.11–5.12), never a joint ratio.

    A_k = Â·1[head relevant to the effective op] and M_k = causal ∧ acting (acting excludes forced steps and steps
    the policy did not sample). Returns (loss, ratio, log ratio).
    """
    ratio, log_ratio = probability_ratio(log_prob, ref_log_prob)
    head_advantages = advantages * causal.float()
    unclipped = ratio * head_advantages
    clipped = ratio.clamp(1.0 - clip, 1.0 + clip) * head_advantages
    return -masked_mean(torch.min(unclipped, clipped), causal & acting), ratio, log_ratio


def weighted_value_loss(predicted: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """½·Σw(V − R/σ)²/Σw, with w = 0.2 on forced steps and 1 elsewhere (§5.12, §2.14); no value clipping (§5.2)."""
    return 0.5 * ((predicted - targets) ** 2 * weights).sum() / weights.sum().clamp(min=1e-8)


def entropy_bonus(head: str, entropy: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """β_k·mean_{M_k}(H̃_k), one head's share of the entropy bonus S; the loss subtracts it (L_H, §5.12)."""
    return ENTROPY_MULTIPLIERS[head] * masked_mean(entropy, mask)


def entropy_floor_penalty(head: str, entropy: torch.Tensor, available: torch.Tensor) -> torch.Tensor:
    """κ_k·max(0, φ_k − H̄_k)² over the steps where the head was available and not forced; 0 when it never was."""
    if not bool(available.any()):
        return torch.zeros(())
    shortfall = torch.clamp(ENTROPY_FLOORS[head] - masked_mean(entropy, available), min=0.0)
    return FLOOR_COEFFICIENTS[head] * shortfall**2


def approx_kl(ratio: torch.Tensor, log_ratio: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """One head's KL estimate mean_{causal}((r_k − 1) − log r_k) (§5.14), always ≥ 0."""
    return masked_mean((ratio - 1.0) - log_ratio, mask)


def auxiliary_loss(predicted: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L_aux: MSE of the predicted seed contributions against their targets clipped at ±10 (§5.12)."""
    return masked_mean((predicted - targets.clamp(-AUX_TARGET_CLIP, AUX_TARGET_CLIP)) ** 2, mask)


@dataclass(frozen=True)
class Coefficients:
    """The weights of one update's loss terms, fixed for the whole update (§5.12–5.13)."""

    value: float
    entropy: float
    aux: float
    floor_scale: float


@dataclass(frozen=True)
class LossTerms:
    """One minibatch's loss terms, each still carrying its gradient, and its KL estimate (no gradient)."""

    policy: torch.Tensor  # L_π = Σ_k L^CLIP_k
    value: torch.Tensor  # L_V
    q: torch.Tensor  # L_Q
    aux: torch.Tensor  # L_aux
    entropy: torch.Tensor  # L_H = −S
    floor: torch.Tensor  # P_floor, already scaled by s(p)
    approx_kl: float

    def total(self, c: Coefficients) -> torch.Tensor:
        """L = L_π + c_v·L_V + c_H·L_H + P_floor + ½c_v·L_Q + c_aux·L_aux (§5.12)."""
        return (
            self.policy
            + c.value * self.value
            + c.entropy * self.entropy
            + self.floor
            + 0.5 * c.value * self.q
            + c.aux * self.aux
        )
