"""`esper up --secure`: the embedded stack enforces the users of services/operator/security.py; the operator's
commands find their credentials beside `bus.json`, an anonymous client is refused."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def esper(*args: str, env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "services.operator.cli", *args]
    return subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.timeout(300)
def test_secure_up_status_down(tmp_path: Path) -> None:
    state = tmp_path / "state"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ESPER_")} | {"ESPER_STATE_DIR": str(state)}
    try:
        up = esper("up", "--secure", env=env)
        assert up.returncode == 0, up.stdout + up.stderr + (state / "esper.log").read_text()[-3000:]
        url = up.stdout.strip().splitlines()[-1]
        bus = json.loads((state / "bus.json").read_text())
        assert bus["secure"] is True and bus["url"] == url
        credentials = Path(bus["credentials"])
        assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
        login = dict(line.split("=", 1) for line in credentials.read_text().splitlines())
        assert login["ESPER_NATS_USER"] == "cli" and login["ESPER_NATS_URL"] == url
        for written in (state / "esper.log", state / "nats" / "nats-server.conf", state / "nats" / "auth.conf"):
            assert login["ESPER_NATS_PASSWORD"] not in written.read_text(), f"a password reached {written.name}"

        # The operator's commands read the credentials `esper up` left beside bus.json.
        status = esper("status", "--json", env=env)
        assert status.returncode == 0, status.stderr
        assert {s["service"] for s in json.loads(status.stdout)["services"]} == {
            "kasmina",
            "tamiyo",
            "simic",
            "tolaria",
            "karn",
        }
        # Karn's commands too (the TUI and the API attach the same way as `rebuild`).
        rebuilt = esper("karn", "rebuild", "--store", str(tmp_path / "karn.sqlite"), env=env, timeout=120)
        assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
        assert "run(s) in" in rebuilt.stdout
        anonymous = esper("status", "--json", "--nats", url, env=env, timeout=60)
        assert anonymous.returncode == 1
        assert "refused an anonymous client" in json.loads(anonymous.stdout)["error"]
    finally:
        down = esper("down", env=env)
    assert down.returncode == 0 and "stopped" in down.stdout
