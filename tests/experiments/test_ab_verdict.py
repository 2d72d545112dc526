"""The reward-efficiency exam's pure parts: ROI, entropy trend, paired bootstrap verdicts and report writing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from services.experiments.exam import write_exam_outputs
from services.experiments.exam_verdict import (
    entropy_slope,
    exam_verdict,
    judge,
    mean_curves,
    mean_head_entropy,
    overall,
    roi,
)
from services.experiments.provenance import provenance


def _episode(env: int, accuracy: float, params: int = 0, fossilized: int = 0, pruned: int = 0) -> dict[str, Any]:
    return {
        "env": env,
        "final_accuracy": accuracy,
        "seed_params_added": params,
        "seeds_fossilized": fossilized,
        "seeds_pruned": pruned,
        "episode_return": 0.0,
    }


def _replicate(cohorts: dict[str, list[tuple[float, int]]]) -> dict[str, Any]:
    evaluation = {
        name: {"per_episode": [_episode(env, acc, params, fossilized=1) for env, (acc, params) in enumerate(rows)]}
        for name, rows in cohorts.items()
    }
    curve = [{"round": 0, "mean_final_accuracy": 50.0}, {"round": 1, "mean_final_accuracy": 60.0}]
    return {
        "evaluation": evaluation,
        "training": {name: {"curve": curve} for name in ("shaped", "simplified", "sparse")},
        "decisiveness": {"shaped": -0.01, "simplified": -0.02, "sparse": 0.0},
    }


def _clear_win(n: int = 6) -> dict[str, Any]:
    return _replicate(
        {
            "wait": [(60.0 + i, 0) for i in range(n)],
            "heuristic": [(70.0 + i, 4000) for i in range(n)],
            "random": [(50.0 + i, 3000) for i in range(n)],
            "shaped": [(75.0 + i, 8000) for i in range(n)],
            "simplified": [(85.0 + i + 0.5 * (i % 2), 1000) for i in range(n)],
            "sparse": [(65.0 + i, 2000) for i in range(n)],
        }
    )


def test_roi_is_gain_per_thousand_added_params_and_zero_without_growth() -> None:
    assert roi(80.0, 70.0, 2000) == pytest.approx(5.0)
    assert roi(60.0, 70.0, 1000) == pytest.approx(-10.0)
    assert roi(99.0, 70.0, 0) == 0.0


def test_entropy_slope_sign_and_mean_head_entropy() -> None:
    assert entropy_slope([1.0, 0.8, 0.6, 0.4]) == pytest.approx(-0.2)
    assert entropy_slope([0.5]) is None
    assert mean_head_entropy({"head_entropies": {"op": 1.0, "slot": 0.5}, "entropy": 9.0}) == pytest.approx(0.75)
    assert mean_head_entropy({"head_entropies": {}, "entropy": 0.3}) == pytest.approx(0.3)


def test_judge_pass_fail_and_inconclusive() -> None:
    assert judge([2.0, 3.0, 2.5, 3.5], [1.0, 1.0, 1.0, 1.0])["status"] == "pass"
    assert judge([0.0, 0.0, 0.5, 0.2], [1.0, 1.0, 1.0, 1.0])["status"] == "fail"
    assert judge([2.0, 0.0, 2.0, 0.0], [1.0, 1.0, 1.0, 1.0])["status"] == "inconclusive"
    single = judge([5.0], [1.0])  # one pair gives a zero-width interval: never a win
    assert single["status"] == "inconclusive" and single["n"] == 1


def test_clear_win_passes_every_criterion() -> None:
    verdict = exam_verdict([_clear_win()])
    assert verdict["overall"] == "PASS"
    assert {name: c["status"] for name, c in verdict["criteria"].items()} == {
        "simplified_beats_shaped_on_roi": "pass",
        "simplified_beats_control_on_final_accuracy": "pass",
        "sparse_beats_chance": "pass",
    }
    roi_interval = verdict["cohorts"]["simplified"]["roi"]
    assert roi_interval["low"] <= roi_interval["mean"] <= roi_interval["high"]
    assert verdict["cohorts"]["control"]["lifecycle"] == {"fossilized": 6, "pruned": 0, "ratio": None}


def test_noisy_differences_are_inconclusive_and_a_loss_fails() -> None:
    n = 6
    noisy = _clear_win(n)
    # SIMPLIFIED alternates above and below the heuristic: the paired interval straddles 0.
    noisy["evaluation"]["simplified"]["per_episode"] = [
        _episode(i, 70.0 + i + (5.0 if i % 2 else -5.0), 1000) for i in range(n)
    ]
    verdict = exam_verdict([noisy])
    assert verdict["criteria"]["simplified_beats_control_on_final_accuracy"]["status"] == "inconclusive"
    assert verdict["overall"] == "INCONCLUSIVE"

    losing = _clear_win(n)
    losing["evaluation"]["simplified"]["per_episode"] = [_episode(i, 40.0 + i, 1000) for i in range(n)]
    assert exam_verdict([losing])["overall"] == "FAIL"
    assert (
        overall(
            {
                "simplified_beats_shaped_on_roi": {"status": "pass"},
                "simplified_beats_control_on_final_accuracy": {"status": "pass"},
            }
        )
        == "PASS"
    )


def test_episodes_are_paired_across_replicates() -> None:
    verdict = exam_verdict([_clear_win(3), _clear_win(3)])
    assert verdict["cohorts"]["simplified"]["episodes"] == 6
    assert verdict["criteria"]["simplified_beats_shaped_on_roi"]["difference"]["n"] == 6


def test_report_writing(tmp_path: Path) -> None:
    replicates = [_clear_win()]
    result = {
        "experiment": "reward-efficiency",
        "settings": {
            "task": "digits",
            "seeds": 1,
            "episodes": 4,
            "envs": 2,
            "eval_episodes": 6,
            "episode_length": 10,
            "max_seeds": 2,
        },
        "verdict": exam_verdict(replicates),
        "curves": mean_curves(replicates),
        "provenance": provenance(["esper", "experiment", "reward-efficiency", "--seeds", "1"]),
    }
    write_exam_outputs(result, tmp_path)
    assert {p.name for p in tmp_path.iterdir()} >= {"verdict.json", "report.md", "curves.png", "roi.png"}
    report = (tmp_path / "report.md").read_text()
    assert "**Verdict: PASS**" in report
    assert "esper experiment reward-efficiency --seeds 1" in report
    assert "torch" in report and "esper commit" in report
    saved = json.loads((tmp_path / "verdict.json").read_text())
    assert saved["verdict"]["overall"] == "PASS"
