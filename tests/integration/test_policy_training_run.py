"""`esper run --policy ppo`: a fresh line trained for R rounds on the embedded bus, then evaluated."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
EPISODE_FIELDS = {
    "final_accuracy",
    "host_params",
    "seed_params_added",
    "seeds_germinated",
    "seeds_fossilized",
    "seeds_pruned",
    "episode_return",
    "round",
}


def test_ppo_run_trains_every_round_and_evaluates_against_the_baselines(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "ESPER_NATS_URL"}
    env["ESPER_POLICY_HIDDEN"] = "64"
    out = tmp_path / "ppo"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "services.cli",
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
            "--out",
            str(out),
            "--timeout",
            "500",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=700,
    )
    assert result.returncode == 0, result.stdout + result.stderr + (out / "services.log").read_text()[-4000:]
    report = json.loads((out / "report.json").read_text())
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
