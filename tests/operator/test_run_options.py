"""`esper run` research options: --async, --strict-gates, --reward-family, --resume-line, and the evaluation version.

Pure: argument parsing, the specs they build, and the refusals that come before any bus is reached.
"""

from __future__ import annotations

import msgspec
import pytest

import leyline_schemas as L
from leyline_schemas.rounds import required_policy_version
from services.experiments.training import TrainingPlan, evaluation_spec, training_spec
from services.operator.cli import build_parser
from services.operator.run_client import spec_from_args
from services.runtime.service import RequestRejected
from services.tolaria.service import _check_spec


def _args(*argv: str):  # type: ignore[no-untyped-def]
    return build_parser().parse_args(["run", *argv])


def test_flags_reach_the_run_spec() -> None:
    args = _args("--strict-gates", "--reward-mode", "shaped", "--reward-family", "loss", "--async")
    assert args.run_ahead and args.strict_gates and args.resume_line is None
    spec = spec_from_args(_args("--strict-gates", "--reward-mode", "shaped", "--reward-family", "loss"))
    assert spec.permissive_gates is False
    assert (spec.arms[0].reward_mode, spec.arms[0].reward_family) == (L.RewardMode.SHAPED, L.RewardFamily.LOSS)
    assert spec_from_args(_args()).permissive_gates is True
    assert spec_from_args(_args()).arms[0].reward_family is L.RewardFamily.CONTRIBUTION


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--policy", "ppo", "--reward-mode", "simplified", "--reward-family", "loss"], "needs --reward-mode shaped"),
        (["--reward-mode", "sparse", "--reward-family", "loss"], "needs --reward-mode shaped"),
        (["--policy", "heuristic", "--async"], "need --policy ppo"),
        (["--policy", "heuristic", "--resume-line", "ppo-x"], "need --policy ppo"),
        (["--blueprints", "conv_light,conv_huge"], "conv_huge unknown"),
    ],
)
def test_impossible_combinations_are_refused_before_any_bus(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = _args("--nats", "nats://127.0.0.1:1", *argv)
    assert args.func(args) == 2
    assert message in capsys.readouterr().err


def _plan(**options: object) -> TrainingPlan:
    arm = L.ArmSpec(arm_id="main", policy_id="line-a", reward_mode=L.RewardMode.SHAPED)
    return TrainingPlan(arms=(arm,), rounds=2, n_envs_per_arm=1, episode_length=3, **options)  # type: ignore[arg-type]


def test_training_and_evaluation_specs_carry_the_mode_gates_and_versions() -> None:
    plan = _plan(run_ahead=True, strict_gates=True)
    spec = training_spec(plan, plan.arms[0], "train-x")
    assert spec.learn and spec.run_ahead and not spec.permissive_gates
    assert required_policy_version(spec, 1, spec.arms[0]) == 0, "--async: any version from the start on"
    strict = training_spec(_plan(), _plan().arms[0], "train-y")
    assert strict.permissive_gates and required_policy_version(strict, 1, strict.arms[0]) == 1
    evaluation = evaluation_spec(plan, "line-a+greedy", L.RewardMode.SHAPED, "eval-x", version=7)
    assert not evaluation.learn and evaluation.arms[0].from_version == 7 and not evaluation.permissive_gates
    assert required_policy_version(evaluation, 0, evaluation.arms[0]) == 7, "an evaluation of v7 needs v7"
    assert required_policy_version(evaluation, 0) == 0


def test_a_continued_line_needs_the_version_after_its_start_in_every_round() -> None:
    arm = L.ArmSpec(arm_id="main", policy_id="line-a", from_version=4)
    spec = L.RunSpec(run_id="r", episodes=4, n_envs=2, arms=[arm], learn=True)
    assert [required_policy_version(spec, r, arm) for r in range(2)] == [4, 5]


def test_tolaria_refuses_the_loss_family_without_mode_shaped() -> None:
    arm = L.ArmSpec(
        arm_id="main", policy_id="heuristic", reward_mode=L.RewardMode.SIMPLIFIED, reward_family=L.RewardFamily.LOSS
    )
    with pytest.raises(RequestRejected, match="loss reward family exists only with reward mode shaped"):
        _check_spec(L.RunSpec(run_id="loss-refused", arms=[arm]))
    shaped = msgspec.structs.replace(arm, reward_mode=L.RewardMode.SHAPED)
    checked, _ = _check_spec(L.RunSpec(run_id="loss-ok", arms=[shaped]))
    assert checked.arms[0].reward_family is L.RewardFamily.LOSS


def test_the_blueprint_allowlist_reaches_the_spec_and_tolaria_checks_it() -> None:
    """plans/kasmina2-phase0.md §4.4: `--blueprints` → RunSpec.blueprints, refused at RUNS_START by field."""
    spec = spec_from_args(_args("--blueprints", "conv_light, conv_ladder"))
    assert spec.blueprints == [L.BlueprintAction.CONV_LIGHT, L.BlueprintAction.CONV_LADDER]
    assert spec_from_args(_args()).blueprints == []
    checked, _ = _check_spec(spec)
    assert checked.blueprints == spec.blueprints
    for blueprints, words in (
        ([L.BlueprintAction.LORA], "not blueprints of a cnn host"),
        ([L.BlueprintAction.NOOP], "only NOOP"),
    ):
        with pytest.raises(RequestRejected, match=words) as refused:
            _check_spec(msgspec.structs.replace(spec, blueprints=blueprints))
        assert refused.value.field == "blueprints"


def test_the_internal_op_levers_reach_training_and_evaluation_specs_and_the_episode_lifecycle() -> None:
    """plans/kasmina2-phase0.md §12.5: the pivot levers ride on the RunSpec into every step's LifecycleConfig."""
    from services.experiments.ladder_experiment import LadderPlan

    plan = LadderPlan(rounds=1, seeds=1, internal_op_cooldown_epochs=2, internal_ops_require_alpha_hold=True)
    training = plan.training_plan("ladder-x", 0)
    for spec in (
        training_spec(training, training.arms[1], "train-z"),
        evaluation_spec(training, "line+greedy", L.RewardMode.SHAPED, "eval-z"),
    ):
        assert (spec.internal_op_cooldown_epochs, spec.internal_ops_require_alpha_hold) == (2, True)
    with pytest.raises(ValueError, match="cooldown must be >= 0"):
        LadderPlan(internal_op_cooldown_epochs=-1)
    with pytest.raises(RequestRejected, match="internal_op_cooldown_epochs must be >= 0") as refused:
        _check_spec(L.RunSpec(run_id="cooldown-refused", internal_op_cooldown_epochs=-1))
    assert refused.value.field == "internal_op_cooldown_epochs"



def test_an_arm_internal_op_cost_reaches_the_reward_config_and_a_bad_one_is_refused() -> None:
    from services.experiments.ladder_experiment import LadderPlan
    from services.simic.learner import LearnerConfig
    from services.simic.reward_config import RewardConfig, arm_of

    plan = LadderPlan(rounds=1, seeds=1, internal_op_cost=0.05).training_plan("ladder-c", 0)
    assert {arm.internal_op_cost for arm in plan.arms} == {0.05}
    spec = training_spec(plan, plan.arms[1], "train-c")
    assert LearnerConfig().rewards(arm_of(spec, plan.arms[1].arm_id)).internal_op_cost == 0.05
    default = LearnerConfig().rewards(L.ArmSpec(arm_id="a", policy_id="p", reward_mode=L.RewardMode.SHAPED))
    assert default.internal_op_cost == RewardConfig().internal_op_cost
    assert arm_of(spec, "missing").reward_mode is L.RewardMode.SIMPLIFIED
    scored = evaluation_spec(plan, "line+greedy", L.RewardMode.SHAPED, "eval-c", internal_op_cost=0.05)
    assert scored.arms[0].internal_op_cost == 0.05, "held-out episodes are scored with the arm's cost too"
    for bad in (-0.1, float("nan")):
        arm = L.ArmSpec(arm_id="main", policy_id="heuristic", internal_op_cost=bad)
        with pytest.raises(RequestRejected, match="internal_op_cost is charged as a negative term"):
            _check_spec(L.RunSpec(run_id="cost-refused", arms=[arm]))
        with pytest.raises(ValueError, match="internal-op cost must be finite"):
            LadderPlan(internal_op_cost=bad)
