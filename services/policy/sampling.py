"""Hierarchical masked sampling of the eight action heads, and the matching scoring PPO uses.

Op is sampled first; every other head is then sampled under the op-conditioned mask of `leyline_schemas.heads`'
`op_conditioned_mask`, so a head the op does not use has one legal (canonical) value and log-prob exactly 0
(reference/tamiyo_simic.md §2.7). Masking, the per-head probability floor, log-probs and normalised
entropies are computed in fp32 by one function, `floored_log_probs`, in rollout and update alike (§2.10–2.12),
which is what makes the rollout and update log-probs agree (invariant 12.4).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from leyline_schemas.decisions import HEAD_NAMES, ActionMasks
from leyline_schemas.heads import conditioned_masks

MASKED_LOGIT = -1.0e4  # §2.10: safe in fp16/bf16, and exp() of it is exactly 0 in fp32

#: §2.11: hard per-head probability floors, applied in rollout sampling and update scoring.
PROBABILITY_FLOORS: dict[str, float] = {
    "op": 0.15,
    "slot": 0.05,
    "blueprint": 0.12,
    "style": 0.08,
    "tempo": 0.12,
    "alpha_target": 0.08,
    "alpha_speed": 0.06,
    "alpha_curve": 0.06,
}

#: Op first, then the heads it conditions (§2.7).
SAMPLING_ORDER: tuple[str, ...] = ("op", *(head for head in HEAD_NAMES if head != "op"))


def floored_log_probs(logits: torch.Tensor, mask: torch.Tensor, floor: float) -> torch.Tensor:
    """Log-probabilities [..., n] of a masked categorical with the single-pass probability floor of §2.11.

    f = min(floor, 0.99/n_valid); valid actions below f are lifted to f, the others are rescaled by
    (1 − n_under·f)/Σp_over; invalid actions keep the masked logit. An empty mask row raises (§2.6).
    """
    mask = mask.bool()
    n_valid = mask.sum(dim=-1, keepdim=True)
    if bool((n_valid == 0).any()):
        raise ValueError("mask invariant: a head has a mask row with no legal action (§2.6)")
    masked = torch.where(mask, logits.float(), MASKED_LOGIT)
    probs = torch.softmax(masked, dim=-1)
    f = torch.clamp(0.99 / n_valid.float(), max=floor)
    under = mask & (probs < f)
    over = mask & ~under
    rescale = (1.0 - under.sum(dim=-1, keepdim=True).float() * f) / (probs * over).sum(dim=-1, keepdim=True)
    floored = torch.where(under, f, probs * rescale)
    # log(1) on invalid entries keeps the backward pass finite; their value is replaced by the masked logit.
    return torch.where(mask, torch.log(torch.where(mask, floored, 1.0)), MASKED_LOGIT)


def normalized_entropy(log_probs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """H/ln(n_valid) over the valid actions, exactly 0 with a single legal action (§2.12)."""
    mask = mask.bool()
    valid_log_probs = torch.where(mask, log_probs, 0.0)
    entropy = -(valid_log_probs.exp() * mask * valid_log_probs).sum(dim=-1)
    n_valid = mask.sum(dim=-1)
    return torch.where(n_valid > 1, entropy / torch.log(n_valid.clamp(min=2).float()), 0.0)


@dataclass(frozen=True)
class SampledAction:
    """One value per head with its fp32 log-prob and normalised entropy."""

    action: dict[str, int]
    log_probs: dict[str, float]
    entropies: dict[str, float]


def _choose(log_probs: torch.Tensor, deterministic: bool, generator: torch.Generator | None) -> int:
    if deterministic:
        return int(torch.argmax(log_probs).item())
    return int(torch.multinomial(log_probs.exp(), 1, generator=generator).item())


def sample_action(
    logits: Mapping[str, torch.Tensor],
    masks: ActionMasks,
    *,
    deterministic: bool = False,
    generator: torch.Generator | None = None,
) -> SampledAction:
    """Sample op, then each other head under the op-conditioned mask; `logits[head]` has shape [n]."""
    action: dict[str, int] = {}
    log_probs: dict[str, float] = {}
    entropies: dict[str, float] = {}
    rows: dict[str, list[bool]] = {"op": list(masks.op)}
    for head in SAMPLING_ORDER:
        if head != "op" and len(rows) == 1:
            rows = conditioned_masks(masks, action["op"])
        if sum(rows[head]) == 1:
            # One legal value: probability exactly 1, so log-prob and entropy are exactly 0 (what scoring gives too).
            action[head], log_probs[head], entropies[head] = rows[head].index(True), 0.0, 0.0
            continue
        mask = torch.tensor(rows[head], dtype=torch.bool)
        head_log_probs = floored_log_probs(logits[head], mask, PROBABILITY_FLOORS[head])
        choice = _choose(head_log_probs, deterministic, generator)
        action[head] = choice
        log_probs[head] = float(head_log_probs[choice].item())
        entropies[head] = float(normalized_entropy(head_log_probs, mask).item())
    return SampledAction(action=action, log_probs=log_probs, entropies=entropies)


def evaluate_actions(
    logits: Mapping[str, torch.Tensor],
    masks: Mapping[str, torch.Tensor],
    actions: Mapping[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Per-head log-probs and normalised entropies [...] of stored actions under stored op-conditioned masks.

    `masks[head]` must come from `conditioned_masks` applied to the stored op, never from the base mask
    (§2.7); `logits[head]` and `masks[head]` have shape [..., n], `actions[head]` shape [...].
    """
    log_probs: dict[str, torch.Tensor] = {}
    entropies: dict[str, torch.Tensor] = {}
    for head in HEAD_NAMES:
        head_log_probs = floored_log_probs(logits[head], masks[head], PROBABILITY_FLOORS[head])
        log_probs[head] = head_log_probs.gather(-1, actions[head].long().unsqueeze(-1)).squeeze(-1)
        entropies[head] = normalized_entropy(head_log_probs, masks[head])
    return log_probs, entropies
