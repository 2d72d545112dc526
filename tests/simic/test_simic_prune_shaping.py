"""PRUNE returns a seed's potential even though Kasmina's tick moves it past PRUNED before any step observes it."""

from __future__ import annotations

import msgspec
import pytest

import leyline_schemas as L
from services.experiments.sandbox import SandboxConfig, SandboxEpisode
from services.simic.episodes import score_episode
from services.simic.reward_config import RewardConfig
from services.simic.reward_ledgers import EpisodeRewardState
from services.simic.rewards_potential import PBRS_WEIGHT, potential, seed_pbrs
from services.tamiyo.policies import PolicyBook


def _seed(stage: L.SeedStage, epochs: int, previous: L.SeedStage, previous_epochs: int = 0) -> L.SlotState:
    return L.SlotState(
        slot_id="r0c0",
        stage=stage,
        seed_id="s1",
        blueprint=L.BlueprintAction.CONV_LIGHT,
        previous_stage=previous,
        previous_epochs_in_stage=previous_epochs,
        metrics=L.SeedMetrics(epochs_in_current_stage=epochs),
    )


def test_the_step_after_an_instant_prune_pays_the_potential_back() -> None:
    state = EpisodeRewardState()
    gamma = 0.995
    training = seed_pbrs(_seed(L.SeedStage.TRAINING, 6, L.SeedStage.GERMINATED), state, gamma, birth_paid=False)
    assert training == pytest.approx(
        PBRS_WEIGHT * (gamma * potential(L.SeedStage.TRAINING, 6) - potential(L.SeedStage.TRAINING, 5))
    )
    embargoed = seed_pbrs(_seed(L.SeedStage.EMBARGOED, 0, L.SeedStage.PRUNED), state, gamma, birth_paid=False)
    assert embargoed == pytest.approx(-PBRS_WEIGHT * potential(L.SeedStage.TRAINING, 6))
    assert seed_pbrs(_seed(L.SeedStage.EMBARGOED, 1, L.SeedStage.PRUNED), state, gamma, birth_paid=False) == 0.0
    # A PRUNE action that already forfeited the potential (SHAPED, BASIC) is not charged twice.
    forfeited = EpisodeRewardState()
    forfeited.mark_forfeited("r0c0", "s1")
    assert seed_pbrs(_seed(L.SeedStage.EMBARGOED, 0, L.SeedStage.PRUNED), forfeited, gamma, birth_paid=False) == 0.0


def test_prune_and_regerminate_no_longer_farms_simplified_shaping() -> None:
    """Germinating and pruning at once pays the shaping back, so its return is no better than never acting."""
    config = SandboxConfig(episode_length=20)
    book = PolicyBook()

    def farm(request: L.DecisionRequest) -> L.Decision:
        ops = request.masks.op
        for op in (L.LifecycleOp.PRUNE, L.LifecycleOp.GERMINATE):
            if ops[op]:
                slot = request.masks.slot_by_op[op].index(True)
                action = L.FactoredAction(op=op, slot=slot, blueprint=L.BlueprintAction.NORM)
                return msgspec.structs.replace(book.get("wait").decide(request), action=action)
        return book.get("wait").decide(request)

    reward = RewardConfig(mode=L.RewardMode.SIMPLIFIED)
    farmed = score_episode(SandboxEpisode(config, seed=3).run(farm), reward).episode_return
    idle = score_episode(SandboxEpisode(config, seed=3).run(book.get("wait").decide), reward).episode_return
    assert farmed < idle + 0.1
