"""BASIC and BASIC_PLUS: PBRS, a linear parameter cost and a fossilization bonus (reference/tamiyo_simic.md §6.15).

r = F′ − w·P_eff/budget + foss + [terminal]·5·Δacc/100 (+ drip in BASIC_PLUS).
"""

from __future__ import annotations

from leyline_schemas.enums import LifecycleOp, RewardMode, SeedStage
from services.simic.reward_config import RewardConfig
from services.simic.reward_inputs import RewardInputs
from services.simic.reward_ledgers import EpisodeRewardState
from services.simic.rewards_contribution import effective_params
from services.simic.rewards_potential import prune_forfeiture, seed_pbrs


def basic_components(config: RewardConfig, inputs: RewardInputs, state: EpisodeRewardState) -> dict[str, float]:
    """The BASIC (or BASIC_PLUS) reward of one step, by component."""
    seed = inputs.seed
    out: dict[str, float] = {}
    if not config.disable_pbrs:
        if inputs.effective_op is LifecycleOp.PRUNE and seed is not None:
            # F′: a prune pays only the forfeiture of the seed's potential, never the per-step term as well.
            out["pbrs_forfeit"] = prune_forfeiture(seed, state)
        elif inputs.target is not None:
            out["pbrs"] = seed_pbrs(inputs.target, state, config.gamma, birth_paid=False)
    out["param_cost"] = -config.param_penalty_weight * effective_params(inputs) / config.param_budget

    drip = config.mode is RewardMode.BASIC_PLUS
    if drip:
        # Pools pay from the epoch after they open, so the pay-out comes before this step's fossilization.
        out["drip"] = state.pay_drips(inputs.slots)
    if inputs.effective_op is LifecycleOp.FOSSILIZE:
        fossil, bonus = _fossil_term(inputs)
        if drip and bonus and seed is not None:
            deferred = config.basic_plus_drip_fraction * fossil
            state.open_drip(seed.slot_id, deferred, inputs.epoch, inputs.max_epochs)
            fossil -= deferred
        out["fossil"] = fossil

    if inputs.is_terminal and not config.disable_terminal_reward:
        # §11.2 resolved: Δacc is the improvement since the episode's first step, as the reference documents it.
        start = state.episode_start_accuracy if state.episode_start_accuracy is not None else inputs.val_accuracy
        out["terminal"] = 5.0 * (inputs.val_accuracy - start) / 100.0
    return out


def _fossil_term(inputs: RewardInputs) -> tuple[float, bool]:
    """FOSSILIZE's bonus or penalty, and whether it is a bonus (the part BASIC_PLUS drips)."""
    seed = inputs.seed
    if seed is None or seed.stage is not SeedStage.HOLDING:
        return -0.5, False
    improvement = inputs.total_improvement if inputs.total_improvement is not None else 0.0
    contribution = inputs.contribution
    if improvement > 0.0 and contribution is not None and contribution >= 1.0:
        legitimacy = min(1.0, seed.metrics.epochs_in_current_stage / 5.0)
        harmonic = 2.0 * improvement * contribution / (improvement + contribution)
        return (0.3 + 0.5 * harmonic) * legitimacy, True
    if improvement <= 0.0 and contribution is not None and contribution > 0.1:
        return -0.5, False
    return -0.2, False
