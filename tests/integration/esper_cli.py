"""Running `esper` as a user does (a subprocess on its own embedded bus), and what every report must hold."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]

# The per-episode fields the first issue asked report.json to carry.
EPISODE_FIELDS = frozenset(
    {
        "final_accuracy",
        "host_params",
        "seed_params_added",
        "seeds_germinated",
        "seeds_fossilized",
        "seeds_pruned",
        "episode_return",
        "round",
    }
)


def run_esper(
    args: list[str], out: Path, *, extra_env: dict[str, str] | None = None, timeout: float = 600
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """`esper ARGS --out OUT` with its own embedded bus; fails with the service log's tail if it did not succeed."""
    env = {k: v for k, v in os.environ.items() if k != "ESPER_NATS_URL"}
    env.update(extra_env or {})
    result = subprocess.run(
        [sys.executable, "-m", "services.operator.cli", *args, "--out", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    log = out / "services.log"
    assert result.returncode == 0, result.stdout + result.stderr + (log.read_text()[-4000:] if log.exists() else "")
    return result, json.loads((out / "report.json").read_text())


def esper(*args: str, env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """`esper ARGS` as a subprocess in the repository, with `env` as its whole environment; never raises on failure."""
    return subprocess.run(
        [sys.executable, "-m", "services.operator.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
