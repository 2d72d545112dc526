"""A/B plans and verdicts (12.20), bootstrap intervals, curves.png, and the learning benchmark on the sandbox."""

from __future__ import annotations

from pathlib import Path

import pytest

import leyline_schemas as L
from services.experiments.ab import ExperimentPlan, mean_curves, plot_curves, verdict
from services.experiments.learning_bench import BenchSettings, bench_learning, evaluate
from services.experiments.sandbox import OPTIMAL_BLUEPRINT, SandboxConfig, oracle_decision
from services.experiments.statistics import bootstrap_interval, paired_difference
from services.tamiyo.policies import PolicyBook


def test_an_experiment_needs_two_distinct_arms_and_pairs_their_seeds() -> None:
    with pytest.raises(ValueError, match="at least two"):
        ExperimentPlan(arms=(L.RewardMode.SHAPED,))
    with pytest.raises(ValueError, match="duplicate"):
        ExperimentPlan(arms=(L.RewardMode.SHAPED, L.RewardMode.SHAPED))
    plan = ExperimentPlan(arms=(L.RewardMode.SHAPED, L.RewardMode.SIMPLIFIED), episodes=5, envs=2, seeds=2)
    first, second = plan.training_plan("ab-x", 0), plan.training_plan("ab-x", 1)
    assert first.rounds == 3 and [a.policy_id for a in first.arms] == ["ab-x-shaped-s0", "ab-x-simplified-s0"]
    assert first.seed != second.seed and first.eval_seed is None  # each replicate: one seed for every arm


def _replicate(accuracies: dict[str, list[float]]) -> dict[str, object]:
    def episodes(values: list[float]) -> list[dict[str, float]]:
        return [
            {"env": i, "final_accuracy": v, "seeds_fossilized": 1, "seed_params_added": 100, "episode_return": v / 10}
            for i, v in enumerate(values)
        ]

    return {
        "evaluation": {arm: {"per_episode": episodes(v)} for arm, v in accuracies.items()},
        "training": {
            arm: {"curve": [{"round": 0, "mean_final_accuracy": v[0], "mean_return": 1.0}]}
            for arm, v in accuracies.items()
        },
    }


def test_the_verdict_pairs_episodes_and_decides_only_on_a_clear_interval(tmp_path: Path) -> None:
    replicates = [_replicate({"shaped": [90.0, 91.0, 89.0, 92.0], "simplified": [93.0, 94.5, 92.0, 95.0]})]
    report = verdict(["shaped", "simplified"], replicates)
    difference = report["metrics"]["final_accuracy"]["paired_differences"]["simplified_minus_shaped"]
    assert difference["low"] > 0 and report["decisions"]["simplified"] == "simplified beats shaped"
    tied = verdict(["shaped", "simplified"], [_replicate({"shaped": [90.0, 92.0], "simplified": [92.0, 90.0]})])
    assert tied["decisions"]["simplified"] == "no significant difference"
    broken = _replicate({"shaped": [90.0, 91.0], "simplified": [93.0]})
    with pytest.raises(ValueError, match="pairing"):
        verdict(["shaped", "simplified"], [broken])
    path = plot_curves(mean_curves(["shaped", "simplified"], replicates), tmp_path / "curves.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bootstrap_intervals_bracket_the_mean_and_are_reproducible() -> None:
    values = [1.0, 2.0, 3.0, 4.0, 10.0]
    interval = bootstrap_interval(values, seed=3)
    assert interval.low <= interval.mean <= interval.high and interval == bootstrap_interval(values, seed=3)
    assert bootstrap_interval([2.5]).low == bootstrap_interval([2.5]).high == 2.5
    assert paired_difference([2.0, 3.0], [1.0, 1.0]).mean == 1.5
    with pytest.raises(ValueError, match="paired"):
        paired_difference([1.0], [1.0, 2.0])


def test_the_sandbox_oracle_is_the_known_optimum() -> None:
    settings = BenchSettings(eval_episodes=6, sandbox=SandboxConfig())
    book = PolicyBook()
    oracle = evaluate(oracle_decision, settings)
    for name in ("heuristic", "random", "wait"):
        other = evaluate(book.get(name).decide, settings)
        assert sum(oracle["returns"]) > sum(other["returns"]), name
        assert sum(oracle["accuracies"]) > sum(other["accuracies"]), name
    assert oracle["fossilized"] == [1.0] * 6 and OPTIMAL_BLUEPRINT is L.BlueprintAction.CONV_HEAVY


def test_bench_learning_reports_every_policy_with_intervals() -> None:
    result = bench_learning(BenchSettings(rounds=2, n_envs=2, eval_episodes=3, hidden=16, head_hidden=8))
    assert set(result["policies"]) == {"ppo", "ppo_greedy", "heuristic", "random", "oracle"}
    for figures in result["policies"].values():
        for metric in ("mean_return", "final_accuracy"):
            assert figures[metric]["low"] <= figures[metric]["mean"] <= figures[metric]["high"]
    assert len(result["training_curve"]) == 2 and isinstance(result["ppo_beats_random"], bool)
