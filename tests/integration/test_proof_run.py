"""`esper experiment proof` end to end on its own embedded bus: every cohort played on every pair, and every
integrity check passing on the records the runs actually wrote."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.experiments.proof import COHORT_ORDER
from tests.integration.esper_cli import REPO

pytestmark = pytest.mark.integration


def test_a_proof_rehearsal_plays_every_cohort_and_passes_every_check(tmp_path: Path) -> None:
    out = tmp_path / "proof"
    env = {k: v for k, v in os.environ.items() if k != "ESPER_NATS_URL"}
    args = ["experiment", "proof", "--task", "digits_tiny", "--seeds", "1", "--episodes", "2", "--envs", "2"]
    args += ["--eval-episodes", "2", "--episode-length", "18", "--max-batches", "2", "--hidden", "16"]
    result = subprocess.run(
        [sys.executable, "-m", "services.operator.cli", *args, "--out", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    log = out / "services.log"
    assert result.returncode == 0, result.stderr + (log.read_text()[-4000:] if log.exists() else "")
    verdict = json.loads((out / "verdict.json").read_text())
    assert verdict["verdict"] == "REHEARSAL"
    failed = [c for c in verdict["checks"] if not c["passed"]]
    assert not failed, failed
    assert "the treatment decided by the version it evaluates" in {c["check"] for c in verdict["checks"]}
    assert all(p["version_mismatches"] == 0 for p in verdict["pairs"])
    pairs = verdict["pairs"]
    assert sorted({p["cohort"] for p in pairs}) == sorted(COHORT_ORDER)
    assert all(sum(1 for p in pairs if p["cohort"] == c) == 2 for c in COHORT_ORDER)
    curves = verdict["curves"]
    for env_id in (0, 1):
        off, still = curves[f"off-switch/0/{env_id}"], curves[f"static-initial/0/{env_id}"]
        assert len(off) == 18 and [p["loss"] for p in off] == [p["loss"] for p in still]
        assert all(p["train_flops"] > 0 for p in off)
    for row in (p for p in pairs if p["cohort"] == "static-final"):
        source = next(p for p in pairs if p["cohort"] == "treatment" and p["env"] == row["env"])
        assert "no_growth" in row["flags"] or row["replayed_hash"] == source["topology_hash"]
    report = (out / "report.md").read_text()
    assert "## Cohorts" in report and (out / "curves_flops.png").exists() and (out / "params.png").exists()
    assert "static-initial" in result.stdout and "verdict REHEARSAL" in result.stdout
