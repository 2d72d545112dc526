"""`esper run --policy ppo`: a fresh line trained for R rounds on the embedded bus, then evaluated."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.esper_cli import EPISODE_FIELDS, run_esper

pytestmark = pytest.mark.integration


def test_ppo_run_trains_every_round_and_evaluates_against_the_baselines(tmp_path: Path) -> None:
    out = tmp_path / "ppo"
    result, report = run_esper(
        [
            "run",
            "--policy",
            "ppo",
            "--reward-mode",
            "simplified",
            "--task",
            "digits",
            "--rounds",
            "2",
            "--envs",
            "2",
            "--episode-length",
            "10",
            "--eval-episodes",
            "2",
            "--max-batches",
            "6",
            "--timeout",
            "500",
        ],
        out,
        extra_env={"ESPER_POLICY_HIDDEN": "64"},
        timeout=700,
    )
    assert report["state"] == "completed" and report["policy"].startswith("ppo-simplified-")
    assert report["final_version"] == 2, "one published version per round after version 0"
    assert [r["round"] for r in report["rounds"]] == [0, 1]
    assert len(report["episodes"]) == 4 and all(set(e) >= EPISODE_FIELDS for e in report["episodes"])
    assert all(50.0 < e["final_accuracy"] <= 100.0 for e in report["episodes"])
    assert set(report["evaluation"]) == {"main", "heuristic", "random"}
    for contender in report["evaluation"].values():
        assert contender["episodes"] == 2
        low, high = contender["episode_return"]["low"], contender["episode_return"]["high"]
        assert low <= contender["episode_return"]["mean"] <= high
    assert "round 1: mean return" in result.stdout
