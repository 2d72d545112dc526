"""SIMPLIFIED, SPARSE and MINIMAL: rewards that pay mostly at the horizon (reference/tamiyo_simic.md §6.13–6.14)."""

from __future__ import annotations

from leyline_schemas.enums import LifecycleOp, RewardMode, SeedStage
from services.simic.reward_config import RewardConfig
from services.simic.reward_inputs import RewardInputs
from services.simic.reward_ledgers import EpisodeRewardState
from services.simic.rewards_contribution import MIN_PRUNE_AGE
from services.simic.rewards_potential import seed_pbrs

CONTRIBUTING_FOSSIL_IMPROVEMENT = 1.0


def simplified_components(config: RewardConfig, inputs: RewardInputs, state: EpisodeRewardState) -> dict[str, float]:
    """r = F − 0.01·[a ≠ WAIT] + [terminal](3·acc/100 + 2·contributing fossils) (§6.13); no rent, no anti-gaming."""
    out: dict[str, float] = {}
    if inputs.target is not None and not config.disable_pbrs:
        out["pbrs"] = seed_pbrs(inputs.target, state, config.gamma, birth_paid=False)
    if inputs.effective_op is not LifecycleOp.WAIT:
        out["action"] = -0.01
    if inputs.is_terminal and not config.disable_terminal_reward:
        contributing = sum(
            1
            for slot in inputs.slots
            if slot.stage is SeedStage.FOSSILIZED and slot.total_improvement >= CONTRIBUTING_FOSSIL_IMPROVEMENT
        )
        out["terminal"] = 3.0 * inputs.val_accuracy / 100.0 + 2.0 * contributing
    return out


def sparse_components(config: RewardConfig, inputs: RewardInputs) -> dict[str, float]:
    """SPARSE: s·clip(committed acc/100 − w·P_fossil/budget, ±1) at the horizon; MINIMAL adds −0.1 per young prune."""
    out: dict[str, float] = {}
    if inputs.is_terminal:
        # Committed accuracy counts only what fossilization made permanent; without the config, nothing is uncommitted.
        committed = inputs.committed_accuracy if inputs.committed_accuracy is not None else inputs.val_accuracy
        fossil_params = sum(slot.seed_params for slot in inputs.slots if slot.stage is SeedStage.FOSSILIZED)
        score = committed / 100.0 - config.param_penalty_weight * fossil_params / config.param_budget
        out["terminal"] = config.sparse_reward_scale * min(max(score, -1.0), 1.0)
    seed = inputs.seed
    young_prune = inputs.effective_op is LifecycleOp.PRUNE and seed is not None and inputs.seed_age < MIN_PRUNE_AGE
    if config.mode is RewardMode.MINIMAL and young_prune:
        out["action"] = -0.1
    return out
