"""Reading reward inputs out of step records, and the governor rollback rewrite (reference §6.2, §6.11, §12.16)."""

from __future__ import annotations

import pytest

from leyline_schemas.decisions import FactoredAction
from leyline_schemas.directives import StepDirective
from leyline_schemas.enums import DecisionOutcome, LifecycleOp, SeedStage
from leyline_schemas.lifecycle import AlphaControllerState, SeedMetrics, SlotState
from leyline_schemas.reports import EpochReport, SlotReport, TrainingSignals
from leyline_schemas.steps import StepRecord
from services.simic.rewards import (
    EpisodeRewardState,
    RewardConfig,
    compute_reward,
    episode_rollback_rewrite,
    reward_inputs_from_step,
)


def slot(
    slot_id: str,
    stage: SeedStage = SeedStage.DORMANT,
    *,
    alpha: float = 0.0,
    params: int = 0,
    seed_id: str = "",
    auto_pruned: bool = False,
) -> SlotState:
    return SlotState(
        slot_id=slot_id,
        stage=stage,
        seed_id=seed_id or (f"seed-{slot_id}" if stage is not SeedStage.DORMANT else ""),
        controller=AlphaControllerState(alpha=alpha),
        germinated_epoch=4 if stage is not SeedStage.DORMANT else -1,
        auto_pruned=auto_pruned,
        metrics=SeedMetrics(accuracy_at_germination=50.0, seed_param_count=params),
    )


def record(
    *,
    epoch: int = 10,
    observed: list[SlotState] | None = None,
    after: list[SlotState] | None = None,
    reports: list[SlotReport] | None = None,
    effective_op: LifecycleOp = LifecycleOp.WAIT,
    raw_op: LifecycleOp | None = None,
    raw_slot: int = 0,
    target_slot: str = "",
    applied: bool = True,
    done: bool = False,
    val_accuracy: float = 60.0,
    val_loss: float = 1.0,
    all_off: float | None = None,
    history: list[float] | None = None,
) -> StepRecord:
    observed = observed if observed is not None else [slot("r0c0"), slot("r0c1")]
    report = EpochReport(
        epoch=epoch,
        max_epochs=25,
        train_loss=1.0,
        train_accuracy=70.0,
        val_loss=val_loss,
        val_accuracy=val_accuracy,
        val_accuracy_history=history if history is not None else [val_accuracy],
        all_off_accuracy=all_off,
        committed_val_accuracy=55.0,
        host_params=10_000,
        slots=reports or [],
        signals=TrainingSignals(loss_delta=0.25),
    )
    directive = StepDirective(
        run_id="run",
        env_id=0,
        episode=0,
        epoch=epoch,
        outcome=DecisionOutcome.APPLIED,
        effective_op=effective_op,
        raw_action=FactoredAction(op=raw_op if raw_op is not None else effective_op, slot=raw_slot),
        target_slot=target_slot,
        observed_slots=observed,
        slots=after if after is not None else observed,
    )
    return StepRecord(
        run_id="run",
        arm="a",
        env_id=0,
        episode=0,
        step=epoch,
        policy_id="heuristic",
        policy_version=0,
        report=report,
        directive=directive,
        applied=applied,
        done=done,
    )


def test_reward_reads_the_pre_action_state() -> None:
    observed = [slot("r0c0"), slot("r0c1", SeedStage.TRAINING)]
    after = [slot("r0c0"), slot("r0c1", SeedStage.BLENDING)]
    inputs = reward_inputs_from_step(
        record(observed=observed, after=after, effective_op=LifecycleOp.ADVANCE, target_slot="r0c1"), None
    )
    assert inputs.target is not None and inputs.target.stage is SeedStage.TRAINING
    assert inputs.effective_op is LifecycleOp.ADVANCE


def test_invalid_or_refused_actions_are_rewarded_as_wait() -> None:
    observed = [slot("r0c0", SeedStage.TRAINING), slot("r0c1")]
    invalid = record(observed=observed, raw_op=LifecycleOp.PRUNE, effective_op=LifecycleOp.WAIT, target_slot="r0c0")
    refused = record(observed=observed, effective_op=LifecycleOp.PRUNE, target_slot="r0c0", applied=False)
    assert reward_inputs_from_step(invalid, None).effective_op is LifecycleOp.WAIT
    assert reward_inputs_from_step(refused, None).effective_op is LifecycleOp.WAIT
    refused_reward = compute_reward(RewardConfig(), reward_inputs_from_step(refused, None), EpisodeRewardState())
    assert "pbrs_forfeit" not in refused_reward.components


def test_wait_without_a_target_uses_the_sampled_canonical_slot() -> None:
    observed = [slot("r0c0"), slot("r0c1", SeedStage.BLENDING)]
    inputs = reward_inputs_from_step(record(observed=observed, raw_slot=1), None)
    assert inputs.target is not None and inputs.target.slot_id == "r0c1"


def test_contribution_and_total_improvement() -> None:
    observed = [slot("r0c0", SeedStage.BLENDING), slot("r0c1", SeedStage.BLENDING)]
    reports = [SlotReport(slot_id="r0c0", contribution=0.5), SlotReport(slot_id="r0c1", contribution=2.0)]
    with_all_off = reward_inputs_from_step(
        record(observed=observed, reports=reports, target_slot="r0c0", all_off=57.0), None
    )
    assert with_all_off.contribution == 0.5
    assert with_all_off.total_improvement == pytest.approx(3.0)
    # Without the all-off config the lowest leave-one-out accuracy (60 − 2) stands in for it.
    fallback = reward_inputs_from_step(record(observed=observed, reports=reports, target_slot="r0c0"), None)
    assert fallback.total_improvement == pytest.approx(2.0)
    unmeasured = reward_inputs_from_step(record(observed=observed, target_slot="r0c0"), None)
    assert unmeasured.contribution is None and unmeasured.total_improvement is None


def test_progress_and_escrow_progress() -> None:
    observed = [slot("r0c0", SeedStage.BLENDING)]
    inputs = reward_inputs_from_step(
        record(observed=observed, target_slot="r0c0", val_accuracy=58.0, history=[49.0, 53.0, 61.0, 58.0]), None
    )
    assert inputs.progress == pytest.approx(8.0)
    assert inputs.escrow_progress == pytest.approx(3.0)


def test_alphas_params_and_loss_delta_against_the_previous_step() -> None:
    before = record(epoch=9, observed=[slot("r0c0", SeedStage.BLENDING, alpha=0.2, params=800)], val_loss=1.2)
    now_reports = [SlotReport(slot_id="r0c0", seed_param_count=1_000)]
    now = record(observed=[slot("r0c0", SeedStage.BLENDING, alpha=0.6, params=800)], reports=now_reports, val_loss=1.0)
    inputs = reward_inputs_from_step(now, before)
    view = inputs.slots[0]
    assert (view.alpha, view.previous_alpha, view.seed_params, view.previous_seed_params) == (0.6, 0.2, 1_000, 800)
    assert inputs.loss_delta == pytest.approx(0.2)  # previous − current: positive means better
    first = reward_inputs_from_step(now, None)
    assert first.slots[0].previous_alpha == 0.6 and first.loss_delta == 0.25
    assert first.total_params == 10_000 + 1_000 and first.committed_accuracy == 55.0


def test_auto_prunes_count_once() -> None:
    pruned = [slot("r0c0", SeedStage.PRUNED, auto_pruned=True), slot("r0c1")]
    first = record(epoch=9, observed=pruned)
    assert reward_inputs_from_step(first, None).new_auto_prunes == 1
    assert reward_inputs_from_step(record(observed=pruned), first).new_auto_prunes == 0


def test_done_marks_the_terminal_step() -> None:
    assert reward_inputs_from_step(record(epoch=25, done=True), None).is_terminal
    assert not reward_inputs_from_step(record(), None).is_terminal


@pytest.mark.parametrize(
    ("rewards", "rewritten"),
    [([0.4, -1.0, 2.5], [0.0, 0.0, -10.0]), ([3.0], [-10.0]), ([], [])],
)
def test_rollback_forfeits_the_prefix_and_charges_the_last_executed_transition(
    rewards: list[float], rewritten: list[float]
) -> None:
    assert episode_rollback_rewrite(rewards) == rewritten
