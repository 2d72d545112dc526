"""PPO for the factored recurrent policy, in the spirit of CleanRL's ppo_atari_lstm (reference/tamiyo_simic.md §5).

One call of `ppo_update` consumes one round: anchor pass → GAE → advantage normalisation → explained variance →
value-normaliser update → several epochs of minibatches of whole env sequences (ARCHITECTURE.md §11), each with
per-head clipped losses under causal masks, the value and Q losses, entropy terms with floors, the KL early stop
and the finiteness gate. The per-head masking is the only addition to textbook PPO.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from leyline_schemas import HEAD_NAMES
from services.policy.network import FactoredRecurrentActorCritic
from services.policy.sampling import evaluate_actions
from services.simic.advantages import compute_gae, explained_variance, normalize_advantages
from services.simic.normalizers import ValueNormalizer
from services.simic.rollout import RolloutBatch

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


@dataclass(frozen=True)
class PPOConfig:
    """Hyper-parameters; defaults follow §5.2 except epochs/minibatches, which ARCHITECTURE.md §11 turns on."""

    gamma: float = 0.995
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


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the masked entries; the denominator is clamped at 1 so an empty mask gives 0 (§5.12)."""
    mask = mask.float()
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


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
    log_ratio = (log_prob - ref_log_prob).clamp(-LOG_RATIO_CLIP, LOG_RATIO_CLIP)
    ratio = log_ratio.exp()
    head_advantages = advantages * causal.float()
    unclipped = ratio * head_advantages
    clipped = ratio.clamp(1.0 - clip, 1.0 + clip) * head_advantages
    return -masked_mean(torch.min(unclipped, clipped), causal & acting), ratio, log_ratio


def weighted_value_loss(predicted: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """½·Σw(V − R/σ)²/Σw, with w = 0.2 on forced steps and 1 elsewhere (§5.12, §2.14)."""
    return 0.5 * ((predicted - targets) ** 2 * weights).sum() / weights.sum().clamp(min=1e-8)


def entropy_floor_penalty(head: str, entropy: torch.Tensor, available: torch.Tensor) -> torch.Tensor:
    """κ_k·max(0, φ_k − H̄_k)² over the steps where the head was available and not forced; 0 when it never was."""
    if not bool(available.any()):
        return torch.zeros(())
    shortfall = torch.clamp(ENTROPY_FLOORS[head] - masked_mean(entropy, available), min=0.0)
    return FLOOR_COEFFICIENTS[head] * shortfall**2


@dataclass
class Evaluation:
    """What the network says about a set of stored sequences at its current weights."""

    log_probs: dict[str, torch.Tensor]
    entropies: dict[str, torch.Tensor]
    values: torch.Tensor
    q_values: torch.Tensor
    contributions: torch.Tensor
    features: torch.Tensor
    bootstrap_values: torch.Tensor | None = None


def evaluate_sequences(
    network: FactoredRecurrentActorCritic, batch: RolloutBatch, rows: torch.Tensor, *, with_bootstrap: bool = False
) -> Evaluation:
    """Unroll whole sequences `rows` from the zero hidden state and re-score their stored actions (§4.10)."""
    obs = batch.obs[rows]
    state = network.initial_state(len(rows))
    out = network(obs, batch.blueprints[rows], state, batch.starts[rows])
    masks = {head: batch.masks[head][rows] for head in HEAD_NAMES}
    actions = {head: batch.actions[head][rows] for head in HEAD_NAMES}
    log_probs, entropies = evaluate_actions(out.logits, masks, actions)
    q_values = network.q_value(out.features, actions["op"])
    contributions = network.contributions(out.features)
    bootstrap_values = None
    if with_bootstrap:
        # V(s_{T+1}) from the hidden state carried out of the unroll, never a reset one (§5.4).
        boot = network(batch.bootstrap_obs[rows].unsqueeze(1), batch.bootstrap_blueprints[rows].unsqueeze(1), out.state)
        bootstrap_values = boot.value[:, 0] * batch.bootstrap[rows].float()
    return Evaluation(log_probs, entropies, out.value, q_values, contributions, out.features, bootstrap_values)


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
    all_rows = torch.arange(batch.n_envs)
    acting = batch.acted & ~batch.forced  # §2.14: forced steps carry no actor or entropy gradient

    # Anchor pass (§5.9): reference log-probs, V(s_t) and V(s_{T+1}) at the weights that start this update.
    network.eval()
    with torch.no_grad():
        anchor = evaluate_sequences(network, batch, all_rows, with_bootstrap=True)
    assert anchor.bootstrap_values is not None
    values = value_normalizer.denormalize(anchor.values)
    bootstrap_values = value_normalizer.denormalize(anchor.bootstrap_values)

    advantages, returns = compute_gae(
        batch.rewards, values, bootstrap_values, batch.terminal, config.gamma, config.gae_lambda
    )
    norm_advantages = normalize_advantages(advantages)
    stats.explained_variance = explained_variance(values, returns)
    value_normalizer.update(returns)
    targets = value_normalizer.normalize(returns)

    entropy_coef = entropy_coefficient(config, updates_done)
    value_coef = value_coefficient(config, updates_done)
    aux_coef = config.aux_coef * min(1.0, updates_done / max(1, config.aux_warmup_updates))
    floor_scale = floor_penalty_scale(updates_done / max(1, total_updates))
    value_weights = torch.where(batch.forced, config.forced_value_weight, 1.0)
    # §5.14: each head's KL counts by how often the head is causally relevant.
    kl_weights = {head: batch.causal[head].float().mean() for head in HEAD_NAMES}

    network.train()
    mb_size = max(1, math.ceil(batch.n_envs / config.minibatches))
    sums: dict[str, float] = {}
    n_measured = 0
    stats_ratio_max = 0.0
    # Dropout draws from the global generator: seed it from ours, so a replayed update is bit-for-bit the same.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
        for _epoch in range(config.epochs):
            stats.epochs_run += 1
            order = torch.randperm(batch.n_envs, generator=generator)
            for start in range(0, batch.n_envs, mb_size):
                rows = order[start : start + mb_size]
                new = evaluate_sequences(network, batch, rows)
                adv = norm_advantages[rows]
                policy_loss = torch.zeros(())
                entropy_loss = torch.zeros(())
                floor_penalty = torch.zeros(())
                kl_total, kl_weight, clipped, clip_count = torch.zeros(()), torch.zeros(()), 0.0, 0.0
                ratio_max = 0.0
                for head in HEAD_NAMES:
                    causal = batch.causal[head][rows]
                    mask = causal & acting[rows]  # M_k = causal ∧ ¬forced (∧ the policy actually sampled the step)
                    head_loss, ratio, log_ratio = clipped_surrogate(
                        new.log_probs[head], anchor.log_probs[head][rows], adv, causal, acting[rows], config.clip
                    )
                    policy_loss = policy_loss + head_loss
                    entropy_loss = entropy_loss - ENTROPY_MULTIPLIERS[head] * masked_mean(new.entropies[head], mask)
                    floor_penalty = floor_penalty + entropy_floor_penalty(
                        head, new.entropies[head], batch.available[head][rows] & acting[rows]
                    )
                    with torch.no_grad():
                        kl_head = masked_mean((ratio - 1.0) - log_ratio, causal & batch.acted[rows])
                        kl_total = kl_total + kl_weights[head] * kl_head
                        kl_weight = kl_weight + kl_weights[head]
                        outside = ((ratio - 1.0).abs() > config.clip) & mask
                        clipped += float(outside.sum())
                        clip_count += float(mask.sum())
                        if bool(mask.any()):
                            ratio_max = max(ratio_max, float(ratio[mask].max()))
                floor_penalty = floor_scale * floor_penalty
                approx_kl = float(kl_total / kl_weight.clamp(min=1e-8))

                value_loss = weighted_value_loss(new.values, targets[rows], value_weights[rows])
                q_loss = weighted_value_loss(new.q_values, targets[rows], value_weights[rows])
                aux_mask = batch.contribution_mask[rows]
                aux_target = batch.contribution_targets[rows].clamp(-AUX_TARGET_CLIP, AUX_TARGET_CLIP)
                aux_loss = masked_mean((new.contributions - aux_target) ** 2, aux_mask)

                if approx_kl > 1.5 * config.target_kl:
                    # §5.14: stop before this minibatch's backward pass; the policy moved far enough for this round.
                    stats.early_stopped = True
                    break
                if not _finite(*new.log_probs.values(), new.values, new.q_values):
                    stats.skipped_steps += 1  # §5.15: finiteness gate
                    continue

                loss = (
                    policy_loss
                    + value_coef * value_loss
                    + entropy_coef * entropy_loss
                    + floor_penalty
                    + 0.5 * value_coef * q_loss
                    + aux_coef * aux_loss
                )
                optimizer.zero_grad()
                loss.backward()
                grad_norm = nn.utils.clip_grad_norm_(network.parameters(), config.max_grad_norm)
                optimizer.step()
                stats.optimizer_steps += 1

                n_measured += 1
                for name, value in (
                    ("policy_loss", float(policy_loss.detach())),
                    ("value_loss", float(value_loss.detach())),
                    ("q_loss", float(q_loss.detach())),
                    ("aux_loss", float(aux_loss.detach())),
                    ("entropy_loss", float(entropy_loss.detach())),
                    ("floor_penalty", float(floor_penalty.detach())),
                    ("approx_kl", approx_kl),
                    ("clip_fraction", clipped / max(clip_count, 1.0)),
                    ("grad_norm", float(grad_norm)),
                ):
                    sums[name] = sums.get(name, 0.0) + value
                stats_ratio_max = max(stats_ratio_max, ratio_max)
            if stats.early_stopped:
                break

    means = {name: total / max(n_measured, 1) for name, total in sums.items()}
    stats.policy_loss = means.get("policy_loss", 0.0)
    stats.value_loss = means.get("value_loss", 0.0)
    stats.q_loss = means.get("q_loss", 0.0)
    stats.aux_loss = means.get("aux_loss", 0.0)
    stats.entropy_loss = means.get("entropy_loss", 0.0)
    stats.floor_penalty = means.get("floor_penalty", 0.0)
    stats.approx_kl = means.get("approx_kl", 0.0)
    stats.clip_fraction = means.get("clip_fraction", 0.0)
    stats.head_entropies = {
        head: float(masked_mean(anchor.entropies[head], batch.causal[head] & acting)) for head in HEAD_NAMES
    }
    network.eval()
    with torch.no_grad():
        q_all = network.q_values(anchor.features[0, 0])
        lstm_rms = float(anchor.features.pow(2).mean().sqrt())
    agreement = _rollout_agreement(batch, anchor, current_version)
    stats.diagnostics = {
        "grad_norm": means.get("grad_norm", 0.0),
        "ratio_max": stats_ratio_max,
        "advantage_mean": float(advantages.mean()),
        "advantage_std": float(advantages.std(unbiased=False)),
        "return_mean": float(returns.mean()),
        "return_std": float(returns.std(unbiased=False)),
        "value_mean": float(values.mean()),
        "value_scale": value_normalizer.scale,
        "forced_ratio": float(batch.forced.float().mean()),
        "entropy_coef": entropy_coef,
        "value_coef": value_coef,
        "lstm_out_rms": lstm_rms,
        "q_spread": float(q_all.max() - q_all.min()),
        "optimizer_steps": float(stats.optimizer_steps),
        "skipped_steps": float(stats.skipped_steps),
        "rollout_logprob_gap": agreement,
        **{f"q_op{op}": float(q) for op, q in enumerate(q_all.tolist())},
    }
    stats.update_seconds = time.perf_counter() - started
    return stats


def _rollout_agreement(batch: RolloutBatch, anchor: Evaluation, current_version: int) -> float:
    """Max |rollout − anchor| joint log-prob over steps sampled by the version being trained (12.4 at runtime)."""
    same = batch.acted & (batch.policy_versions == current_version)
    if not bool(same.any()):
        return 0.0
    joint_rollout = sum(batch.rollout_log_probs[head] for head in HEAD_NAMES)
    joint_anchor = sum(anchor.log_probs[head] for head in HEAD_NAMES)
    assert isinstance(joint_rollout, torch.Tensor) and isinstance(joint_anchor, torch.Tensor)
    return float((joint_rollout - joint_anchor).abs()[same].max())
