"""PBRS and the germination clawback (reference/tamiyo_simic.md §6.3, §6.11, invariants §12.13–12.14)."""

from __future__ import annotations

import math
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leyline_schemas.enums import LifecycleOp, RewardMode, SeedStage
from leyline_schemas.lifecycle import SeedMetrics, SlotState
from services.simic.rewards import (
    EpisodeRewardState,
    RewardConfig,
    RewardInputs,
    SlotView,
    compute_reward,
    require_matching_gamma,
)
from services.simic.rewards_potential import PBRS_WEIGHT, pbrs_term, potential

GAMMA = 0.995
SEED_STAGES = [
    SeedStage.GERMINATED,
    SeedStage.TRAINING,
    SeedStage.BLENDING,
    SeedStage.HOLDING,
    SeedStage.FOSSILIZED,
    SeedStage.PRUNED,
    SeedStage.EMBARGOED,
    SeedStage.RESETTING,
]

# A path step either dwells one more epoch in the stage or moves (possibly jumping) to any other seed stage.
path_steps = st.lists(st.one_of(st.none(), st.sampled_from(SEED_STAGES)), min_size=1, max_size=60)


def walk(start: SeedStage, steps: list[SeedStage | None]) -> list[tuple[SeedStage, int, SeedStage, int]]:
    """(stage, epochs in stage, previous stage, previous epochs in stage) per step, as Kasmina would tick them."""
    stage, epochs, previous_stage, previous_epochs = start, 0, SeedStage.DORMANT, 0
    states = [(stage, epochs, previous_stage, previous_epochs)]
    for step in steps:
        if step is None or step is stage:
            epochs += 1
        else:
            previous_stage, previous_epochs, stage, epochs = stage, epochs, step, 0
        states.append((stage, epochs, previous_stage, previous_epochs))
    return states


@settings(max_examples=200, deadline=None)
@given(start=st.sampled_from(SEED_STAGES), steps=path_steps)
def test_pbrs_telescopes_over_any_stage_path(start: SeedStage, steps: list[SeedStage | None]) -> None:
    states = walk(start, steps)
    total = math.fsum(
        GAMMA ** (t - 1) * pbrs_term(stage, e, prev, prev_e, GAMMA)
        for t, (stage, e, prev, prev_e) in enumerate(states)
        if t > 0
    )
    horizon = len(states) - 1
    first, last = states[0], states[-1]
    expected = PBRS_WEIGHT * (GAMMA**horizon * potential(last[0], last[1]) - potential(first[0], first[1]))
    assert total == pytest.approx(expected, abs=1e-9)


@settings(max_examples=50, deadline=None)
@given(steps=path_steps)
def test_pbrs_component_of_a_wait_episode_telescopes_through_compute_reward(steps: list[SeedStage | None]) -> None:
    states = walk(SeedStage.GERMINATED, steps)
    config = RewardConfig(mode=RewardMode.SIMPLIFIED)
    episode = EpisodeRewardState()
    total = 0.0
    for t, (stage, e, prev, prev_e) in enumerate(states[1:], start=1):
        seed = SlotState(
            slot_id="r0c0",
            stage=stage,
            seed_id="s",
            previous_stage=prev,
            previous_epochs_in_stage=prev_e,
            metrics=SeedMetrics(epochs_in_current_stage=e),
        )
        inputs = RewardInputs(effective_op=LifecycleOp.WAIT, val_accuracy=50.0, epoch=t, max_epochs=1000, target=seed)
        total += GAMMA ** (t - 1) * compute_reward(config, inputs, episode).components.get("pbrs", 0.0)
    first, last = states[0], states[-1]
    expected = PBRS_WEIGHT * (GAMMA ** (len(states) - 1) * potential(last[0], last[1]) - potential(first[0], first[1]))
    assert total == pytest.approx(expected, abs=1e-9)


def test_gamma_mismatch_with_ppo_is_a_hard_error() -> None:
    require_matching_gamma(RewardConfig(), 0.995)
    with pytest.raises(ValueError, match="PPO gamma"):
        require_matching_gamma(RewardConfig(gamma=0.99), 0.995)


def test_potentials_rise_through_the_lifecycle_with_blending_largest_and_fossilize_smallest_step() -> None:
    ladder = [SeedStage.GERMINATED, SeedStage.TRAINING, SeedStage.BLENDING, SeedStage.HOLDING, SeedStage.FOSSILIZED]
    values = [potential(stage, 0) for stage in ladder]
    steps = [b - a for a, b in pairwise(values)]
    assert all(step > 0 for step in steps)
    assert max(steps) == steps[2]  # leaving BLENDING for HOLDING
    assert min(steps) == steps[3]  # HOLDING → FOSSILIZED
    assert potential(SeedStage.PRUNED, 7) == potential(SeedStage.DORMANT, 3) == 0.0


def test_dwell_bonus_is_capped_at_two() -> None:
    assert potential(SeedStage.TRAINING, 3) == pytest.approx(2.9)
    assert potential(SeedStage.TRAINING, 50) == pytest.approx(4.0)


def test_newborn_seed_is_not_paid_twice_for_germination() -> None:
    # SHAPED pays DORMANT → GERMINATED through the GERMINATE action term; the next step's F only discounts it.
    newborn = SlotState(slot_id="r0c0", stage=SeedStage.GERMINATED, seed_id="s", previous_stage=SeedStage.DORMANT)
    inputs = RewardInputs(effective_op=LifecycleOp.WAIT, val_accuracy=50.0, epoch=11, max_epochs=25, target=newborn)
    shaped = compute_reward(RewardConfig(), inputs, EpisodeRewardState())
    assert shaped.components["pbrs"] == pytest.approx(PBRS_WEIGHT * (GAMMA - 1.0))
    basic = compute_reward(RewardConfig(mode=RewardMode.BASIC), inputs, EpisodeRewardState())
    assert basic.components["pbrs"] == pytest.approx(PBRS_WEIGHT * GAMMA)


@settings(max_examples=60, deadline=None)
@given(
    germination_epoch=st.integers(min_value=0, max_value=40),
    lifetime=st.integers(min_value=1, max_value=100),
    stage=st.sampled_from([SeedStage.GERMINATED, SeedStage.TRAINING]),
    mode=st.sampled_from([RewardMode.SHAPED, RewardMode.ESCROW]),
)
def test_clawback_cancels_germination_bonus_in_discounted_return(
    germination_epoch: int, lifetime: int, stage: SeedStage, mode: RewardMode
) -> None:
    horizon = germination_epoch + lifetime
    config = RewardConfig(mode=mode)
    state = EpisodeRewardState()
    germinate = RewardInputs(
        effective_op=LifecycleOp.GERMINATE, val_accuracy=50.0, epoch=germination_epoch, max_epochs=horizon
    )
    bonus = compute_reward(config, germinate, state).components["pbrs_germination"]
    stuck = SlotView(slot_id="r0c0", stage=stage, seed_id="s", age=lifetime)
    final = RewardInputs(
        effective_op=LifecycleOp.WAIT,
        val_accuracy=50.0,
        epoch=horizon,
        max_epochs=horizon,
        slots=(stuck,),
        is_terminal=True,
    )
    clawback = compute_reward(config, final, state).components["germination_clawback"]
    assert GAMMA**germination_epoch * bonus + GAMMA**horizon * clawback == pytest.approx(0.0, abs=1e-12)


def test_no_clawback_for_seeds_that_reached_blending_or_without_pbrs() -> None:
    blended = SlotView(slot_id="r0c0", stage=SeedStage.BLENDING, seed_id="s", age=10)
    final = RewardInputs(
        effective_op=LifecycleOp.WAIT, val_accuracy=50.0, epoch=25, max_epochs=25, slots=(blended,), is_terminal=True
    )
    assert "germination_clawback" not in compute_reward(RewardConfig(), final, EpisodeRewardState()).components
    stuck = SlotView(slot_id="r0c0", stage=SeedStage.TRAINING, seed_id="s", age=10)
    no_pbrs = RewardInputs(
        effective_op=LifecycleOp.WAIT, val_accuracy=50.0, epoch=25, max_epochs=25, slots=(stuck,), is_terminal=True
    )
    components = compute_reward(RewardConfig(disable_pbrs=True), no_pbrs, EpisodeRewardState()).components
    assert "germination_clawback" not in components
