"""The optional thrash penalty on internal ops: a seed whose level keeps flipping pays for it (plans/kasmina2-phase0.md
§8.3, a §12.5 pivot lever that is off by default).

The rule is the windowed reversal rate of §9 item 3 from the shared `services.observation.level_trajectory`, the
same statistic Karn's ladder report shows.
"""

from __future__ import annotations

from collections.abc import Sequence

from leyline_schemas.enums import INTERNAL_OPS, LifecycleOp
from services.observation.level_trajectory import THRASH_REVERSAL_RATE, windowed_reversal_rate
from services.simic.reward_config import RewardConfig
from services.simic.reward_inputs import RewardInputs
from services.simic.reward_ledgers import EpisodeRewardState


def thrash_rate(directions: Sequence[int]) -> float:
    """The reversal rate of the last ≤ 10 ops when there are ≥ 4 of them and it exceeds 0.7; else 0."""
    rate = windowed_reversal_rate(directions)
    return rate if rate > THRASH_REVERSAL_RATE else 0.0


def internal_thrash(config: RewardConfig, inputs: RewardInputs, state: EpisodeRewardState) -> float:
    """−penalty·reversal rate on an internal-op step, after recording the op in the seed's trajectory."""
    op = inputs.effective_op
    if op not in INTERNAL_OPS:
        return 0.0
    seed = inputs.seed
    if seed is None:
        raise ValueError(f"reward invariant: an applied {op.name} needs a seed in its target slot")
    directions = state.record_internal_op(seed.slot_id, 1 if op is LifecycleOp.GROW_INTERNAL else -1)
    return -config.internal_thrash_penalty * thrash_rate(directions)
