"""The sandbox's blueprint allowlist and its conv_ladder variant (plans/kasmina2-phase0.md §8.5, invariant 40)."""

from __future__ import annotations

import math
import statistics

import msgspec
import pytest

import leyline_schemas as L
from services.experiments.learning_bench import BenchSettings, LadderUsage, bench_learning, evaluate
from services.experiments.sandbox import (
    BLUEPRINT_GAINS,
    BLUEPRINT_PARAMS,
    LADDER_GAINS,
    LADDER_PARAMS_PER_LEVEL,
    SANDBOX_BLUEPRINTS,
    SandboxConfig,
    SandboxEpisode,
    oracle_decision,
    oracle_ladder_decision,
)
from services.tamiyo.policies import PolicyBook

LADDER = L.BlueprintAction.CONV_LADDER
GROW, SHRINK = L.LifecycleOp.GROW_INTERNAL, L.LifecycleOp.SHRINK_INTERNAL

#: The default sandbox's held-out SIMPLIFIED oracle returns, recorded before phase 0 (commit f74b008).
RECORDED_ORACLE_RETURNS = [6.239301909, 6.20167788, 6.213355896, 6.178237042, 6.170587953, 6.159851646]


def test_the_default_sandbox_pins_its_seven_blueprints_and_keeps_its_recorded_optimum() -> None:
    assert SandboxConfig().lifecycle().blueprints == list(BLUEPRINT_GAINS) == list(SANDBOX_BLUEPRINTS)
    assert len(SANDBOX_BLUEPRINTS) == 7 and LADDER not in SANDBOX_BLUEPRINTS
    assert SandboxConfig(ladder=True).lifecycle().blueprints == [*SANDBOX_BLUEPRINTS, LADDER]
    oracle = evaluate(oracle_decision, BenchSettings(eval_episodes=6, sandbox=SandboxConfig()))
    assert oracle["returns"] == pytest.approx(RECORDED_ORACLE_RETURNS, abs=1e-8)
    # Random germinates only what the mask allows: never the ladder, in any episode.
    records = [
        r for i in range(4) for r in SandboxEpisode(SandboxConfig(), seed=i).run(PolicyBook().get("random").decide)
    ]
    for record in records:
        masks = record.directive.masks
        assert masks is not None and not masks.blueprint[LADDER] and not masks.op[GROW] and not masks.op[SHRINK]
    germinated = {
        r.directive.raw_action.blueprint for r in records if r.directive.effective_op is L.LifecycleOp.GERMINATE
    }
    assert germinated and germinated <= set(SANDBOX_BLUEPRINTS)


def _scripted(ops: dict[int, L.LifecycleOp]):  # type: ignore[no-untyped-def]
    """A policy that germinates the ladder at epoch 1 and applies `ops` (epoch → op) to slot 0."""

    def decide(request: L.DecisionRequest) -> L.Decision:
        epoch = request.epoch
        if epoch == 1:
            action = L.FactoredAction(op=L.LifecycleOp.GERMINATE, slot=0, blueprint=LADDER)
        else:
            action = L.FactoredAction(op=ops.get(epoch, L.LifecycleOp.WAIT), slot=0)
        return L.Decision(policy_id=request.policy_id, policy_version=0, action=action)

    return decide


def test_a_ladder_gains_and_costs_by_level_and_each_rung_matures_from_its_own_epoch() -> None:
    config = SandboxConfig(ladder=True, episode_length=8)
    episode = SandboxEpisode(config, seed=0)
    records = episode.run(_scripted({2: GROW, 3: GROW, 4: SHRINK, 6: GROW}))
    assert [r.directive.effective_op for r in records[1:6]] == [GROW, GROW, SHRINK, L.LifecycleOp.WAIT, GROW]
    state = episode.slot_states[0]
    assert state.internal_level == 3 and episode.rungs["r0c0"] == (state.seed_id, [1, 2, 6])
    levels = [r.directive.observed_slots[0].internal_level for r in records[1:]]
    params = [r.report.slots[0].seed_param_count for r in records[1:]]
    assert params == [LADDER_PARAMS_PER_LEVEL * level for level in levels]  # the report follows the level

    blended = msgspec.structs.replace(
        state,
        stage=L.SeedStage.HOLDING,
        controller=L.AlphaControllerState(alpha=1.0, alpha_start=1.0, alpha_target=1.0),
    )
    assert episode.seed_effect(blended, 10_000) == pytest.approx(LADDER_GAINS[3])
    tau = config.maturity_epochs

    def matured(age: int) -> float:
        return 1.0 - math.exp(-age / tau)

    expected = 3.0 * matured(7) + 2.0 * matured(6) + 1.0 * matured(2)  # rungs activated at epochs 1, 2 and 6
    assert episode.seed_effect(blended, 8) == pytest.approx(expected)
    half = msgspec.structs.replace(
        blended, controller=L.AlphaControllerState(alpha=0.5, alpha_start=0.5, alpha_target=0.5)
    )
    assert episode.seed_effect(half, 8) == pytest.approx(0.5 * expected)
    heavy = msgspec.structs.replace(blended, blueprint=L.BlueprintAction.CONV_HEAVY)
    assert episode.seed_effect(heavy, 10_000) == pytest.approx(6.0)
    assert BLUEPRINT_PARAMS[L.BlueprintAction.CONV_HEAVY] == 4 * LADDER_PARAMS_PER_LEVEL
    assert LADDER_GAINS == (0.0, 3.0, 5.0, 6.0, 6.5)


def test_the_ladder_oracle_grows_every_epoch_to_the_top_then_fossilizes() -> None:
    episode = SandboxEpisode(SandboxConfig(ladder=True), seed=7)
    records = episode.run(oracle_ladder_decision)
    ops = [r.directive.effective_op for r in records]
    assert ops[:4] == [L.LifecycleOp.GERMINATE, GROW, GROW, GROW]
    assert SHRINK not in ops and ops.count(L.LifecycleOp.FOSSILIZE) == 1
    summary = records[-1].summary
    assert summary is not None and summary.seeds_fossilized == 1
    assert summary.seed_params_added == 4 * LADDER_PARAMS_PER_LEVEL
    assert episode.counters["grown"] == 3 and episode.counters["shrunk"] == 0


@pytest.mark.parametrize("mode", [m for m in L.RewardMode if m is not L.RewardMode.SIMPLIFIED])
def test_invariant_40_the_ladder_oracle_out_earns_the_conv_heavy_oracle(mode: L.RewardMode) -> None:
    settings = BenchSettings(eval_episodes=8, sandbox=SandboxConfig(ladder=True), reward_mode=mode)
    ladder, heavy = evaluate(oracle_ladder_decision, settings), evaluate(oracle_decision, settings)
    assert statistics.mean(ladder["returns"]) > statistics.mean(heavy["returns"])
    assert statistics.mean(ladder["accuracies"]) > statistics.mean(heavy["accuracies"])


def test_under_simplified_the_ladder_oracle_is_within_the_sandbox_checks_tolerance() -> None:
    # SIMPLIFIED pays 3·acc/100 at the horizon and −0.01 per op: the ladder's +0.5 points are worth 0.015, its three
    # GROWs cost 0.03, so only §12.3 item 5's "at least the conv_heavy oracle minus 0.1" holds here.
    settings = BenchSettings(eval_episodes=8, sandbox=SandboxConfig(ladder=True))
    ladder, heavy = evaluate(oracle_ladder_decision, settings), evaluate(oracle_decision, settings)
    assert statistics.mean(ladder["returns"]) >= statistics.mean(heavy["returns"]) - 0.1


def test_ladder_usage_counts_internal_ops_among_acting_ops_on_ladder_present_steps() -> None:
    usage = LadderUsage(since_round=1)
    records = SandboxEpisode(SandboxConfig(ladder=True), seed=7).run(oracle_ladder_decision)
    usage.add(0, records)
    assert usage.as_dict()["acting_ops"] == 0  # before since_round
    usage.add(1, records)
    # Ladder-present acting ops: the three GROWs and the FOSSILIZE (the GERMINATE came before any ladder existed).
    assert (usage.internal_ops, usage.acting_ops, usage.usage) == (3, 4, 0.75)
    assert usage.germinations == {"conv_ladder": 1}


def test_bench_learning_on_the_ladder_sandbox_reports_the_ladder_oracle_and_its_checks() -> None:
    settings = BenchSettings(
        rounds=2, n_envs=2, eval_episodes=2, hidden=16, head_hidden=8, sandbox=SandboxConfig(ladder=True)
    )
    result = bench_learning(settings)
    assert result["task"] == "sandbox-ladder" and "oracle_ladder" in result["policies"]
    ladder = result["ladder"]
    assert 0.0 <= ladder["usage"] <= 1.0 and ladder["since_round"] == 0
    assert set(ladder["checks"]) == {
        "usage_at_least_0_10",
        "ladder_germinations_at_least_conv_heavy",
        "return_within_0_1_of_conv_heavy_oracle",
    }
    difference = ladder["oracle_ladder_minus_oracle"]
    assert difference["low"] <= difference["mean"] <= difference["high"]
