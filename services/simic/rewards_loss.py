"""The LOSS reward family: pay for validation-loss improvement (reference/tamiyo_simic.md §6.16, ARCHITECTURE.md §11).

Sign convention (ARCHITECTURE §11): `loss_delta = previous − current`, positive = better. With
δ̃ = clip(loss_delta/σ_typ, ±5) the step reward is 5·δ̃ for an improvement and 2.5·δ̃ for a regression — the
reference's −5·δ̃·(0.5 if δ̃ > 0 else 1) with its sign flipped, so improvements are paid, not penalized (§11.3).
"""

from __future__ import annotations

import math

from leyline_schemas.enums import SeedStage
from services.simic.reward_config import RewardConfig
from services.simic.reward_inputs import RewardInputs
from services.simic.rewards_potential import STAGE_POTENTIAL

LOSS_SCALE = 5.0
REGRESSION_WEIGHT = 0.5
DELTA_CLIP = 5.0
STAGE_SHAPING_WEIGHT = 0.1
RENT_GRACE_AGE = 3


def loss_components(config: RewardConfig, inputs: RewardInputs) -> dict[str, float]:
    """The loss-family reward of one step, by component."""
    out: dict[str, float] = {}
    normalized = min(max(inputs.loss_delta / config.typical_loss_delta_std, -DELTA_CLIP), DELTA_CLIP)
    weight = REGRESSION_WEIGHT if normalized < 0.0 else 1.0
    out["loss"] = LOSS_SCALE * normalized * weight

    seed = inputs.seed
    if inputs.host_params > 0 and not (seed is not None and inputs.seed_age < RENT_GRACE_AGE):
        # A fresh seed gets a grace period: it cannot have paid for itself yet.
        growth = max(0, inputs.total_params - inputs.host_params) / inputs.host_params
        out["rent"] = -min(0.05 * math.log1p(growth), 5.0)

    target = inputs.target
    if target is not None and not config.disable_pbrs:
        # §11.10 resolved: compare with the previous STEP's stage, so the shaping telescopes like §6.3 (a pruned
        # seed's first step pays the drop back to zero).
        epochs = target.metrics.epochs_in_current_stage
        before: SeedStage = target.stage if epochs > 0 else target.previous_stage
        out["stage_shaping"] = STAGE_SHAPING_WEIGHT * (
            config.gamma * STAGE_POTENTIAL[target.stage] - STAGE_POTENTIAL[before]
        )

    if inputs.is_terminal and not config.disable_terminal_reward:
        span = config.baseline_loss - config.target_loss
        out["terminal"] = min(max((config.baseline_loss - inputs.val_loss) / span, 0.0), 1.0)
    return out
