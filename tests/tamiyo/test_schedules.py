"""The fixed-schedule control (proof-baselines §3.4, B5): pinned, played through the real masks, trace checked."""

from __future__ import annotations

import dataclasses

import pytest

from leyline_schemas.enums import LifecycleOp, SeedStage
from services.tamiyo.schedules import (
    FIXED_GERMINATE_R0C0,
    MAX_DELAY,
    PINNED_HASHES,
    SCHEDULES,
    ScheduledStep,
    check_pinned,
    realised_delays,
)

SCHEDULE = SCHEDULES[FIXED_GERMINATE_R0C0]
DECLARED = {s.epoch: s.op.name for s in SCHEDULE.steps}


def test_the_builtin_schedule_matches_its_pinned_hash_and_an_edit_without_a_bump_fails() -> None:
    check_pinned(SCHEDULES, PINNED_HASHES)
    edited = dataclasses.replace(
        SCHEDULE, steps=(ScheduledStep(2, LifecycleOp.GERMINATE, SeedStage.DORMANT), *SCHEDULE.steps[1:])
    )
    with pytest.raises(RuntimeError, match="new version"):
        check_pinned({FIXED_GERMINATE_R0C0: edited}, PINNED_HASHES)
    assert SCHEDULE.min_episode_length == 18


def test_the_declared_trace_has_no_delay_and_a_shifted_one_is_measured() -> None:
    assert realised_delays(SCHEDULE, DECLARED) == ([0, 0, 0, 0, 0], "")
    shifted = {1: "GERMINATE", 2: "ADVANCE", 14: "ADVANCE", 19: "ADVANCE", 20: "FOSSILIZE"}
    assert realised_delays(SCHEDULE, shifted) == ([0, 0, 2, 2, 2], "")


@pytest.mark.parametrize(
    ("trace", "problem"),
    [
        ({1: "GERMINATE", 2: "ADVANCE", 12: "ADVANCE", 17: "ADVANCE"}, "only 4 of 5"),
        ({1: "GERMINATE", 2: "PRUNE"}, "PRUNE where the schedule declares ADVANCE"),
        ({1: "GERMINATE", 2: "ADVANCE", 12 + MAX_DELAY + 1: "ADVANCE", 21: "ADVANCE", 22: "FOSSILIZE"}, "outside"),
        ({**DECLARED, 19: "PRUNE"}, "6 non-WAIT ops"),
    ],
)
def test_a_trace_off_the_declaration_is_a_violation(trace: dict[int, str], problem: str) -> None:
    _, found = realised_delays(SCHEDULE, trace)
    assert problem in found


def test_the_schedule_plays_legally_through_kasminas_pure_core_on_its_declared_epochs() -> None:
    from leyline_schemas import DecisionOutcome
    from services.experiments.sandbox import SandboxConfig, SandboxEpisode
    from services.tamiyo.schedules import schedule_decision

    config = SandboxConfig(episode_length=22, slots=("r0c0", "r0c1"), auto_forward_gates=())
    records = SandboxEpisode(config, seed=3).run(schedule_decision)
    applied = {
        r.step: r.directive.effective_op.name
        for r in records
        if r.directive.outcome is DecisionOutcome.APPLIED and r.directive.effective_op is not LifecycleOp.WAIT
    }
    delays, problem = realised_delays(SCHEDULE, applied)
    assert problem == "" and delays == [0, 0, 0, 0, 0], applied
    assert records[-1].summary is not None and records[-1].summary.seeds_fossilized == 1
    assert {r.directive.target_slot for r in records if r.directive.effective_op is not LifecycleOp.WAIT} == {"r0c0"}
