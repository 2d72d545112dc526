"""How Simic turns a step into a reward: mode, family, discount and ablation switches (reference/tamiyo_simic.md §6)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import msgspec

from leyline_schemas.enums import RewardFamily, RewardMode
from leyline_schemas.runs import ArmSpec, RunSpec

# The one discount of a learning arm: PBRS (§6.3) and GAE (§5.6) must use the same γ. PPOConfig.gamma defaults to
# this, and an arm's RewardConfig takes its γ from its PPOConfig (LearnerConfig.rewards), never a literal of its own.
DEFAULT_GAMMA = 0.995

# §5.3: normalised rewards are clipped at ±10 (RewardNormalizer).
REWARD_CLIP = 10.0

# §6.11: the governor's death penalty, written directly in normalized reward units: the clip's floor.
ROLLBACK_PENALTY = -REWARD_CLIP


class RewardConfig(msgspec.Struct, frozen=True, kw_only=True):
    """One arm's reward settings; the defaults are the reference's (§6, §6.18)."""

    mode: RewardMode = RewardMode.SHAPED
    family: RewardFamily = RewardFamily.CONTRIBUTION
    gamma: float = DEFAULT_GAMMA
    disable_pbrs: bool = False
    disable_terminal_reward: bool = False
    disable_anti_gaming: bool = False
    param_budget: int = 500_000
    param_penalty_weight: float = 0.1
    sparse_reward_scale: float = 1.0
    basic_plus_drip_fraction: float = 0.7
    typical_loss_delta_std: float = 0.1
    baseline_loss: float = 2.3
    target_loss: float = 0.3
    auto_prune_penalty: float = -0.2
    #: plans/kasmina2-phase0.md §8.1 (Choice 10): GROW/SHRINK_INTERNAL cost what SET_ALPHA_TARGET does in SHAPED/ESCROW.
    internal_op_cost: float = 0.005
    #: §8.3: off by default; the pivot lever's enabled value is 0.005 (§12.5).
    internal_thrash_penalty: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 < self.gamma <= 1.0:
            raise ValueError(f"reward gamma must lie in (0, 1], got {self.gamma}")
        if self.family is RewardFamily.LOSS and self.mode is not RewardMode.SHAPED:
            raise ValueError(f"the loss reward family only exists with mode shaped (§6.1), got {self.mode.value}")
        if self.mode in (RewardMode.SPARSE, RewardMode.MINIMAL) and self.disable_terminal_reward:
            raise ValueError(f"mode {self.mode.value} pays only at the terminal step; disabling it leaves no reward")
        if self.param_budget <= 0:
            raise ValueError(f"param_budget must be positive, got {self.param_budget}")
        if self.typical_loss_delta_std <= 0.0:
            raise ValueError(f"typical_loss_delta_std must be positive, got {self.typical_loss_delta_std}")
        if self.baseline_loss <= self.target_loss:
            raise ValueError("baseline_loss must exceed target_loss for the loss-family terminal term")
        for name in ("internal_op_cost", "internal_thrash_penalty"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0.0:
                raise ValueError(f"{name} is charged as a negative term, so it must be finite and >= 0, got {value}")
        if not 0.0 <= self.basic_plus_drip_fraction <= 1.0:
            raise ValueError(f"basic_plus_drip_fraction must lie in [0, 1], got {self.basic_plus_drip_fraction}")


def require_matching_gamma(config: RewardConfig, ppo_gamma: float) -> None:
    """PBRS keeps the optimal policy only if it discounts with the learner's γ (§6.3): a mismatch is a hard error."""
    if not math.isclose(config.gamma, ppo_gamma, rel_tol=0.0, abs_tol=1e-12):
        raise ValueError(f"reward gamma {config.gamma} differs from PPO gamma {ppo_gamma}; PBRS would not telescope")


def arm_of(spec: RunSpec | None, arm_id: str) -> ArmSpec:
    """The arm of the run scored as `arm_id`; for an unknown run or arm, a SIMPLIFIED contribution arm with the
    reward defaults."""
    if spec is not None:
        for arm in spec.arms:
            if arm.arm_id == arm_id:
                return arm
    return ArmSpec(arm_id=arm_id, policy_id="", reward_mode=RewardMode.SIMPLIFIED)


@dataclass(frozen=True)
class RewardBreakdown:
    """The reward of one step and its named, signed components; `total` is their sum."""

    total: float
    components: Mapping[str, float]

    @staticmethod
    def of(components: Mapping[str, float]) -> RewardBreakdown:
        kept = {name: value for name, value in components.items() if value != 0.0}
        return RewardBreakdown(total=math.fsum(kept.values()), components=kept)
