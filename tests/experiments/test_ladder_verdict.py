"""A1–A7 of the ladder experiment (plans/kasmina2-phase0.md §12.2) on hand-made replicates: each gate passes,
fails and (where it has a precondition) is inconclusive exactly where the spec draws the line."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.experiments.ladder_verdict import (
    CONTROL,
    FAIL,
    INCONCLUSIVE,
    PASS,
    TREATMENT,
    WAIT,
    Replicate,
    heavy_share,
    ladder_verdict,
    longest_run_below,
    usage,
)


def report(
    *,
    internal: int = 0,
    acted: int = 4,
    invalid: int = 0,
    sampled: int = 20,
    germinations: dict[str, int] | None = None,
    seeds: list[dict[str, Any]] | None = None,
    events: int = 0,
    applied: int = 0,
) -> dict[str, Any]:
    return {
        "usage": {"internal_ops": internal, "non_wait_ops": acted},
        "invalid_actions": invalid,
        "sampled_decisions": sampled,
        "germinations": germinations if germinations is not None else {"conv_light": 1},
        "seeds": seeds or [],
        "level_events": events,
        "applied_internal_ops": applied,
        "post_op": [{"k": 1}],
    }


def seed(ops: int, rate: float, density: float, settled: bool = True) -> dict[str, Any]:
    return {"ops": ops, "reversal_rate": rate, "density": density, "settled": settled}


def replicate(
    *,
    treatment_half: list[dict[str, Any]] | None = None,
    control_half: list[dict[str, Any]] | None = None,
    treatment_whole: dict[str, Any] | None = None,
    accuracies: tuple[float, float, float] = (60.0, 61.0, 55.0),
    params: tuple[int, int] = (1000, 1000),
    entropies: tuple[list[float], list[float]] = ([0.5] * 6, [0.5] * 6),
    rollbacks: tuple[int, int] = (0, 0),
    wrong_widths: int = 0,
) -> Replicate:
    half_t = treatment_half or [report(internal=2, acted=4) for _ in range(4)]
    half_c = control_half or [report() for _ in range(4)]
    whole_t = treatment_whole or report(
        germinations={"conv_ladder": 2}, events=3, applied=3, seeds=[seed(2, 0.0, 0.2), seed(1, 0.0, 0.1)]
    )

    def curve(values: list[float]) -> list[dict[str, Any]]:
        return [{"head_entropies": {"op": v, "slot": 0.9}, "skipped": False} for v in values]

    def episodes(n: int) -> list[dict[str, Any]]:
        return [{"rollbacks": n if i == 0 else 0} for i in range(8)]

    def evaluated(accuracy: float, added: int) -> dict[str, Any]:
        return {
            "per_episode": [{"env": e, "final_accuracy": accuracy + e, "seed_params_added": added} for e in range(4)]
        }

    return Replicate(
        training={
            CONTROL: {"curve": curve(entropies[0]), "episodes": episodes(rollbacks[0])},
            TREATMENT: {"curve": curve(entropies[1]), "episodes": episodes(rollbacks[1])},
        },
        evaluation={
            CONTROL: evaluated(accuracies[0], params[0]),
            TREATMENT: evaluated(accuracies[1], params[1]),
            WAIT: evaluated(accuracies[2], 0),
        },
        last_half={CONTROL: half_c, TREATMENT: half_t},
        whole={CONTROL: report(), TREATMENT: whole_t},
        first_quarter={CONTROL: report(), TREATMENT: report(seeds=[seed(1, 0.0, 0.2)])},
        last_quarter={CONTROL: report(), TREATMENT: report(seeds=[seed(1, 0.0, 0.2)])},
        widths={CONTROL: {"records": 80, "wrong": 0}, TREATMENT: {"records": 80, "wrong": wrong_widths}},
    )


def statuses(replicates: list[Replicate]) -> dict[str, str]:
    return {name: check["status"] for name, check in ladder_verdict(replicates)["checks"].items()}


def test_a_healthy_treatment_passes_every_gate_it_can_judge() -> None:
    got = statuses([replicate(), replicate(), replicate()])
    assert got == {
        "A1_usage": PASS,
        "A2_validity": PASS,
        "A3_dominance": INCONCLUSIVE,  # control never germinated conv_heavy: the precondition H_c ≥ 0.20 fails
        "A4_roi": PASS,
        "A5_stability": PASS,
        "A6_thrash": PASS,
        "A7_plumbing": PASS,
    }


def test_a1_needs_usage_in_two_replicates_and_events_equal_to_ops() -> None:
    low = replicate(treatment_half=[report(internal=0, acted=4) for _ in range(4)])
    assert statuses([replicate(), low, low])["A1_usage"] == FAIL  # pooled 0.17 but only 1 of 3 at 0.10
    assert statuses([replicate(), replicate(), low])["A1_usage"] == PASS
    lost = replicate(treatment_whole=report(germinations={"conv_ladder": 1}, events=2, applied=3))
    assert statuses([lost])["A1_usage"] == FAIL
    no_ladder = replicate(treatment_whole=report(germinations={"conv_light": 3}, events=0, applied=0))
    assert statuses([no_ladder])["A1_usage"] == FAIL


def test_a2_allows_one_point_more_invalid_actions() -> None:
    assert statuses([replicate(treatment_half=[report(internal=2, invalid=0, sampled=100)] * 4)])["A2_validity"] == PASS
    worse = [report(internal=2, invalid=2, sampled=100)] * 4
    assert statuses([replicate(treatment_half=worse)])["A2_validity"] == FAIL
    assert statuses([replicate(treatment_half=[report(internal=2, invalid=1, sampled=100)] * 4)])["A2_validity"] == PASS


def test_a3_passes_when_conv_heavy_falls_to_three_quarters_with_an_interval_below_zero() -> None:
    heavy = [report(germinations={"conv_heavy": 2, "conv_light": 1}) for _ in range(6)]
    fewer = [report(internal=2, germinations={"conv_heavy": 0, "conv_ladder": 3}) for _ in range(6)]
    same = [report(internal=2, germinations={"conv_heavy": 2, "conv_light": 1}) for _ in range(6)]
    assert statuses([replicate(control_half=heavy, treatment_half=fewer)])["A3_dominance"] == PASS
    assert statuses([replicate(control_half=heavy, treatment_half=same)])["A3_dominance"] == FAIL


def test_a4_judges_roi_and_the_paired_accuracy_difference() -> None:
    # ROI 4.8/1.1 = 4.36 < 0.9 × 5.0, while the accuracy difference (−0.2 pp) is fine.
    assert statuses([replicate(accuracies=(60.0, 59.8, 55.0), params=(1000, 1100))])["A4_roi"] == FAIL
    assert statuses([replicate(accuracies=(60.0, 59.8, 55.0), params=(1000, 900))])["A4_roi"] == PASS
    assert statuses([replicate(accuracies=(60.0, 59.0, 55.0), params=(1000, 100))])["A4_roi"] == FAIL  # −1 pp
    assert statuses([replicate(params=(0, 1000))])["A4_roi"] == INCONCLUSIVE


def test_a4_also_reports_the_accuracy_difference_clustered_by_replicate() -> None:
    """A difference that lives in one replicate's lines: the pair bootstrap sees 12 tight pairs, the replicate
    cluster bootstrap sees one replicate of three that moved, and says so with a wider interval."""
    replicates = [replicate(accuracies=(60.0, 60.0, 55.0)) for _ in range(2)] + [
        replicate(accuracies=(63.0, 60.0, 55.0))
    ]
    a4 = ladder_verdict(replicates)["checks"]["A4_roi"]
    pairs, clustered = a4["accuracy_difference"], a4["accuracy_difference_by_replicate"]
    assert pairs["mean"] == pytest.approx(-1.0) and clustered["estimate"] == pytest.approx(-1.0)
    assert clustered["replicates"] == 3 and clustered["n"] == 12 and clustered["method"] == "cluster_bootstrap"
    assert clustered["low"] < pairs["low"], "clustering by replicate must widen the interval here"


def test_a5_fails_a_treatment_entropy_collapse_unless_control_collapses_too() -> None:
    collapsed = [0.5, 0.2, 0.2, 0.2, 0.2, 0.2, 0.5]
    assert statuses([replicate(entropies=([0.5] * 7, collapsed))])["A5_stability"] == FAIL
    assert statuses([replicate(entropies=(collapsed, collapsed))])["A5_stability"] == PASS
    assert statuses([replicate(entropies=([0.5] * 7, [*collapsed[:5], 0.5, 0.5]))])["A5_stability"] == PASS
    assert statuses([replicate(rollbacks=(0, 2))])["A5_stability"] == FAIL  # 25 per 100 episodes vs 0 + 1


def test_a6_judges_the_ladder_seeds_and_is_inconclusive_without_level_changes() -> None:
    thrashing = report(germinations={"conv_ladder": 2}, events=5, applied=5, seeds=[seed(5, 1.0, 0.7, False)] * 2)
    assert statuses([replicate(treatment_whole=thrashing)])["A6_thrash"] == FAIL
    idle = report(germinations={"conv_ladder": 1}, seeds=[seed(0, 0.0, 0.0)])
    assert statuses([replicate(treatment_whole=idle)])["A6_thrash"] == INCONCLUSIVE


def test_a7_fails_on_a_single_observation_of_the_wrong_width() -> None:
    assert statuses([replicate(wrong_widths=1)])["A7_plumbing"] == FAIL


@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5)), min_size=1, max_size=10))
def test_usage_is_a_ratio_of_sums(rows: list[tuple[int, int]]) -> None:
    reports = [report(internal=min(i, a), acted=a) for i, a in rows]
    acted = sum(a for _, a in rows)
    expected = sum(min(i, a) for i, a in rows) / acted if acted else 0.0
    assert usage(reports) == pytest.approx(expected)


def test_heavy_share_and_entropy_runs() -> None:
    assert heavy_share([report(germinations={"conv_heavy": 1, "norm": 3})]) == 0.25
    assert heavy_share([report(germinations={})]) is None
    assert longest_run_below([0.1, 0.1, 0.5, 0.1, 0.1, 0.1, None, 0.1], 0.3) == 3
