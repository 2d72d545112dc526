"""`esper experiment ab` end to end on the embedded bus: two reward-mode arms trained concurrently on paired seeds,
evaluated on the same held-out hosts, with verdict.json and curves.png written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def test_ab_experiment_writes_a_paired_verdict_and_curves(tmp_path: Path) -> None:
    out = tmp_path / "ab"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "services.operator.cli",
            "experiment",
            "ab",
            "--arms",
            "shaped,simplified",
            "--episodes",
            "4",
            "--envs",
            "2",
            "--episode-length",
            "5",
            "--max-batches",
            "2",
            "--hidden",
            "16",
            "--out",
            str(out),
            "--timeout",
            "300",
        ],
        cwd=REPO,
        env={**{k: v for k, v in os.environ.items() if k != "ESPER_NATS_URL"}, "ESPER_TORCH_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=420,
    )
    logs = (out / "services.log").read_text()[-3000:] if (out / "services.log").exists() else ""
    assert result.returncode == 0, result.stdout + result.stderr + logs
    report = json.loads((out / "verdict.json").read_text())
    assert report["arms"] == ["shaped", "simplified"]
    metrics = report["verdict"]["metrics"]
    for metric in ("final_accuracy", "seeds_fossilized", "episode_return"):
        for interval in metrics[metric]["per_arm"].values():
            assert interval["low"] <= interval["mean"] <= interval["high"] and interval["n"] == 2
        assert set(metrics[metric]["paired_differences"]) == {"simplified_minus_shaped"}
    assert report["verdict"]["decisions"]["simplified"]
    assert [len(report["curves"][arm]) for arm in report["arms"]] == [2, 2]
    replicate = json.loads((out / "replicate-0.json").read_text())
    runs = {arm: replicate["training"][arm] for arm in report["arms"]}
    # Each arm is its own learning line, trained round by round to version 2, from the same seed as the other.
    assert {r["policy_id"] for r in runs.values()} == {f"{report['experiment']}-{a}-s0" for a in report["arms"]}
    assert all(r["final_version"] == 2 and r["updates"] == 2 for r in runs.values())
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
