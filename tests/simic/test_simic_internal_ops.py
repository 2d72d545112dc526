"""GROW/SHRINK_INTERNAL in Simic (plans/kasmina2-phase0.md §8, invariants 35–39): op costs, rent by level, the
thrash penalty, rollouts and a PPO update on records with internal ops."""

from __future__ import annotations

import dataclasses
import math

import msgspec
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import leyline_schemas as L
from leyline_schemas.enums import INTERNAL_OPS, LifecycleOp, RewardFamily, RewardMode, SeedStage
from leyline_schemas.heads import causal_heads
from leyline_schemas.steps import StepRecord
from services.experiments.sandbox import SandboxConfig, SandboxEpisode, oracle_ladder_decision
from services.observation.level_trajectory import windowed_reversal_rate
from services.simic.episodes import score_episode
from services.simic.learner import ArmLearner
from services.simic.normalizers import ValueNormalizer
from services.simic.ppo import PPOConfig, kl_weights, ppo_update
from services.simic.reward_inputs import reward_inputs_from_step
from services.simic.rewards import (
    EpisodeRewardState,
    RewardConfig,
    RewardInputs,
    SlotView,
    compute_reward,
)
from services.simic.rewards_contribution import rent
from services.simic.rewards_thrash import thrash_rate
from services.simic.rollout import RolloutBatch, RolloutError, build_rollout
from tests.kasmina.factories import seed
from tests.simic.simic_helpers import collate_rollouts, learner_config, run_spec

LADDER = L.BlueprintAction.CONV_LADDER
GROW, SHRINK = LifecycleOp.GROW_INTERNAL, LifecycleOp.SHRINK_INTERNAL
HOST = 24_058  # the digits host of §6.4 item 3


def rung(channels: int) -> int:
    """§6.4: one ladder rung's parameters, 9C² + 3C."""
    return 9 * channels**2 + 3 * channels


# Invariant 35: an internal op is WAIT plus one action term (SHAPED/ESCROW −0.005, SIMPLIFIED −0.01, else nothing)

CONFIGS = {
    "shaped": RewardConfig(mode=RewardMode.SHAPED),
    "escrow": RewardConfig(mode=RewardMode.ESCROW),
    "simplified": RewardConfig(mode=RewardMode.SIMPLIFIED),
    "basic": RewardConfig(mode=RewardMode.BASIC),
    "basic_plus": RewardConfig(mode=RewardMode.BASIC_PLUS),
    "sparse": RewardConfig(mode=RewardMode.SPARSE),
    "minimal": RewardConfig(mode=RewardMode.MINIMAL),
    "loss": RewardConfig(family=RewardFamily.LOSS),
}
OP_TERM = {"shaped": -0.005, "escrow": -0.005, "simplified": -0.01}


@st.composite
def ladder_steps(draw: st.DrawFn) -> tuple[RewardInputs, RewardInputs]:
    """The same pre-action state twice: once rewarded as an applied internal op, once as WAIT."""
    stage = draw(st.sampled_from(sorted(L.INTERNAL_OP_STAGES)))
    level = draw(st.integers(0, 4))
    alpha = draw(st.floats(0.0, 1.0))
    target = seed(
        stage,
        "r0c0",
        blueprint=LADDER,
        level=level,
        alpha=alpha,
        dwell=draw(st.integers(0, 12)),
        accuracy=draw(st.floats(40.0, 90.0)),
        stage_start_accuracy=draw(st.floats(40.0, 90.0)),
    )
    contribution = draw(st.none() | st.floats(-10.0, 10.0))
    total = draw(st.floats(-5.0, 5.0)) if contribution is not None else draw(st.none() | st.floats(-5.0, 5.0))
    epoch = draw(st.integers(1, 25))
    view = SlotView(
        slot_id="r0c0",
        stage=stage,
        seed_id=target.seed_id,
        alpha=alpha,
        previous_alpha=draw(st.floats(0.0, 1.0)),
        seed_params=level * rung(16),
        previous_seed_params=level * rung(16),
        contribution=contribution,
        age=epoch - 1,
    )
    inputs = RewardInputs(
        effective_op=draw(st.sampled_from(sorted(INTERNAL_OPS))),
        val_accuracy=draw(st.floats(40.0, 95.0)),
        epoch=epoch,
        max_epochs=25,
        target=target,
        contribution=contribution,
        total_improvement=total,
        progress=draw(st.none() | st.floats(-5.0, 5.0)),
        escrow_progress=draw(st.none() | st.floats(-5.0, 5.0)),
        interaction_sum=draw(st.floats(0.0, 3.0)),
        val_loss=draw(st.floats(0.1, 3.0)),
        loss_delta=draw(st.floats(-1.0, 1.0)),
        host_params=HOST,
        total_params=HOST + level * rung(16),
        slots=(view,),
        is_terminal=epoch == 25,
    )
    return inputs, dataclasses.replace(inputs, effective_op=LifecycleOp.WAIT)


@settings(max_examples=150, deadline=None)
@given(ladder_steps(), st.sampled_from(sorted(CONFIGS)))
def test_invariant_35_an_internal_op_differs_from_wait_only_by_its_action_term(
    steps: tuple[RewardInputs, RewardInputs], name: str
) -> None:
    op, wait = steps
    config = CONFIGS[name]
    acted = compute_reward(config, op, EpisodeRewardState()).components
    waited = compute_reward(config, wait, EpisodeRewardState()).components
    expected = OP_TERM.get(name)
    assert "action" not in waited
    if expected is None:
        assert acted == waited
    else:
        assert acted["action"] == pytest.approx(expected, abs=1e-15)
        assert {k: v for k, v in acted.items() if k != "action"} == waited


def test_invariant_35_on_real_step_records_and_the_cost_is_a_setting() -> None:
    records = _ladder_records()
    index = next(i for i, r in enumerate(records) if r.directive.effective_op is GROW)
    grow = records[index]
    waited = msgspec.structs.replace(
        grow,
        directive=msgspec.structs.replace(
            grow.directive,
            effective_op=LifecycleOp.WAIT,
            raw_action=L.FactoredAction(op=LifecycleOp.WAIT, slot=grow.directive.raw_action.slot),
            target_slot="",
            mutations=[],
            outcome=L.DecisionOutcome.WAITED,
        ),
    )
    previous = records[index - 1]
    for config, cost in ((RewardConfig(), 0.005), (RewardConfig(internal_op_cost=0.02), 0.02)):
        acted = dict(compute_reward(config, reward_inputs_from_step(grow, previous), EpisodeRewardState()).components)
        idle = compute_reward(config, reward_inputs_from_step(waited, previous), EpisodeRewardState()).components
        assert acted.pop("action") == pytest.approx(-cost) and acted == idle
    with pytest.raises(ValueError, match="internal_op_cost"):
        RewardConfig(internal_op_cost=-0.001)
    with pytest.raises(ValueError, match="internal_thrash_penalty"):
        RewardConfig(internal_thrash_penalty=math.nan)


def test_an_op_without_a_reward_rule_raises_instead_of_being_priced_as_another() -> None:
    unknown = RewardInputs(effective_op=99, val_accuracy=60.0, epoch=3, max_epochs=25)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no reward rule for op 99"):
        compute_reward(RewardConfig(), unknown, EpisodeRewardState())


# Invariant 36: rent follows the level (§6.4 item 3)


@settings(max_examples=100, deadline=None)
@given(
    st.integers(0, 3),
    st.floats(1e-3, 1.0),
    st.sampled_from([SeedStage.BLENDING, SeedStage.HOLDING, SeedStage.FOSSILIZED]),
    st.sampled_from([16, 32, 64]),
)
def test_invariant_36_rent_is_strictly_higher_one_level_up(
    level: int, alpha: float, stage: SeedStage, channels: int
) -> None:
    record, previous = _rent_record(level, alpha, stage, channels), _rent_record(level, alpha, stage, channels)
    lower = rent(reward_inputs_from_step(record, previous))
    upper_record = _rent_record(level + 1, alpha, stage, channels)
    upper = rent(reward_inputs_from_step(upper_record, upper_record))
    assert upper > lower


def test_invariant_36_level_zero_pays_only_the_base_and_the_rent_table_of_6_4() -> None:
    zero = _rent_record(0, 1.0, SeedStage.HOLDING, 16)
    assert rent(reward_inputs_from_step(zero, zero)) == pytest.approx(0.5 * math.log1p(0.0039))
    table = [
        (rung(16), 0.048),  # ladder level 1 at r0c0
        (2 * (9 * 16**2 + 2 * 16), 0.090),  # conv_heavy at r0c0
        (4 * rung(16), 0.166),  # ladder level 4 at r0c0
        (rung(64), 0.467),  # ladder level 1 at r0c2
        (2 * (9 * 64**2 + 2 * 64), 0.703),  # conv_heavy at r0c2
    ]
    for params, expected in table:
        view = SlotView(slot_id="r0c0", stage=SeedStage.HOLDING, alpha=1.0, seed_params=params)
        inputs = RewardInputs(
            effective_op=LifecycleOp.WAIT, val_accuracy=60.0, epoch=5, max_epochs=25, host_params=HOST, slots=(view,)
        )
        assert rent(inputs) == pytest.approx(expected, abs=5e-4)


def _rent_record(level: int, alpha: float, stage: SeedStage, channels: int) -> StepRecord:
    """A step whose one slot holds a ladder at `level`; its parameter count is set as the mechanics will (§6.4)."""
    state = seed(stage, "r0c0", blueprint=LADDER, level=level, alpha=alpha)
    state = msgspec.structs.replace(
        state, metrics=msgspec.structs.replace(state.metrics, seed_param_count=level * rung(channels))
    )
    report = L.EpochReport(
        epoch=5,
        max_epochs=25,
        train_loss=1.0,
        train_accuracy=60.0,
        val_loss=1.0,
        val_accuracy=60.0,
        host_params=HOST,
        slots=[L.SlotReport(slot_id="r0c0")],  # no count in the report: the state's metrics are read
    )
    directive = L.StepDirective(
        run_id="r",
        env_id=0,
        episode=0,
        epoch=5,
        outcome=L.DecisionOutcome.WAITED,
        effective_op=LifecycleOp.WAIT,
        raw_action=L.FactoredAction(op=LifecycleOp.WAIT, slot=0),
        observed_slots=[state],
    )
    return StepRecord(
        run_id="r",
        arm="a",
        env_id=0,
        episode=0,
        step=5,
        policy_id="p",
        policy_version=0,
        report=report,
        directive=directive,
        applied=True,
    )


# Invariant 37: the thrash penalty (§8.3)

G, S = 1, -1


def _thrash_terms(config: RewardConfig, ops: list[LifecycleOp], *, reseed_at: int | None = None) -> list[float]:
    state = EpisodeRewardState()
    terms = []
    for i, op in enumerate(ops):
        seed_id = "second" if reseed_at is not None and i >= reseed_at else "first"
        target = msgspec.structs.replace(seed(SeedStage.HOLDING, "r0c0", blueprint=LADDER, level=2), seed_id=seed_id)
        inputs = RewardInputs(effective_op=op, val_accuracy=60.0, epoch=3 + i, max_epochs=25, target=target)
        terms.append(compute_reward(config, inputs, state).components.get("internal_thrash", 0.0))
    return terms


def test_invariant_37_the_thrash_penalty() -> None:
    alternating = [GROW, SHRINK, GROW, SHRINK, GROW]
    assert _thrash_terms(RewardConfig(), alternating) == [0.0] * 5  # off by default
    on = RewardConfig(internal_thrash_penalty=0.005)
    terms = _thrash_terms(on, alternating)
    assert terms[:3] == [0.0, 0.0, 0.0]  # fewer than 4 ops add 0
    assert terms[4] == pytest.approx(-0.005 * 1.0)  # G,S,G,S,G: 4 reversals in 4 chances
    assert terms[3] == pytest.approx(-0.005)  # G,S,G,S already has 4 ops at rate 1
    assert _thrash_terms(on, [GROW, GROW, SHRINK, GROW, GROW]) == [0.0] * 5  # rate 0.5 is not thrash
    # A new seed in the slot starts a new trajectory; WAIT steps neither count nor pay.
    assert _thrash_terms(on, [GROW, SHRINK, GROW, SHRINK, GROW], reseed_at=3) == [0.0] * 5
    assert _thrash_terms(on, [GROW, SHRINK, LifecycleOp.WAIT, GROW, LifecycleOp.WAIT, SHRINK])[-1] == pytest.approx(
        -0.005
    )


@given(st.lists(st.sampled_from([G, S]), max_size=30))
def test_invariant_37_the_rule_is_the_shared_windowed_reversal_rate_above_0_7(directions: list[int]) -> None:
    # Simic may not import Kasmina (ARCHITECTURE §3), so the rule is restated; it must agree with ladder.py's.
    rate = windowed_reversal_rate(directions)
    assert thrash_rate(directions) == (rate if rate > 0.7 else 0.0)


def test_invariant_37_only_the_last_ten_ops_count() -> None:
    assert thrash_rate([G, S] * 5) == pytest.approx(1.0)
    assert thrash_rate([G, S] * 5 + [G] * 8) == 0.0  # the window holds S,G,G,...: one reversal in nine
    assert thrash_rate([G] * 20 + [S, G, S, G]) == 0.0  # 4 reversals in the last 10 ops: rate 4/9


# Invariant 38: rollouts of records with internal ops

LENGTH = 12
LADDER_SANDBOX = SandboxConfig(ladder=True, episode_length=LENGTH, slots=("r0c0", "r0c1"))


def _ladder_records(seed_value: int = 3) -> list[StepRecord]:
    return SandboxEpisode(LADDER_SANDBOX, seed=seed_value, policy_id="line-0").run(oracle_ladder_decision)


def test_invariant_38_rollout_masks_of_internal_ops() -> None:
    records = _ladder_records()
    rollout = build_rollout(score_episode(records, RewardConfig()), 2)
    grown = [t for t, r in enumerate(records) if r.directive.effective_op is GROW]
    legal = [
        t for t, r in enumerate(records) if r.directive.masks and any(r.directive.masks.op[o] for o in INTERNAL_OPS)
    ]
    assert len(grown) == 3 and set(grown) < set(legal)
    assert causal_heads(GROW) == causal_heads(SHRINK) == frozenset({"op", "slot"})
    for t in grown:
        assert {h for h in L.HEAD_NAMES if rollout.causal[h][t]} == {"op", "slot"}
        assert rollout.actions["op"][t] == GROW
        for head in L.HEAD_NAMES:
            if head not in ("op", "slot"):
                assert int(rollout.masks[head][t].sum()) == 1, head  # canonical: log-prob exactly 0
    for t in legal:
        assert bool(rollout.available["slot"][t]) and bool(rollout.available["op"][t])


def test_invariant_38_a_step_where_only_wait_and_an_internal_op_are_legal() -> None:
    records = _ladder_records()
    t = next(i for i, r in enumerate(records) if r.directive.effective_op is GROW)
    masks = records[t].directive.masks
    assert masks is not None
    only = [op in (LifecycleOp.WAIT, GROW) for op in LifecycleOp]
    narrowed = msgspec.structs.replace(records[t].directive, masks=msgspec.structs.replace(masks, op=only))
    records[t] = msgspec.structs.replace(records[t], directive=narrowed)
    rollout = build_rollout(score_episode(records, RewardConfig()), 2)
    assert {h for h in L.HEAD_NAMES if rollout.available[h][t]} == {"op", "slot"}
    assert not bool(rollout.forced[t])  # WAIT is not the only legal op


@pytest.mark.parametrize(
    "action",
    [
        L.FactoredAction(op=GROW, slot=1),  # GROW is legal only where the ladder is
        L.FactoredAction(op=GROW, slot=0, blueprint=L.BlueprintAction.CONV_HEAVY),  # not a causal head of GROW
        L.FactoredAction(op=GROW, slot=0, alpha_speed=L.AlphaSpeedAction.FAST),
        L.FactoredAction(op=SHRINK, slot=0, tempo=L.TempoAction.FAST),
    ],
)
def test_invariant_38_a_stored_action_outside_its_op_conditioned_mask_is_rejected(action: L.FactoredAction) -> None:
    records = _ladder_records()
    t = next(i for i, r in enumerate(records) if r.directive.effective_op is GROW)
    records[t] = msgspec.structs.replace(
        records[t], directive=msgspec.structs.replace(records[t].directive, raw_action=action)
    )
    with pytest.raises(RolloutError, match="outside its op-conditioned mask"):
        build_rollout(score_episode(records, RewardConfig()), 2)


# Invariant 39: a PPO update on a batch with internal ops


def _ladder_batch(learner: ArmLearner, episodes: list[list[StepRecord]]) -> RolloutBatch:
    rollouts = [build_rollout(score_episode(records, learner.reward_config), 2) for records in episodes]
    return collate_rollouts(learner, rollouts, LENGTH)


def test_invariant_39_a_ppo_update_with_internal_ops() -> None:
    learner = ArmLearner.fresh(run_spec(n_envs=2), 0, learner_config())
    episodes = [_ladder_records(3), _ladder_records(4)]
    batch = _ladder_batch(learner, episodes)
    assert bool((batch.actions["op"] == GROW).any())
    stats = ppo_update(
        learner.network,
        learner.optimizer,
        batch,
        PPOConfig(epochs=2, minibatches=2),
        ValueNormalizer(),
        updates_done=0,
        total_updates=2,
        generator=torch.Generator().manual_seed(0),
    )
    figures = [stats.policy_loss, stats.value_loss, stats.q_loss, stats.entropy_loss, stats.approx_kl]
    assert stats.optimizer_steps > 0 and stats.skipped_steps == 0
    assert all(math.isfinite(x) for x in [*figures, *stats.head_entropies.values(), *stats.diagnostics.values()])
    assert {f"q_op{op}" for op in range(len(LifecycleOp))} <= set(stats.diagnostics)  # Q covers all 8 ops

    # The KL weights count a GROW step's slot head: rewritten as the WAIT it is not, the slot weight drops.
    weights = kl_weights(batch)
    grows = batch.actions["op"] == GROW
    assert float(weights["slot"]) == pytest.approx(float(batch.causal["slot"].float().mean()))
    as_waits = [[_as_wait_record(r) for r in records] for records in episodes]
    waited = kl_weights(_ladder_batch(learner, as_waits))
    dropped = float(grows.sum()) / grows.numel()
    assert float(weights["slot"]) - float(waited["slot"]) == pytest.approx(dropped)
    assert float(weights["blueprint"]) == pytest.approx(float(waited["blueprint"]))


def _as_wait_record(record: StepRecord) -> StepRecord:
    if record.directive.effective_op not in INTERNAL_OPS:
        return record
    directive = msgspec.structs.replace(
        record.directive,
        effective_op=LifecycleOp.WAIT,
        raw_action=L.FactoredAction(op=LifecycleOp.WAIT, slot=record.directive.raw_action.slot),
        target_slot="",
        mutations=[],
    )
    return msgspec.structs.replace(record, directive=directive)
