"""The first real end-to-end run: five services as separate processes on a real nats-server, digits, heuristic."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.esper_cli import EPISODE_FIELDS, run_esper

pytestmark = pytest.mark.integration


def test_two_episode_digits_run_on_the_embedded_bus(tmp_path: Path) -> None:
    out = tmp_path / "report"
    _, report = run_esper(
        [
            "run",
            "--task",
            "digits",
            "--episodes",
            "2",
            "--envs",
            "2",
            "--episode-length",
            "16",
            "--no-progress",
            "--timeout",
            "400",
        ],
        out,
    )
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
