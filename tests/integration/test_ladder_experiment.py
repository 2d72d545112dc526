"""`esper experiment ladder` smoke (plans/kasmina2-phase0.md §12.3 item 4) on the embedded bus: two PPO lines, one
without conv_ladder, trained on paired seeds, evaluated beside `wait`, judged A1–A7 from a Karn store rebuilt from
the log. The full run is a command, not a test; this checks A1's event count, A2 and A7."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def test_the_ladder_experiment_writes_its_verdict(tmp_path: Path) -> None:
    out = tmp_path / "ladder"
    argv = ["--task", "digits_tiny", "--rounds", "2", "--envs", "2", "--seeds", "1", "--eval-episodes", "2"]
    argv += ["--episode-length", "8", "--max-batches", "2", "--hidden", "16", "--timeout", "300", "--out", str(out)]
    result = subprocess.run(
        [sys.executable, "-m", "services.operator.cli", "experiment", "ladder", *argv],
        cwd=REPO,
        env={**{k: v for k, v in os.environ.items() if k != "ESPER_NATS_URL"}, "ESPER_TORCH_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=480,
    )
    logs = (out / "services.log").read_text()[-3000:] if (out / "services.log").exists() else ""
    assert result.returncode == 0, result.stdout + result.stderr + logs
    verdict = json.loads((out / "ladder_verdict.json").read_text())
    checks = verdict["checks"]
    assert list(checks) == [
        "A1_usage",
        "A2_validity",
        "A3_dominance",
        "A4_roi",
        "A5_stability",
        "A6_thrash",
        "A7_plumbing",
    ]
    assert all(c["status"] in ("PASS", "FAIL", "INCONCLUSIVE") for c in checks.values())
    # Every applied level change was published as exactly one event, and every stored observation is 25 + 32·S.
    assert checks["A1_usage"]["level_events"] == checks["A1_usage"]["applied_internal_ops"]
    assert checks["A7_plumbing"]["status"] == "PASS", checks["A7_plumbing"]
    widths = checks["A7_plumbing"]["observation_widths"]
    assert widths["control"]["records"] == widths["treatment"]["records"] == 2 * 2 * 8
    assert set(checks["A2_validity"]["invalid_rate"]) == {"control", "treatment"}
    replicate = json.loads((out / "replicate-0.json").read_text())
    # The control arm may not germinate the ladder; both arms trained to version 2 from the same seed.
    assert "conv_ladder" not in replicate["ladder"]["control"]["germinations"]
    assert all(replicate["training"][arm]["final_version"] == 2 for arm in ("control", "treatment"))
    assert {e["env"] for e in replicate["evaluation"]["wait"]["per_episode"]} == {0, 1}
