"""Reward modes of reference/tamiyo_simic.md §6: golden values (§12.17), attribution (§12.15) and each mode's terms."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leyline_schemas.enums import LifecycleOp, RewardFamily, RewardMode, SeedStage
from leyline_schemas.lifecycle import SeedMetrics, SlotState
from leyline_schemas.reports import PairInteraction
from services.simic.rewards import (
    EpisodeRewardState,
    RewardBreakdown,
    RewardConfig,
    RewardInputs,
    SlotView,
    compute_reward,
)

GAMMA = 0.995
HOST = 100_000


def seed(
    stage: SeedStage,
    *,
    slot_id: str = "r0c1",
    seed_id: str = "s1",
    epochs: int = 3,
    germinated_epoch: int = 12,
    initial: float = 50.0,
    current: float = 55.0,
    stage_start: float = 55.0,
) -> SlotState:
    return SlotState(
        slot_id=slot_id,
        stage=stage,
        seed_id=seed_id,
        previous_stage=stage,
        germinated_epoch=germinated_epoch,
        metrics=SeedMetrics(
            epochs_in_current_stage=epochs,
            initial_val_accuracy=initial,
            current_val_accuracy=current,
            accuracy_at_stage_start=stage_start,
        ),
    )


def step(
    op: LifecycleOp = LifecycleOp.WAIT,
    *,
    target: SlotState | None = None,
    c: float | None = None,
    total: float | None = None,
    progress: float | None = None,
    epoch: int = 20,
    max_epochs: int = 25,
    terminal: bool = False,
    **extra: object,
) -> RewardInputs:
    fields: dict[str, object] = {"val_accuracy": 60.0, "host_params": HOST} | extra
    return RewardInputs(
        effective_op=op,
        target=target,
        contribution=c,
        total_improvement=total if total is not None or c is None else c,
        progress=progress,
        epoch=epoch,
        max_epochs=max_epochs,
        is_terminal=terminal,
        **fields,  # type: ignore[arg-type]
    )


def reward(config: RewardConfig, inputs: RewardInputs, state: EpisodeRewardState | None = None) -> RewardBreakdown:
    return compute_reward(config, inputs, state if state is not None else EpisodeRewardState())


SHAPED = RewardConfig()


# §12.17 golden values


def test_golden_loss_family_value() -> None:
    # The reference's Δ = −0.05 (its improvement sign) is loss_delta = +0.05 under ARCHITECTURE §11.
    inputs = step(val_loss=1.5, loss_delta=0.05, host_params=100, total_params=120, terminal=True, epoch=25)
    result = reward(RewardConfig(family=RewardFamily.LOSS), inputs)
    assert result.total == pytest.approx(2.890883922, abs=1e-9)


def test_golden_basic_value() -> None:
    # P_eff = 0.0039·H + α·n = 390 + 24 610 = 25 000 parameters.
    blending = SlotView(slot_id="r0c0", stage=SeedStage.BLENDING, alpha=1.0, seed_params=24_610)
    result = reward(RewardConfig(mode=RewardMode.BASIC), step(slots=(blending,)))
    assert result.total == pytest.approx(-0.005, abs=1e-12)


# LOSS family (§6.16 with ARCHITECTURE §11's sign)


@pytest.mark.parametrize(("delta", "expected"), [(0.05, 2.5), (-0.05, -1.25), (1.0, 25.0), (-1.0, -12.5)])
def test_loss_reward_pays_improvement_and_halves_regression(delta: float, expected: float) -> None:
    inputs = step(loss_delta=delta, host_params=100, total_params=100)
    assert reward(RewardConfig(family=RewardFamily.LOSS), inputs).components["loss"] == pytest.approx(expected)


def test_loss_rent_is_waived_for_young_seeds() -> None:
    config = RewardConfig(family=RewardFamily.LOSS)
    young = seed(SeedStage.TRAINING, germinated_epoch=18)
    old = seed(SeedStage.TRAINING, germinated_epoch=10)
    assert "rent" not in reward(config, step(target=young, host_params=100, total_params=150)).components
    rent = reward(config, step(target=old, host_params=100, total_params=150)).components["rent"]
    assert rent == pytest.approx(-0.05 * math.log(1.5))


# §12.15 attribution


@settings(max_examples=150, deadline=None)
@given(
    op=st.sampled_from(list(LifecycleOp)),
    stage=st.sampled_from([SeedStage.TRAINING, SeedStage.BLENDING, SeedStage.HOLDING]),
    c=st.floats(min_value=-10, max_value=30),
    total=st.floats(min_value=-10, max_value=30),
    progress=st.one_of(st.none(), st.floats(min_value=-10, max_value=30)),
)
def test_ratio_penalty_never_rewards(
    op: LifecycleOp, stage: SeedStage, c: float, total: float, progress: float | None
) -> None:
    inputs = step(op, target=seed(stage), c=c, total=total, progress=progress)
    assert reward(SHAPED, inputs).components.get("ratio_penalty", 0.0) <= 0.0


@pytest.mark.parametrize("op", [LifecycleOp.WAIT, LifecycleOp.PRUNE])
def test_ratio_penalty_survives_the_prune_flip(op: LifecycleOp) -> None:
    result = reward(SHAPED, step(op, target=seed(SeedStage.BLENDING), c=5.0, total=0.05, progress=10.0))
    assert result.components["ratio_penalty"] == pytest.approx(-0.15)
    attribution = result.components["attribution"]
    assert attribution > 0 if op is LifecycleOp.WAIT else attribution < 0


def test_high_ratio_penalty_scales_with_the_ratio() -> None:
    result = reward(SHAPED, step(target=seed(SeedStage.BLENDING), c=8.0, total=1.0, progress=10.0))
    assert result.components["ratio_penalty"] == pytest.approx(-0.06)


def test_fossilize_with_negative_total_improvement_gets_no_attribution() -> None:
    holding = seed(SeedStage.HOLDING, epochs=5)
    result = reward(SHAPED, step(LifecycleOp.FOSSILIZE, target=holding, c=3.0, total=-1.0, progress=5.0))
    assert result.components.get("attribution", 0.0) == 0.0


def test_proxy_attribution_pays_only_blended_seeds_and_never_host_drift() -> None:
    training = reward(SHAPED, step(target=seed(SeedStage.TRAINING, stage_start=50.0, current=55.0)))
    blending = reward(SHAPED, step(target=seed(SeedStage.BLENDING, stage_start=50.0, current=55.0)))
    no_seed = reward(SHAPED, step(val_accuracy=90.0, total=5.0))
    assert training.components.get("attribution", 0.0) == 0.0
    assert blending.components["attribution"] == pytest.approx(1.5)
    assert no_seed.components.get("attribution", 0.0) == 0.0


@pytest.mark.parametrize(
    ("c", "progress", "germinated", "expected"),
    [
        (4.0, 2.0, 12, 2 * 2.0 * 4.0 / 6.0),  # harmonic mean when c ≥ p
        (2.0, 5.0, 12, 2.0),  # c < p: the contribution itself
        (2.0, None, 12, 1.0),  # progress unknown: half
        (2.0, -1.0, 12, 0.0),  # no progress since germination
        (2.0, 5.0, 5, 2.0 * 0.7),  # timing discount τ for a seed germinated at epoch 5
        (-1.5, 5.0, 12, -1.5),  # harm is charged undiscounted
    ],
)
def test_bounded_attribution(c: float, progress: float | None, germinated: int, expected: float) -> None:
    target = seed(SeedStage.BLENDING, germinated_epoch=germinated)
    inputs = step(target=target, c=c, total=max(c, 0.5), progress=progress)
    assert reward(SHAPED, inputs).components.get("attribution", 0.0) == pytest.approx(expected)


def test_attribution_discount_when_seeds_hurt_the_host() -> None:
    result = reward(SHAPED, step(target=seed(SeedStage.BLENDING), c=0.8, total=-1.0, progress=5.0))
    assert result.components["attribution"] == pytest.approx(0.8 / (1 + math.exp(3.0)))


# SHAPED: other terms (§6.6–6.10)


def test_parameter_rent_alpha_shock_and_occupancy() -> None:
    slots = (
        SlotView(
            slot_id="r0c0",
            stage=SeedStage.BLENDING,
            alpha=0.5,
            previous_alpha=0.2,
            seed_params=10_000,
            previous_seed_params=10_000,
        ),
        SlotView(slot_id="r0c1", stage=SeedStage.TRAINING, seed_params=5_000, previous_seed_params=5_000),
        SlotView(slot_id="r0c2", stage=SeedStage.FOSSILIZED, alpha=1.0, previous_alpha=1.0, seed_params=2_000),
    )
    components = reward(SHAPED, step(slots=slots)).components
    effective = (390 + 5_000) + (390 + 2_000)
    assert components["rent"] == pytest.approx(-0.5 * math.log1p(effective / HOST))
    assert components["alpha_shock"] == pytest.approx(-0.1958 * 0.09 * 10_000 / HOST)
    assert components["occupancy"] == pytest.approx(-(0.01 * 2 + 0.002))


def test_warnings_and_synergy() -> None:
    blending = reward(SHAPED, step(target=seed(SeedStage.BLENDING, epochs=3), c=0.5, total=-0.5, progress=1.0))
    assert blending.components["blending_warning"] == pytest.approx(-0.25)
    holding = reward(
        SHAPED, step(target=seed(SeedStage.HOLDING, epochs=4), c=2.0, total=2.0, progress=5.0, interaction_sum=2.0)
    )
    assert holding.components["holding_warning"] == pytest.approx(-0.2)
    assert holding.components["synergy"] == pytest.approx(0.1 * math.tanh(1.0))
    fossilizing = reward(
        SHAPED, step(LifecycleOp.FOSSILIZE, target=seed(SeedStage.HOLDING, epochs=4), c=2.0, total=2.0, progress=5.0)
    )
    assert "holding_warning" not in fossilizing.components


def test_germinate_action_terms() -> None:
    fresh = reward(SHAPED, step(LifecycleOp.GERMINATE, epoch=12)).components
    assert fresh["pbrs_germination"] == pytest.approx(0.3 * GAMMA)
    assert fresh["action"] == pytest.approx(-0.15)
    early = reward(SHAPED, step(LifecycleOp.GERMINATE, epoch=5)).components
    assert early["pbrs_germination"] == pytest.approx(0.3 * GAMMA * 0.7)
    occupied = reward(SHAPED, step(LifecycleOp.GERMINATE, target=seed(SeedStage.TRAINING))).components
    assert occupied["action"] == pytest.approx(-0.45) and "pbrs_germination" not in occupied
    at_horizon = reward(SHAPED, step(LifecycleOp.GERMINATE, epoch=25, terminal=True)).components
    assert "pbrs_germination" not in at_horizon


def test_fossilize_action_terms() -> None:
    good = reward(
        SHAPED, step(LifecycleOp.FOSSILIZE, target=seed(SeedStage.HOLDING, epochs=5), c=2.0, total=1.0, progress=5.0)
    ).components
    assert good["action"] == pytest.approx(0.7 - 0.01)
    assert good["fossil_bonus"] == pytest.approx(3 * math.tanh(1 / 3))
    ransom = reward(
        SHAPED, step(LifecycleOp.FOSSILIZE, target=seed(SeedStage.HOLDING, epochs=5), c=2.0, total=-1.0, progress=5.0)
    ).components
    assert ransom["action"] == pytest.approx(-0.5 - 0.2 - 0.3 - 0.01) and "fossil_bonus" not in ransom
    not_holding = reward(SHAPED, step(LifecycleOp.FOSSILIZE, target=seed(SeedStage.BLENDING), c=2.0)).components
    assert not_holding["action"] == pytest.approx(-1.01)


@pytest.mark.parametrize(
    ("germinated", "c", "expected"),
    [(18, 2.0, -0.9), (10, None, 0.0), (10, -1.0, 0.15), (10, -0.2, 0.1), (10, 2.0, -0.4), (10, 20.0, -0.9)],
)
def test_prune_action_terms(germinated: int, c: float | None, expected: float) -> None:
    target = seed(SeedStage.TRAINING, epochs=2, germinated_epoch=germinated)
    components = reward(SHAPED, step(LifecycleOp.PRUNE, target=target, c=c, progress=1.0)).components
    assert components["action"] == pytest.approx(expected - 0.005)
    assert components["pbrs_forfeit"] == pytest.approx(-0.3 * (2.0 + 0.6))


def test_prune_forfeiture_is_not_paid_again_when_the_pruned_seed_is_next_observed() -> None:
    state = EpisodeRewardState()
    reward(SHAPED, step(LifecycleOp.PRUNE, target=seed(SeedStage.TRAINING, germinated_epoch=5)), state)
    pruned = SlotState(
        slot_id="r0c1",
        stage=SeedStage.PRUNED,
        seed_id="s1",
        previous_stage=SeedStage.TRAINING,
        previous_epochs_in_stage=3,
    )
    assert reward(SHAPED, step(target=pruned), state).components.get("pbrs", 0.0) == 0.0
    # Without the forfeiture (a governor prune), the drop to Φ = 0 is paid by the next PBRS step.
    assert reward(SHAPED, step(target=pruned)).components["pbrs"] == pytest.approx(-0.3 * (2.0 + 0.9))


def test_other_action_costs_and_terminal() -> None:
    advance = reward(SHAPED, step(LifecycleOp.ADVANCE, target=seed(SeedStage.TRAINING))).components
    assert advance["action"] == pytest.approx(-0.1)
    retarget = reward(SHAPED, step(LifecycleOp.SET_ALPHA_TARGET, target=seed(SeedStage.HOLDING))).components
    assert retarget["action"] == pytest.approx(-0.005)
    assert reward(SHAPED, step(terminal=True, epoch=25)).components["terminal"] == pytest.approx(3.0)


def test_ablation_switches_drop_their_terms() -> None:
    stuck = SlotView(slot_id="r0c0", stage=SeedStage.TRAINING, seed_id="s0", age=10)
    shaky = SlotView(
        slot_id="r0c2",
        stage=SeedStage.BLENDING,
        alpha=0.6,
        previous_alpha=0.2,
        seed_params=9_000,
        previous_seed_params=9_000,
    )
    holding = seed(SeedStage.HOLDING, epochs=5)
    fossilize = step(
        LifecycleOp.FOSSILIZE,
        target=holding,
        c=5.0,
        total=0.05,
        progress=5.0,
        slots=(stuck, shaky),
        terminal=True,
        epoch=25,
    )
    full = reward(SHAPED, fossilize).components
    assert {"pbrs", "germination_clawback", "terminal", "fossil_bonus", "alpha_shock"} <= set(full)
    no_pbrs = reward(RewardConfig(disable_pbrs=True), fossilize).components
    assert not {"pbrs", "germination_clawback"} & set(no_pbrs)
    no_terminal = reward(RewardConfig(disable_terminal_reward=True), fossilize).components
    assert not {"terminal", "fossil_bonus"} & set(no_terminal)
    waiting = step(target=seed(SeedStage.BLENDING), c=5.0, total=0.05, progress=10.0, slots=(shaky,))
    assert "ratio_penalty" in reward(SHAPED, waiting).components
    no_anti_gaming = reward(RewardConfig(disable_anti_gaming=True), waiting).components
    assert not {"ratio_penalty", "alpha_shock"} & set(no_anti_gaming)
    germinate = reward(RewardConfig(disable_pbrs=True), step(LifecycleOp.GERMINATE)).components
    prune = reward(RewardConfig(disable_pbrs=True), step(LifecycleOp.PRUNE, target=seed(SeedStage.TRAINING))).components
    assert "pbrs_germination" not in germinate and "pbrs_forfeit" not in prune


def test_components_sum_to_total() -> None:
    result = reward(
        SHAPED,
        step(
            LifecycleOp.FOSSILIZE,
            target=seed(SeedStage.HOLDING, epochs=5),
            c=2.0,
            total=1.0,
            progress=5.0,
            terminal=True,
            epoch=25,
        ),
    )
    assert result.total == pytest.approx(sum(result.components.values()))
    assert len(result.components) > 3


# ESCROW (§6.12)


def test_escrow_pays_changes_of_a_credit_target_and_takes_it_back() -> None:
    config = RewardConfig(mode=RewardMode.ESCROW)
    state = EpisodeRewardState()
    blending = seed(SeedStage.BLENDING)

    def paid(**kw: object) -> float:
        return reward(config, step(target=blending, **kw), state).components.get("attribution", 0.0)  # type: ignore[arg-type]

    assert paid(c=1.0, total=1.0, escrow_progress=3.0) == pytest.approx(1.0)
    assert paid(c=4.0, total=4.0, escrow_progress=1.0) == pytest.approx(1.0)  # √(p·c) = 2, held 1
    assert paid(c=9.0, total=9.0, escrow_progress=9.0) == pytest.approx(2.0)  # clipped to +2, credit 4
    assert state.credit("r0c1") == pytest.approx(4.0)
    assert paid() == 0.0  # contribution unknown: nothing moves
    assert paid(c=-1.0, total=1.0) == pytest.approx(-5.0)  # harm, and all credit returned
    assert state.credit("r0c1") == 0.0


def test_escrow_prune_returns_credit_and_horizon_forfeits_unfinished_seeds() -> None:
    config = RewardConfig(mode=RewardMode.ESCROW)
    state = EpisodeRewardState()
    reward(config, step(target=seed(SeedStage.BLENDING), c=2.0, total=2.0, escrow_progress=5.0), state)
    pruned = reward(config, step(LifecycleOp.PRUNE, target=seed(SeedStage.BLENDING)), state)
    assert pruned.components["attribution"] == pytest.approx(-2.0)

    state = EpisodeRewardState()
    reward(config, step(target=seed(SeedStage.BLENDING), c=1.5, total=1.5, escrow_progress=5.0), state)
    live = SlotView(slot_id="r0c1", stage=SeedStage.HOLDING, seed_id="s1")
    final = reward(config, step(slots=(live,), terminal=True, epoch=25), state)
    assert final.components["escrow_forfeit"] == pytest.approx(-1.5)


def test_escrow_credit_resets_when_the_slot_changes_seed() -> None:
    config = RewardConfig(mode=RewardMode.ESCROW)
    state = EpisodeRewardState()
    reward(config, step(target=seed(SeedStage.BLENDING), c=2.0, total=2.0, escrow_progress=5.0), state)
    reward(config, step(target=seed(SeedStage.TRAINING, seed_id="s2")), state)
    assert state.credit("r0c1") == 0.0


# SIMPLIFIED, SPARSE, MINIMAL (§6.13–6.14)


def test_simplified_terms() -> None:
    config = RewardConfig(mode=RewardMode.SIMPLIFIED)
    assert reward(config, step(LifecycleOp.ADVANCE, target=seed(SeedStage.TRAINING))).components["action"] == -0.01
    fossils = (
        SlotView(slot_id="r0c0", stage=SeedStage.FOSSILIZED, total_improvement=1.0),
        SlotView(slot_id="r0c1", stage=SeedStage.FOSSILIZED, total_improvement=0.9),
    )
    final = reward(config, step(slots=fossils, terminal=True, epoch=25, val_accuracy=80.0))
    assert final.components["terminal"] == pytest.approx(2.4 + 2.0)
    assert "rent" not in final.components and "occupancy" not in final.components


def test_sparse_pays_only_committed_accuracy_at_the_horizon() -> None:
    config = RewardConfig(mode=RewardMode.SPARSE, sparse_reward_scale=2.5)
    assert reward(config, step(LifecycleOp.PRUNE, target=seed(SeedStage.TRAINING))).total == 0.0
    fossil = SlotView(slot_id="r0c0", stage=SeedStage.FOSSILIZED, seed_params=100_000)
    final = reward(config, step(slots=(fossil,), committed_accuracy=70.0, terminal=True, epoch=25))
    assert final.total == pytest.approx(2.5 * (0.7 - 0.1 * 0.2))
    uncommitted = reward(config, step(terminal=True, epoch=25, val_accuracy=90.0))
    assert uncommitted.total == pytest.approx(2.5 * 0.9)


def test_minimal_charges_young_prunes() -> None:
    config = RewardConfig(mode=RewardMode.MINIMAL)
    young = reward(config, step(LifecycleOp.PRUNE, target=seed(SeedStage.TRAINING, germinated_epoch=17)))
    old = reward(config, step(LifecycleOp.PRUNE, target=seed(SeedStage.TRAINING, germinated_epoch=10)))
    assert young.total == pytest.approx(-0.1) and old.total == 0.0


# BASIC, BASIC_PLUS (§6.15)


@pytest.mark.parametrize(
    ("stage", "c", "total", "expected"),
    [
        (SeedStage.HOLDING, 2.0, 1.0, 0.3 + 0.5 * (2 * 1.0 * 2.0 / 3.0)),
        (SeedStage.BLENDING, 2.0, 1.0, -0.5),
        (SeedStage.HOLDING, 0.5, -1.0, -0.5),
        (SeedStage.HOLDING, 0.5, 1.0, -0.2),
    ],
)
def test_basic_fossilize_term(stage: SeedStage, c: float, total: float, expected: float) -> None:
    inputs = step(LifecycleOp.FOSSILIZE, target=seed(stage, epochs=5), c=c, total=total)
    assert reward(RewardConfig(mode=RewardMode.BASIC), inputs).components["fossil"] == pytest.approx(expected)


def test_basic_prune_pays_only_the_forfeiture() -> None:
    components = reward(RewardConfig(mode=RewardMode.BASIC), step(LifecycleOp.PRUNE, target=seed(SeedStage.TRAINING)))
    assert components.components["pbrs_forfeit"] == pytest.approx(-0.3 * 2.9)
    assert "pbrs" not in components.components


def test_basic_terminal_is_improvement_since_episode_start() -> None:
    config = RewardConfig(mode=RewardMode.BASIC)
    state = EpisodeRewardState()
    reward(config, step(val_accuracy=40.0, epoch=1), state)
    final = reward(config, step(val_accuracy=60.0, terminal=True, epoch=25), state)
    assert final.components["terminal"] == pytest.approx(1.0)


def test_basic_plus_drips_most_of_the_fossil_bonus_in_proportion_to_contribution() -> None:
    config = RewardConfig(mode=RewardMode.BASIC_PLUS)
    state = EpisodeRewardState()
    bonus = 0.3 + 0.5 * (2 * 1.0 * 2.0 / 3.0)
    fossilize = step(LifecycleOp.FOSSILIZE, target=seed(SeedStage.HOLDING, epochs=5), c=2.0, total=1.0, epoch=10)
    assert reward(config, fossilize, state).components["fossil"] == pytest.approx(0.3 * bonus)
    per_epoch = 0.7 * bonus / 15
    drips = []
    for epoch, contribution in zip(range(11, 27), [0.5] + [-5.0] + [5.0] * 14, strict=True):
        fossil = SlotView(slot_id="r0c1", stage=SeedStage.FOSSILIZED, seed_id="s1", contribution=contribution)
        drips.append(reward(config, step(slots=(fossil,), epoch=epoch, max_epochs=30), state).components.get("drip"))
    assert drips[0] == pytest.approx(per_epoch * 0.5)
    assert drips[1] == pytest.approx(-0.05)  # clipped below
    assert drips[2] == pytest.approx(0.1)  # clipped above
    assert drips[14] == pytest.approx(0.1) and drips[15] is None  # R = T − epoch = 15 payments in all


# Terms outside the mode function (§6.11)


def test_auto_prune_penalty_in_every_mode() -> None:
    for mode in RewardMode:
        assert reward(RewardConfig(mode=mode), step(new_auto_prunes=2)).components["auto_prune"] == pytest.approx(-0.4)


def test_scaffold_hindsight_credit_is_paid_on_the_next_step() -> None:
    state = EpisodeRewardState()
    scaffold = SlotView(slot_id="r0c0", stage=SeedStage.HOLDING, seed_id="s0")
    boosted = SlotView(slot_id="r0c1", stage=SeedStage.HOLDING, seed_id="s1")
    pair = PairInteraction(slot_a="r0c0", slot_b="r0c1", interaction=2.0)
    reward(SHAPED, step(slots=(scaffold, boosted), interactions=(pair,), epoch=5), state)
    holding = seed(SeedStage.HOLDING, epochs=5, initial=50.0, current=53.0)
    fossilize = step(LifecycleOp.FOSSILIZE, target=holding, c=2.0, total=1.0, slots=(scaffold, boosted), epoch=10)
    assert "scaffold_hindsight" not in reward(SHAPED, fossilize, state).components
    after = reward(SHAPED, step(epoch=11), state).components
    assert after["scaffold_hindsight"] == pytest.approx(0.1 * math.tanh(0.1 * 2.0 * 3.0) * GAMMA**5)
    assert "scaffold_hindsight" not in reward(SHAPED, step(epoch=12), state).components


def test_scaffold_hindsight_credit_is_capped() -> None:
    state = EpisodeRewardState()
    boosted = SlotView(slot_id="r0c1", stage=SeedStage.HOLDING, seed_id="s1")
    pair = PairInteraction(slot_a="r0c0", slot_b="r0c1", interaction=50.0)
    for epoch in range(5):
        reward(SHAPED, step(slots=(boosted,), interactions=(pair,), epoch=epoch), state)
    holding = seed(SeedStage.HOLDING, epochs=5, initial=50.0, current=60.0)
    reward(SHAPED, step(LifecycleOp.FOSSILIZE, target=holding, c=2.0, total=1.0, slots=(boosted,), epoch=5), state)
    assert reward(SHAPED, step(epoch=6), state).components["scaffold_hindsight"] == pytest.approx(0.2)


# Configuration and input invariants


def test_config_rejects_impossible_combinations() -> None:
    with pytest.raises(ValueError, match="loss reward family"):
        RewardConfig(family=RewardFamily.LOSS, mode=RewardMode.BASIC)
    with pytest.raises(ValueError, match="terminal"):
        RewardConfig(mode=RewardMode.SPARSE, disable_terminal_reward=True)


def test_contribution_without_total_improvement_is_a_hard_error() -> None:
    with pytest.raises(ValueError, match="total improvement"):
        RewardInputs(effective_op=LifecycleOp.WAIT, val_accuracy=50.0, epoch=1, max_epochs=25, contribution=1.0)
