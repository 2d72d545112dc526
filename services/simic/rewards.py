"""Simic's reward: one entry point for every mode and family of reference/tamiyo_simic.md §6.

`compute_reward` is called once per step record, in step order, with the env's `EpisodeRewardState`; the terms the
reference adds outside the mode function (§6.11: scaffold hindsight credit, auto-prune penalty) and the optional
internal-op thrash penalty (plans/kasmina2-phase0.md §8.3) are added here.
"""

from __future__ import annotations

from leyline_schemas.enums import LifecycleOp, RewardFamily, RewardMode, SeedStage
from services.simic.reward_config import (
    DEFAULT_GAMMA,
    ROLLBACK_PENALTY,
    RewardBreakdown,
    RewardConfig,
    require_matching_gamma,
)
from services.simic.reward_inputs import RewardInputs, SlotView, reward_inputs_from_step, seed_total_improvement
from services.simic.reward_ledgers import EpisodeRewardState
from services.simic.rewards_basic import basic_components
from services.simic.rewards_contribution import contribution_components
from services.simic.rewards_loss import loss_components
from services.simic.rewards_sparse import simplified_components, sparse_components
from services.simic.rewards_thrash import internal_thrash

__all__ = [
    "DEFAULT_GAMMA",
    "ROLLBACK_PENALTY",
    "EpisodeRewardState",
    "RewardBreakdown",
    "RewardConfig",
    "RewardInputs",
    "SlotView",
    "compute_reward",
    "episode_rollback_rewrite",
    "require_matching_gamma",
    "reward_inputs_from_step",
]


def compute_reward(config: RewardConfig, inputs: RewardInputs, state: EpisodeRewardState) -> RewardBreakdown:
    """The raw (unnormalized) reward of one step on its pre-action state; updates the env's ledgers in `state`."""
    if state.episode_start_accuracy is None:
        state.episode_start_accuracy = inputs.val_accuracy
    state.sync_owners(_seed_owners(inputs))

    components: dict[str, float] = {"scaffold_hindsight": state.take_hindsight()}
    state.record_boosts(inputs.interactions, inputs.epoch)

    if config.family is RewardFamily.LOSS:
        mode_terms = loss_components(config, inputs)
    elif config.mode in (RewardMode.SHAPED, RewardMode.ESCROW):
        mode_terms = contribution_components(config, inputs, state)
    elif config.mode in (RewardMode.BASIC, RewardMode.BASIC_PLUS):
        mode_terms = basic_components(config, inputs, state)
    elif config.mode is RewardMode.SIMPLIFIED:
        mode_terms = simplified_components(config, inputs, state)
    else:
        mode_terms = sparse_components(config, inputs)
    components.update(mode_terms)

    # plans/kasmina2-phase0.md §8.3: every mode, like the auto-prune charge; 0 unless the lever is turned on.
    components["internal_thrash"] = internal_thrash(config, inputs, state)

    if inputs.new_auto_prunes:
        # §6.11: a seed the environment had to prune is charged to the policy on the step after it happened.
        components["auto_prune"] = config.auto_prune_penalty * inputs.new_auto_prunes

    seed = inputs.seed
    if inputs.effective_op is LifecycleOp.FOSSILIZE and seed is not None and seed.stage is SeedStage.HOLDING:
        # §6.11: scaffolds that boosted a seed that turned out good are credited in hindsight, on the next reward.
        state.pending_hindsight = state.hindsight_credit(
            seed.slot_id, seed_total_improvement(seed), inputs.epoch, config.gamma
        )
    return RewardBreakdown.of(components)


def episode_rollback_rewrite(rewards: list[float]) -> list[float]:
    """§6.11 governor rollback: the episode prefix is forfeited to 0 and the last executed transition gets −10.

    `rewards` are the episode's executed transitions up to the rollback; the −10 is already in normalized units and
    must bypass the reward normalizer. A panic before any executed transition has nothing to charge: [] stays [].
    """
    if not rewards:
        return []
    return [0.0] * (len(rewards) - 1) + [ROLLBACK_PENALTY]


def _seed_owners(inputs: RewardInputs) -> dict[str, str]:
    owners = {slot.slot_id: slot.seed_id for slot in inputs.slots if slot.has_seed}
    seed = inputs.seed
    if seed is not None:
        owners.setdefault(seed.slot_id, seed.seed_id)
    return owners
