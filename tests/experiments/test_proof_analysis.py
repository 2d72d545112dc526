"""The proof verdict (proof-baselines §6, §8, B7, B13): fixture cohorts produce every verdict, and no blocked set
yields a product verdict."""

from __future__ import annotations

import dataclasses
import random

import pytest

from services.experiments.proof_analysis import (
    COHORTS,
    FIXED_SCHEDULE,
    HEURISTIC,
    OFF_SWITCH,
    RANDOM,
    STATIC_FINAL,
    STATIC_INITIAL,
    TREATMENT,
    EpochPoint,
    PairRow,
    judge,
)
from services.tamiyo.schedules import SCHEDULES

EPOCHS = 20
SCHEDULE_OPS = {s.epoch: s.op.name for s in next(iter(SCHEDULES.values())).steps}


def _row(cohort: str, replicate: int, env: int, accuracy: float, flops_per_epoch: int, **extra: object) -> PairRow:
    rng = random.Random(hash((cohort, replicate, env)) & 0xFFFF)
    base = 50.0 + rng.uniform(-0.2, 0.2) if cohort not in (OFF_SWITCH, STATIC_INITIAL) else 50.0
    curve = tuple(
        EpochPoint(
            epoch=e,
            accuracy=base + (accuracy - base) * e / EPOCHS,
            loss=2.0 - e / EPOCHS,
            train_flops=flops_per_epoch,
            params_in_forward=400 if cohort != STATIC_FINAL else 600,
            order_hash=f"h{replicate}-{env}-{e}",
            op=SCHEDULE_OPS.get(e, "WAIT") if cohort == FIXED_SCHEDULE else "WAIT",
            outcome="applied" if cohort == FIXED_SCHEDULE and e in SCHEDULE_OPS else "waited",
        )
        for e in range(1, EPOCHS + 1)
    )
    fields = {
        "cohort": cohort,
        "replicate": replicate,
        "env": env,
        "final_accuracy": accuracy,
        "seed_params_added": 200 if cohort in (TREATMENT, STATIC_FINAL, FIXED_SCHEDULE) else 0,
        "committed_params": 600 if cohort in (TREATMENT, STATIC_FINAL) else 400,
        "parameter_epochs": 400 * EPOCHS,
        "train_flops": flops_per_epoch * EPOCHS,
        "rollbacks": 0,
        "germinated": 1 if cohort in (TREATMENT, FIXED_SCHEDULE, RANDOM, HEURISTIC) else 0,
        "fossilized": 1 if cohort in (TREATMENT, FIXED_SCHEDULE) else 0,
        "pruned": 0,
        "topology_hash": "T" if cohort == TREATMENT else "",
        "curve": curve,
        "replayed_hash": "T" if cohort == STATIC_FINAL else "",
    }
    fields.update(extra)
    return PairRow(**fields)  # type: ignore[arg-type]


def _rows(
    replicates: int = 5, pairs: int = 4, gains: dict[str, float] | None = None, treatment_flops: int = 100
) -> list[PairRow]:
    gain = {
        TREATMENT: 10.0,
        OFF_SWITCH: 0.0,
        STATIC_INITIAL: 0.0,
        STATIC_FINAL: 9.0,
        FIXED_SCHEDULE: 4.0,
        RANDOM: 1.0,
        HEURISTIC: 5.0,
        **(gains or {}),
    }
    rows = []
    for r in range(replicates):
        for i in range(pairs):
            noise = random.Random(r * 100 + i)
            for cohort in COHORTS:
                jitter = 0.0 if cohort in (OFF_SWITCH, STATIC_INITIAL) else noise.uniform(-0.5, 0.5)
                flops = treatment_flops if cohort == TREATMENT else 150
                rows.append(_row(cohort, r, i, 60.0 + gain[cohort] + jitter, flops))
    return rows


def _verdict(rows: list[PairRow], replicates: int = 5, pairs: int = 4) -> str:
    return judge(rows, COHORTS, replicates, [(r, i) for r in range(replicates) for i in range(pairs)]).verdict


def test_a_clean_winning_set_continues() -> None:
    judgement = judge(_rows(), COHORTS, 5, [(r, i) for r in range(5) for i in range(4)])
    assert all(c["passed"] for c in judgement.checks), judgement.checks
    assert {k: v["status"] for k, v in judgement.primary.items()} == {
        "P1": "pass",
        "P2": "pass",
        "P3": "pass",
        "P4": "pass",
    }
    assert judgement.verdict == "CONTINUE"
    assert judgement.primary["P1"]["level"] == 0.9875


def test_growth_that_costs_more_than_static_final_revises_the_algorithm() -> None:
    assert _verdict(_rows(treatment_flops=400)) == "REVISE_ALGORITHM"


def test_growth_worse_than_the_host_alone_stops_the_theory() -> None:
    assert _verdict(_rows(gains={TREATMENT: -5.0})) == "STOP_THEORY"


def test_no_clear_gain_is_inconclusive() -> None:
    rows = _rows(gains={TREATMENT: 0.0})
    assert _verdict(rows) == "INCONCLUSIVE"


def test_a_bigger_model_that_does_not_help_means_no_headroom() -> None:
    assert _verdict(_rows(gains={STATIC_FINAL: 0.0})) == "NO_HEADROOM"


def test_fewer_than_five_replicates_is_a_rehearsal() -> None:
    assert _verdict(_rows(replicates=2), replicates=2) == "REHEARSAL"


def test_a_missing_episode_blocks_instrumentation() -> None:
    rows = [r for r in _rows() if not (r.cohort == RANDOM and r.pair == (2, 1))]
    assert _verdict(rows) == "BLOCKED_INSTRUMENTATION"


def test_a_data_order_mismatch_blocks_instrumentation() -> None:
    rows = _rows()
    index = next(i for i, r in enumerate(rows) if r.cohort == HEURISTIC)
    bad = dataclasses.replace(rows[index].curve[3], order_hash="other")
    rows[index] = dataclasses.replace(rows[index], curve=(*rows[index].curve[:3], bad, *rows[index].curve[4:]))
    assert _verdict(rows) == "BLOCKED_INSTRUMENTATION"


@pytest.mark.parametrize("breach", ["off_switch_differs", "static_mutated", "replay_mismatch", "schedule_trace"])
def test_a_dishonest_control_blocks_math(breach: str) -> None:
    rows = _rows()
    cohort = {
        "off_switch_differs": OFF_SWITCH,
        "static_mutated": STATIC_INITIAL,
        "replay_mismatch": STATIC_FINAL,
        "schedule_trace": FIXED_SCHEDULE,
    }[breach]
    index = next(i for i, r in enumerate(rows) if r.cohort == cohort)
    row = rows[index]
    if breach == "off_switch_differs":
        row = dataclasses.replace(row, curve=(dataclasses.replace(row.curve[0], loss=9.0), *row.curve[1:]))
    elif breach == "static_mutated":
        row = dataclasses.replace(row, germinated=1)
    elif breach == "replay_mismatch":
        row = dataclasses.replace(row, replayed_hash="other")
    else:
        row = dataclasses.replace(row, curve=tuple(dataclasses.replace(p, outcome="waited") for p in row.curve))
    rows[index] = row
    assert _verdict(rows) == "BLOCKED_MATH"


def test_rollbacks_in_more_than_a_tenth_of_pairs_block_mechanics() -> None:
    rows = [dataclasses.replace(r, rollbacks=1) if r.cohort == RANDOM and r.env < 2 else r for r in _rows()]
    assert _verdict(rows) == "BLOCKED_MECHANICS"


def test_the_report_lists_every_cohort_and_comparison_and_writes_its_plots(tmp_path: object) -> None:
    from pathlib import Path

    from services.experiments.proof_report import write_report

    out = Path(str(tmp_path))
    rows = _rows(replicates=2, pairs=2)
    judgement = judge(rows, COHORTS, 2, [(r, i) for r in range(2) for i in range(2)])
    settings = {
        "task": "mnist1d",
        "replicates": 2,
        "eval_episodes": 2,
        "episodes": 4,
        "envs": 2,
        "reward_mode": "simplified",
    }
    result = {"settings": settings, "rows": rows, "judgement": judgement, "replicates": [], "wall_seconds": 1.0}
    info = {
        "command": "esper experiment proof --seeds 2",
        "python": "3.11",
        "torch": "2",
        "esper_commit": "x",
        "machine": "m",
        "date_utc": "d",
    }
    verdict = write_report(result, COHORTS, out, info)
    report = (out / "report.md").read_text()
    assert verdict["verdict"] == "REHEARSAL" and report.startswith("# Proof of growth on mnist1d: REHEARSAL")
    assert all(f"| {cohort} | 4 |" in report for cohort in COHORTS)
    assert all(f"| {key} |" in report for key in ("P1", "P2", "P3", "P4"))
    assert all((out / name).stat().st_size > 0 for name in ("curves_flops.png", "params.png", "verdict.json"))
    assert "esper experiment proof --seeds 2" in report


def test_a_treatment_step_decided_by_another_version_blocks_instrumentation() -> None:
    rows = _rows()
    index = next(i for i, r in enumerate(rows) if r.cohort == TREATMENT)
    rows[index] = dataclasses.replace(rows[index], version_mismatches=2)
    assert _verdict(rows) == "BLOCKED_INSTRUMENTATION"
