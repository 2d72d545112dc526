"""The first real end-to-end run: five services as separate processes on a real nats-server, digits, heuristic."""

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
}


def test_two_episode_digits_run_on_the_embedded_bus(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "ESPER_NATS_URL"}
    out = tmp_path / "report"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "services.cli",
            "run",
            "--task",
            "digits",
            "--episodes",
            "2",
            "--envs",
            "2",
            "--episode-length",
            "16",
            "--out",
            str(out),
            "--no-progress",
            "--timeout",
            "400",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr + (out / "services.log").read_text()[-4000:]
    report = json.loads((out / "report.json").read_text())
    assert report["task"] == "digits" and report["policy"] == "heuristic" and report["reward_mode"] == "simplified"
    assert report["state"] == "completed"
    episodes = report["episodes"]
    assert sorted(e["episode"] for e in episodes) == [0, 1]
    assert sorted(e["env"] for e in episodes) == [0, 1]
    for episode in episodes:
        assert set(episode) >= EPISODE_FIELDS
        # Real training: far above the 10% of chance on ten classes.
        assert 50.0 < episode["final_accuracy"] <= 100.0
        assert episode["host_params"] > 1000
        assert episode["length"] == 16
        # SIMPLIFIED pays 3·acc/100 at the terminal step, minus at most 0.01 per action: the return says so.
        assert episode["episode_return"] > 3 * episode["final_accuracy"] / 100 - 16 * 0.01 - 1.0
    log = (out / "services.log").read_text()
    for service in ("kasmina", "tamiyo", "simic", "tolaria", "karn"):
        assert f"[{service}" in log, f"no output from {service}"
    assert "EPISODE done" in log, "karn's live log shows no episode outcome"
