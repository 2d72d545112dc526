"""SHAPED and ESCROW: rewards built on counterfactual attribution (reference/tamiyo_simic.md §6.4–6.12).

r = B + W_blend + W_hold + F + S_syn − rent + shock − occupancy + action terms + terminal; ESCROW swaps the
attribution B for a per-slot credit ledger.
"""

from __future__ import annotations

import math
from typing import Never, NoReturn

from leyline_schemas.enums import LifecycleOp, RewardMode, SeedStage
from leyline_schemas.lifecycle import SlotState
from services.simic.reward_config import RewardConfig
from services.simic.reward_inputs import RewardInputs, SlotView
from services.simic.reward_ledgers import EpisodeRewardState
from services.simic.rewards_potential import (
    germination_bonus,
    germination_clawback,
    prune_forfeiture,
    seed_pbrs,
    timing_discount,
)

MIN_PRUNE_AGE = 5
ESCROW_STEP_CLIP = 2.0
PROXY_ATTRIBUTION_WEIGHT = 0.3
_COSTED_STAGES = frozenset({SeedStage.BLENDING, SeedStage.HOLDING, SeedStage.FOSSILIZED})


def attribution_discount(total_improvement: float | None) -> float:
    """d = 1, or 1/(1 + e^{3|I|}) when the seeds together leave the host worse (§6.4)."""
    if total_improvement is None or total_improvement >= 0.0:
        return 1.0
    return 1.0 / (1.0 + math.exp(min(3.0 * abs(total_improvement), 700.0)))


def ratio_penalty(contribution: float | None, total_improvement: float | None, discount: float) -> float:
    """ρ ≤ 0 when a seed's removal cost dwarfs the total gain: the mark of a seed holding the host hostage (§6.4)."""
    if contribution is None or total_improvement is None or contribution <= 1.0 or discount < 0.5:
        return 0.0
    if total_improvement > 0.1:
        ratio = contribution / total_improvement
        return -min(0.3, 0.1 * (ratio - 5.0) / 5.0) if ratio > 5.0 else 0.0
    return -0.3 * min(1.0, contribution / 10.0)


def harmonic_attribution(contribution: float, progress: float | None) -> float:
    """The share of a non-negative contribution that progress since germination confirms (§6.5)."""
    if progress is None:
        return 0.5 * contribution
    if progress <= 0.0:
        return 0.0
    if contribution >= progress:
        return 2.0 * progress * contribution / (progress + contribution)
    return contribution


def effective_params(inputs: RewardInputs) -> float:
    """P_eff = Σ over blended-in slots of (0.0039·H + α·n) (§6.8): the parameters the host is really paying for."""
    host = inputs.host_params
    return sum(0.0039 * host + slot.alpha * slot.seed_params for slot in inputs.slots if slot.stage in _COSTED_STAGES)


def rent(inputs: RewardInputs) -> float:
    """min(0.5·ln(1 + P_eff/max(H, 200)), 1.5) (§6.8)."""
    growth = effective_params(inputs) / max(inputs.host_params, 200)
    return min(0.5 * math.log1p(growth), 1.5)


def alpha_shock(inputs: RewardInputs) -> float:
    """max(−0.1958·Σ(Δα)²·n_prev/max(H, 200), −1) (§6.8): sudden alpha swings are a cheap way to game attribution."""
    swing = sum((slot.alpha - slot.previous_alpha) ** 2 * slot.previous_seed_params for slot in inputs.slots)
    return max(-0.1958 * swing / max(inputs.host_params, 200), -1.0)


def occupancy(slots: tuple[SlotView, ...]) -> float:
    """0.01·max(0, active + fossils − 1) + 0.002·fossils (§6.8): the first seed is free, every other one costs."""
    fossils = sum(1 for slot in slots if slot.stage is SeedStage.FOSSILIZED)
    active = sum(
        1
        for slot in slots
        if slot.stage not in (SeedStage.DORMANT, SeedStage.UNKNOWN, SeedStage.FOSSILIZED, SeedStage.PRUNED)
    )
    return 0.01 * max(0, active + fossils - 1) + 0.002 * fossils


def contribution_components(config: RewardConfig, inputs: RewardInputs, state: EpisodeRewardState) -> dict[str, float]:
    """The SHAPED (or ESCROW) reward of one step, by component."""
    seed = inputs.seed
    op = inputs.effective_op
    improvement = inputs.total_improvement
    discount = attribution_discount(improvement)
    rho = 0.0 if config.disable_anti_gaming else ratio_penalty(inputs.contribution, improvement, discount)

    if config.mode is RewardMode.ESCROW:
        # ESCROW folds ρ into its credit target instead of paying it on top.
        attribution, applied_rho = _escrow_attribution(inputs, state, rho), 0.0
    else:
        attribution, applied_rho = _shaped_attribution(inputs, discount, rho)
    out: dict[str, float] = {"attribution": attribution, "ratio_penalty": applied_rho}
    final_b = attribution + applied_rho

    epochs = seed.metrics.epochs_in_current_stage if seed is not None else 0
    if seed is not None and seed.stage is SeedStage.BLENDING and improvement is not None and improvement < 0.0:
        out["blending_warning"] = -0.1 - min(0.05 * epochs, 0.3)
    holding_idle = op not in (LifecycleOp.FOSSILIZE, LifecycleOp.PRUNE)
    if seed is not None and seed.stage is SeedStage.HOLDING and holding_idle and epochs >= 2 and final_b > 0.0:
        # §6.6: a seed that is paying off should be committed, not left dwelling in HOLDING.
        out["holding_warning"] = -min(0.1 + 0.05 * max(0, epochs - 2), 0.3)
    if inputs.interaction_sum > 0.0 and discount >= 0.5 and final_b > 0.0:
        out["synergy"] = 0.1 * math.tanh(0.5 * inputs.interaction_sum)
    if inputs.target is not None and not config.disable_pbrs:
        out["pbrs"] = seed_pbrs(inputs.target, state, config.gamma, birth_paid=True)

    out["rent"] = -rent(inputs)
    if not config.disable_anti_gaming:
        out["alpha_shock"] = alpha_shock(inputs)
    out["occupancy"] = -occupancy(inputs.slots)
    _add(out, _action_terms(config, inputs, seed, state))

    if inputs.is_terminal:
        if not config.disable_terminal_reward:
            out["terminal"] = 0.05 * inputs.val_accuracy
        if config.mode is RewardMode.ESCROW:
            out["escrow_forfeit"] = state.forfeit_unfinished_credit(inputs.slots)
        if not config.disable_pbrs:
            out["germination_clawback"] = germination_clawback(inputs.slots, inputs.epoch, config.gamma)
    return out


def _shaped_attribution(inputs: RewardInputs, discount: float, rho: float) -> tuple[float, float]:
    """Bounded attribution B (§6.5) and the ratio penalty actually applied; B is flipped for PRUNE before ρ is added."""
    seed = inputs.seed
    if seed is None or seed.stage is SeedStage.FOSSILIZED:
        return 0.0, 0.0
    contribution = inputs.contribution
    attribution = 0.0
    if contribution is not None:
        if contribution < 0.0:
            attribution = contribution
        else:
            tau = timing_discount(inputs.epoch - inputs.seed_age)
            attribution = harmonic_attribution(contribution, inputs.progress) * discount * tau
    elif seed.stage in (SeedStage.BLENDING, SeedStage.HOLDING):
        # Proxy path: only a blended-in seed's own stage-relative gain, never a pre-BLENDING seed's.
        gain = seed.metrics.current_val_accuracy - seed.metrics.accuracy_at_stage_start
        attribution = PROXY_ATTRIBUTION_WEIGHT * gain if gain > 0.0 else 0.0
    improvement = inputs.total_improvement
    if inputs.effective_op is LifecycleOp.FOSSILIZE and improvement is not None and improvement < 0.0:
        attribution = 0.0
    if inputs.effective_op is LifecycleOp.PRUNE:
        attribution = -attribution
    return attribution, rho


def _escrow_attribution(inputs: RewardInputs, state: EpisodeRewardState, rho: float) -> float:
    """§6.12: pay only the change of a per-slot credit target, so credit earned early is returned if it evaporates."""
    seed = inputs.seed
    if seed is None:
        return 0.0
    held = state.credit(seed.slot_id)
    if inputs.effective_op is LifecycleOp.PRUNE:
        state.set_credit(seed.slot_id, 0.0)
        return -held
    if seed.stage is SeedStage.FOSSILIZED:
        return 0.0
    contribution = inputs.contribution
    if contribution is None:
        return 0.0
    if contribution < 0.0:
        state.set_credit(seed.slot_id, 0.0)
        return contribution - held
    progress = inputs.escrow_progress
    if progress is None:
        attributed = 0.5 * contribution
    elif progress <= 0.0:
        attributed = 0.0
    elif contribution >= progress:
        attributed = math.sqrt(progress * contribution)
    else:
        attributed = contribution
    target = max(0.0, attributed + rho)
    paid = min(max(target - held, -ESCROW_STEP_CLIP), ESCROW_STEP_CLIP)
    state.set_credit(seed.slot_id, held + paid)
    return paid


def _action_terms(
    config: RewardConfig, inputs: RewardInputs, seed: SlotState | None, state: EpisodeRewardState
) -> dict[str, float]:
    """Per-op costs and shaping (§6.9); potential payments and the fossil bonus are named apart for the ablations.

    Every op has its own branch: an op this chain does not know raises instead of being charged as another.
    """
    op = inputs.effective_op
    out: dict[str, float] = {}
    if op is LifecycleOp.WAIT:
        pass
    elif op is LifecycleOp.GERMINATE:
        if inputs.target is not None:
            out["action"] = -0.3
        elif not config.disable_pbrs and not inputs.is_terminal:
            out["pbrs_germination"] = germination_bonus(inputs.epoch, config.gamma)
        _add(out, {"action": -0.15})
    elif op is LifecycleOp.FOSSILIZE:
        shaping, legitimacy, earns_bonus = _fossilize_shaping(inputs, seed)
        out["action"] = shaping - 0.01
        if earns_bonus and not config.disable_terminal_reward:
            out["fossil_bonus"] = 3.0 * math.tanh(1.0 / 3.0) * legitimacy
    elif op is LifecycleOp.PRUNE:
        if seed is not None and not config.disable_pbrs:
            out["pbrs_forfeit"] = prune_forfeiture(seed, state)
        out["action"] = _prune_shaping(inputs, seed) - 0.005
    elif op is LifecycleOp.ADVANCE:
        if seed is not None and seed.stage is SeedStage.TRAINING:
            out["action"] = -0.1
    elif op is LifecycleOp.SET_ALPHA_TARGET:
        out["action"] = -0.005
    elif op is LifecycleOp.GROW_INTERNAL or op is LifecycleOp.SHRINK_INTERNAL:
        # plans/kasmina2-phase0.md §8.1, Choice 10: a reversible local adjustment, priced like SET_ALPHA_TARGET.
        out["action"] = -config.internal_op_cost
    else:
        unknown_op(op)
    return out


def unknown_op(op: Never) -> NoReturn:
    """The end of a per-op chain: mypy proves it unreachable for every LifecycleOp, and at run time it raises."""
    raise ValueError(f"reward invariant: no reward rule for op {op!r}; every LifecycleOp needs its own branch")


def _fossilize_shaping(inputs: RewardInputs, seed: SlotState | None) -> tuple[float, float, bool]:
    """FOSSILIZE shaping, its legitimacy ℓ = min(1, e/5), and whether the immediate fossil bonus is earned (§6.9)."""
    improvement = inputs.total_improvement
    contribution = inputs.contribution
    if seed is None or seed.stage is not SeedStage.HOLDING or improvement is None:
        return -1.0, 0.0, False
    if improvement < 0.0:
        ransom = 0.3 if contribution is not None and contribution > 0.1 and improvement < -0.2 else 0.0
        return -0.5 - min(0.2 * abs(improvement), 1.0) - ransom, 0.0, False
    legitimacy = min(1.0, seed.metrics.epochs_in_current_stage / 5.0)
    if contribution is not None and contribution >= 1.0:
        return (0.5 + 0.1 * contribution) * legitimacy, legitimacy, True
    return -0.2, legitimacy, False


def _prune_shaping(inputs: RewardInputs, seed: SlotState | None) -> float:
    """PRUNE shaping (§6.9): pruning young or helpful seeds costs, pruning harmful ones is mildly rewarded."""
    if seed is None:
        return -0.2
    if seed.stage is SeedStage.FOSSILIZED:
        return -1.0
    age = inputs.seed_age
    if age < MIN_PRUNE_AGE:
        return -0.3 * (MIN_PRUNE_AGE - age)
    contribution = inputs.contribution
    if contribution is None:
        return 0.0
    if contribution < -0.5:
        return -0.1 if age < 3 else 0.15
    if contribution < 0.0:
        return 0.1
    return max(-0.3 - 0.05 * contribution, -0.9)


def _add(into: dict[str, float], terms: dict[str, float]) -> None:
    for name, value in terms.items():
        into[name] = into.get(name, 0.0) + value
