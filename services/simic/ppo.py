"""PPO for the factored recurrent policy, in the spirit of CleanRL's ppo_atari_lstm (reference/tamiyo_simic.md §5).

One call of `ppo_update` consumes one round: anchor pass → GAE → advantage normalisation → explained variance →
value-normaliser update → several epochs of minibatches of whole env sequences (ARCHITECTURE.md §11), each with
per-head clipped losses under causal masks, the value and Q losses, entropy terms with floors, the KL early stop
and the finiteness gate. The loss terms are in `ppo_losses`, the diagnostics in `ppo_diagnostics`.

Off-policy steps (`--async`: acted by a version older than the one being trained) are importance-corrected, not
dropped: their clipped ratio is π_θ/μ against the behaviour log-probs their step records carry, so the clip bounds
how far the update may move on a step another version chose. Steps of the current version keep the ratio anchored at
the start of the update (§5.9), where π^ref = μ. The KL early stop always measures the move from that anchor, so
stale steps cannot trip it by themselves. Episodes older than `max_version_lag` are dropped by the learner.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch import nn

from leyline_schemas import HEAD_NAMES
from services.policy.network import FactoredRecurrentActorCritic
from services.simic.advantages import compute_gae, explained_variance, normalize_advantages
from services.simic.evaluation import Evaluation, evaluate_sequences
from services.simic.normalizers import ValueNormalizer
from services.simic.ppo_diagnostics import ClipGauge, RoundFigures, UpdateStats, UpdateTally, summarize
from services.simic.ppo_losses import (
    Coefficients,
    LossTerms,
    approx_kl,
    auxiliary_loss,
    clipped_surrogate,
    entropy_bonus,
    entropy_floor_penalty,
    probability_ratio,
    weighted_value_loss,
)
from services.simic.reward_config import DEFAULT_GAMMA
from services.simic.rollout import RolloutBatch

__all__ = [
    "Evaluation",
    "PPOConfig",
    "UpdateStats",
    "clipped_surrogate",
    "entropy_floor_penalty",
    "evaluate_sequences",
    "kl_weights",
    "ppo_update",
    "stale_steps",
    "weighted_value_loss",
]


@dataclass(frozen=True)
class PPOConfig:
    """Hyper-parameters; defaults follow §5.2 except epochs/minibatches, which ARCHITECTURE.md §11 turns on.

    γ defaults to the reward's DEFAULT_GAMMA, and an arm's RewardConfig takes it from here (LearnerConfig.rewards).
    """

    gamma: float = DEFAULT_GAMMA
    gae_lambda: float = 0.98
    clip: float = 0.2
    learning_rate: float = 3e-4
    adam_eps: float = 1e-5
    epochs: int = 4
    minibatches: int = 2
    value_coef: float = 0.5
    value_warmup_updates: int = 10
    entropy_coef: float = 0.05
    entropy_coef_end: float | None = None
    entropy_coef_min: float = 0.01
    entropy_anneal_updates: int = 0
    target_kl: float = 0.015
    max_grad_norm: float = 5.0
    aux_coef: float = 0.05
    aux_warmup_updates: int = 1000
    forced_value_weight: float = 0.2
    updates_per_batch: int = 1

    def __post_init__(self) -> None:
        if self.updates_per_batch != 1:
            # §5.2 / invariant 12.10: a second update of one recurrent batch would reuse stale per-step hidden states.
            raise ValueError(f"updates_per_batch must be 1 with a recurrent policy, got {self.updates_per_batch}")
        if self.epochs < 1 or self.minibatches < 1:
            raise ValueError("epochs and minibatches must be at least 1")
        if not 0.0 < self.gamma <= 1.0 or not 0.0 <= self.gae_lambda <= 1.0:
            raise ValueError(f"gamma {self.gamma} / lambda {self.gae_lambda} out of range")


def entropy_coefficient(config: PPOConfig, updates_done: int) -> float:
    """§5.13: linear anneal from start to end over U updates, never below the minimum."""
    if config.entropy_anneal_updates <= 0 or config.entropy_coef_end is None:
        return max(config.entropy_coef, config.entropy_coef_min)
    fraction = min(1.0, updates_done / config.entropy_anneal_updates)
    coef = config.entropy_coef + fraction * (config.entropy_coef_end - config.entropy_coef)
    return max(coef, config.entropy_coef_min)


def value_coefficient(config: PPOConfig, updates_done: int) -> float:
    """§5.2: the value coefficient warms up linearly from 0.1·c_v to c_v."""
    if config.value_warmup_updates <= 0:
        return config.value_coef
    fraction = min(1.0, updates_done / config.value_warmup_updates)
    return config.value_coef * (0.1 + 0.9 * fraction)


def floor_penalty_scale(progress: float) -> float:
    """§5.12 s(p): 1.5 early, 1.0 in the middle, then down linearly to 0.5."""
    if progress < 0.25:
        return 1.5
    if progress < 0.75:
        return 1.0
    return 1.0 - 0.5 * min(1.0, (progress - 0.75) / 0.25)


def coefficients(config: PPOConfig, updates_done: int, total_updates: int) -> Coefficients:
    return Coefficients(
        value=value_coefficient(config, updates_done),
        entropy=entropy_coefficient(config, updates_done),
        aux=config.aux_coef * min(1.0, updates_done / max(1, config.aux_warmup_updates)),
        floor_scale=floor_penalty_scale(updates_done / max(1, total_updates)),
    )


@dataclass(frozen=True)
class Anchor:
    """What the anchor pass fixes for every minibatch of one update (§5.8–5.9)."""

    ref_log_probs: dict[str, torch.Tensor]  # log π^ref at the weights that start the update
    behaviour_log_probs: dict[str, torch.Tensor]  # the ratio's denominator: log μ on stale steps, log π^ref elsewhere
    advantages: torch.Tensor  # Â, normalised (§5.7)
    targets: torch.Tensor  # R/σ, the value targets
    value_weights: torch.Tensor  # w: 0.2 on forced steps, 1 elsewhere
    kl_weights: dict[str, torch.Tensor]  # §5.14: each head's KL counts by how often the head is causally relevant
    acting: torch.Tensor  # sampled by the policy and not forced


def loss_terms(
    new: Evaluation,
    batch: RolloutBatch,
    anchor: Anchor,
    rows: torch.Tensor,
    clip: float,
    c: Coefficients,
    gauge: ClipGauge,
) -> LossTerms:
    """Every term of one minibatch's loss, summed over the heads; `gauge` watches the ratios on the way."""
    adv = anchor.advantages[rows]
    acting = anchor.acting[rows]
    policy_loss = torch.zeros(())
    entropy_loss = torch.zeros(())
    floor_penalty = torch.zeros(())
    kl_total, kl_weight = torch.zeros(()), torch.zeros(())
    for head in HEAD_NAMES:
        causal = batch.causal[head][rows]
        mask = causal & acting  # M_k = causal ∧ ¬forced (∧ the policy actually sampled the step)
        l_clip, ratio, _ = clipped_surrogate(
            new.log_probs[head], anchor.behaviour_log_probs[head][rows], adv, causal, acting, clip
        )
        policy_loss = policy_loss + l_clip
        entropy_loss = entropy_loss - entropy_bonus(head, new.entropies[head], mask)
        floor_penalty = floor_penalty + entropy_floor_penalty(
            head, new.entropies[head], batch.available[head][rows] & acting
        )
        with torch.no_grad():
            anchor_ratio, log_ratio = probability_ratio(new.log_probs[head], anchor.ref_log_probs[head][rows])
            kl_total = kl_total + anchor.kl_weights[head] * approx_kl(
                anchor_ratio, log_ratio, causal & batch.acted[rows]
            )
            kl_weight = kl_weight + anchor.kl_weights[head]
        gauge.measure(ratio, mask, clip)
    floor_penalty = c.floor_scale * floor_penalty
    kl = float(kl_total / kl_weight.clamp(min=1e-8))
    value_loss = weighted_value_loss(new.values, anchor.targets[rows], anchor.value_weights[rows])
    q_loss = weighted_value_loss(new.q_values, anchor.targets[rows], anchor.value_weights[rows])
    aux_loss = auxiliary_loss(new.contributions, batch.contribution_targets[rows], batch.contribution_mask[rows])
    return LossTerms(policy_loss, value_loss, q_loss, aux_loss, entropy_loss, floor_penalty, kl)


def kl_weights(batch: RolloutBatch) -> dict[str, torch.Tensor]:
    """§5.14: each head's share of the early-stop KL is how often the head is causally relevant in the batch."""
    return {head: batch.causal[head].float().mean() for head in HEAD_NAMES}


def stale_steps(batch: RolloutBatch, current_version: int) -> torch.Tensor:
    """Steps the policy sampled with an older version than `current_version` (none when it is unknown, −1)."""
    if current_version < 0:
        return torch.zeros_like(batch.acted)
    return batch.acted & (batch.policy_versions < current_version)


def _finite(*tensors: torch.Tensor) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in tensors)


def ppo_update(
    network: FactoredRecurrentActorCritic,
    optimizer: torch.optim.Optimizer,
    batch: RolloutBatch,
    config: PPOConfig,
    value_normalizer: ValueNormalizer,
    *,
    updates_done: int,
    total_updates: int,
    generator: torch.Generator,
    current_version: int = -1,
) -> UpdateStats:
    """One PPO update on one round's batch; mutates the network, optimizer and value normaliser."""
    started = time.perf_counter()
    stats = UpdateStats()
    acting = batch.acted & ~batch.forced  # §2.14: forced steps carry no actor or entropy gradient

    # Anchor pass (§5.9): reference log-probs, V(s_t) and V(s_{T+1}) at the weights that start this update.
    network.eval()
    with torch.no_grad():
        reference = evaluate_sequences(network, batch, torch.arange(batch.n_envs), with_bootstrap=True)
    assert reference.bootstrap_values is not None
    values = value_normalizer.denormalize(reference.values)
    bootstrap_values = value_normalizer.denormalize(reference.bootstrap_values)

    advantages, returns = compute_gae(
        batch.rewards, values, bootstrap_values, batch.terminal, config.gamma, config.gae_lambda
    )
    norm_advantages = normalize_advantages(advantages)
    stats.explained_variance = explained_variance(values, returns)
    value_normalizer.update(returns)
    stale = stale_steps(batch, current_version)
    anchor = Anchor(
        ref_log_probs=reference.log_probs,
        behaviour_log_probs={
            head: torch.where(stale, batch.rollout_log_probs[head], reference.log_probs[head]) for head in HEAD_NAMES
        },
        advantages=norm_advantages,
        targets=value_normalizer.normalize(returns),
        value_weights=torch.where(batch.forced, config.forced_value_weight, 1.0),
        kl_weights=kl_weights(batch),
        acting=acting,
    )
    c = coefficients(config, updates_done, total_updates)

    network.train()
    mb_size = max(1, math.ceil(batch.n_envs / config.minibatches))
    tally = UpdateTally()
    # Dropout draws from the global generator: seed it from ours, so a replayed update is bit-for-bit the same.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
        for _epoch in range(config.epochs):
            stats.epochs_run += 1
            order = torch.randperm(batch.n_envs, generator=generator)
            for start in range(0, batch.n_envs, mb_size):
                rows = order[start : start + mb_size]
                new = evaluate_sequences(network, batch, rows)
                gauge = ClipGauge()
                terms = loss_terms(new, batch, anchor, rows, config.clip, c, gauge)
                if terms.approx_kl > 1.5 * config.target_kl:
                    # §5.14: stop before this minibatch's backward pass; the policy moved far enough for this round.
                    stats.early_stopped = True
                    break
                if not _finite(*new.log_probs.values(), new.values, new.q_values):
                    stats.skipped_steps += 1  # §5.15: finiteness gate
                    continue
                loss = terms.total(c)
                optimizer.zero_grad()
                loss.backward()  # type: ignore[no-untyped-call]  # torch's Tensor.backward is unannotated
                grad_norm = nn.utils.clip_grad_norm_(network.parameters(), config.max_grad_norm)
                optimizer.step()
                stats.optimizer_steps += 1
                tally.add(terms, gauge, float(grad_norm))
            if stats.early_stopped:
                break

    figures = RoundFigures(reference, acting, advantages, returns, values)
    summarize(
        stats, tally, network, batch, figures, c=c, value_scale=value_normalizer.scale, current_version=current_version
    )
    stats.diagnostics["importance_corrected_steps"] = float(stale.sum())
    stats.update_seconds = time.perf_counter() - started
    return stats
