"""`esper up` starts the bus and five services, `esper status --json` lists them, `esper down` stops them."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tests.integration.esper_cli import esper

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def test_up_status_down(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "ESPER_NATS_URL"}
    state = tmp_path / "state"
    up = esper("up", "--state-dir", str(state), env=env)
    assert up.returncode == 0, up.stdout + up.stderr + (state / "esper.log").read_text()[-3000:]
    url = up.stdout.strip().splitlines()[-1]
    assert url.startswith("nats://127.0.0.1:")
    bus = json.loads((state / "bus.json").read_text())
    supervisor_pid = int(bus["pid"])
    try:
        status = esper("status", "--json", "--nats", url, env=env)
        assert status.returncode == 0, status.stderr
        data = json.loads(status.stdout)
        assert data["reachable"] and data["bus"] == url
        services = {s["service"]: s for s in data["services"]}
        assert set(services) == {"kasmina", "tamiyo", "simic", "tolaria", "karn"}
        for svc in services.values():
            assert svc["device"] == "cpu" and svc["version"] and svc["admin"].startswith("http://")
        assert "esper.v1.kasmina.step" in services["kasmina"]["endpoints"]
        # A second `up` finds the running stack instead of starting another.
        again = esper("up", "--state-dir", str(state), env=env)
        assert again.stdout.strip().splitlines()[-1] == url
    finally:
        down = esper("down", "--state-dir", str(state), env=env)
    assert down.returncode == 0 and "stopped" in down.stdout
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(supervisor_pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        pytest.fail("the supervisor is still alive after esper down")
    status = esper("status", "--json", "--nats", url, env=env, timeout=60)
    assert status.returncode == 1 and not json.loads(status.stdout)["reachable"]
    assert esper("down", "--state-dir", str(state), env=env).stdout.strip() == "esper: nothing was running"
