"""Advantages and returns of one round (reference/tamiyo_simic.md §5.6–5.8), in raw return units."""

from __future__ import annotations

import torch

ADVANTAGE_STD_FLOOR = 0.1  # §5.7
RETURN_VARIANCE_FLOOR = 1.0  # §5.8


def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    bootstrap_values: torch.Tensor,
    terminal: torch.Tensor,
    gamma: float,
    gae_lambda: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """§5.6 per env row (no cross-env mixing), values in raw return units.

    δ_t = r_t + γ·V_{t+1}·m_t − V_t and Â_t = δ_t + γλ·m_t·Â_{t+1}, with m_t = 0 only at a true terminal;
    the last step bootstraps from `bootstrap_values` (V of the post-action state, zero where there is none).
    Returns (advantages, returns = Â + V).
    """
    n_envs, length = rewards.shape
    advantages = torch.zeros_like(rewards)
    last_advantage = torch.zeros(n_envs)
    for t in reversed(range(length)):
        next_value = bootstrap_values if t == length - 1 else values[:, t + 1]
        not_terminal = (~terminal[:, t]).float()
        delta = rewards[:, t] + gamma * next_value * not_terminal - values[:, t]
        last_advantage = delta + gamma * gae_lambda * not_terminal * last_advantage
        advantages[:, t] = last_advantage
    return advantages, advantages + values


def normalize_advantages(advantages: torch.Tensor) -> torch.Tensor:
    """§5.7: (Â − μ)/(max(σ, 0.1) + 1e-8) over all steps, population std."""
    mean = advantages.mean()
    std = advantages.std(unbiased=False)
    return (advantages - mean) / (torch.clamp(std, min=ADVANTAGE_STD_FLOOR) + 1e-8)


def explained_variance(values: torch.Tensor, returns: torch.Tensor) -> float:
    """1 − Var(R − V)/max(Var(R), 1): how much of the return the critic explained before the update (§5.8)."""
    return float(
        1.0
        - (returns - values).var(unbiased=False) / torch.clamp(returns.var(unbiased=False), min=RETURN_VARIANCE_FLOOR)
    )
