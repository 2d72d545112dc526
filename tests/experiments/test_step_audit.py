"""What step records say about versions: the lag per round of a learning run and the version check of an evaluation."""

from __future__ import annotations

import msgspec

import leyline_schemas as L
from services.experiments.step_audit import evaluation_version_check, latest_attempts, round_version_lags
from services.simic.learner import ArmLearner
from tests.simic.simic_helpers import learner_config, play_round, run_spec


def _records(spec: L.RunSpec) -> tuple[list[L.StepRecord], list[L.StepRecord]]:
    learner = ArmLearner.fresh(spec, 0, learner_config())
    first = [r for scored in play_round(learner, 0) for r in scored.records]
    second = [r for scored in play_round(learner, 1) for r in scored.records]
    return first, second


def _acted_by(records: list[L.StepRecord], version: int) -> list[L.StepRecord]:
    return [msgspec.structs.replace(r, policy_version=version) for r in records]


def test_the_lag_of_a_step_counts_from_the_version_its_round_is_trained_from() -> None:
    spec = run_spec(n_envs=2, rounds=2)
    first, second = _records(spec)
    on_policy = round_version_lags(spec, _acted_by(first, 0) + _acted_by(second, 1))
    assert [(row["round"], row["lag_mean"], row["lag_max"]) for row in on_policy] == [(0, 0.0, 0), (1, 0.0, 0)]
    # Run ahead: half of round 1 acted by v0 while v1 was on its way.
    half = len(second) // 2
    ahead = round_version_lags(spec, _acted_by(first, 0) + _acted_by(second[:half], 0) + _acted_by(second[half:], 1))
    assert ahead[1]["lag_max"] == 1 and ahead[1]["lag_mean"] == round(half / len(second), 4)
    assert ahead[1]["steps"] == len(second) and ahead[1]["undecided_steps"] == 0
    # A line continued from v5: round 1 is trained from v6.
    arm = msgspec.structs.replace(spec.arms[0], from_version=5)
    continued = msgspec.structs.replace(spec, arms=[arm])
    rows = round_version_lags(continued, _acted_by(first, 5) + _acted_by(second, 5))
    assert [(row["lag_mean"], row["lag_max"]) for row in rows] == [(0.0, 0), (1.0, 1)]


def test_an_evaluation_counts_every_step_decided_by_another_version_or_by_none() -> None:
    records = _acted_by(_records(run_spec(n_envs=2, rounds=2))[0], 3)
    assert evaluation_version_check(records, 3) == {
        "evaluated_version": 3,
        "steps": len(records),
        "version_mismatches": 0,
        "undecided_steps": 0,
    }
    older = msgspec.structs.replace(records[1], policy_version=2)
    unavailable = msgspec.structs.replace(
        records[2],
        policy_version=-1,
        directive=msgspec.structs.replace(
            records[2].directive, decision=None, outcome=L.DecisionOutcome.POLICY_UNAVAILABLE
        ),
    )
    check = evaluation_version_check([records[0], older, unavailable, *records[3:]], 3)
    assert (check["version_mismatches"], check["undecided_steps"]) == (1, 1)
    # An earlier attempt of a restarted episode is not what the evaluation kept.
    stale_attempt = [msgspec.structs.replace(r, policy_version=1) for r in records if r.episode == 0]
    restarted = stale_attempt + [msgspec.structs.replace(r, attempt=1) if r.episode == 0 else r for r in records]
    assert len(latest_attempts(restarted)) == len(records)
    assert evaluation_version_check(restarted, 3)["version_mismatches"] == 0
