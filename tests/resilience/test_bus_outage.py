"""Every service outlives a NATS outage longer than its request and poll timeouts: it reconnects by itself and is
ready again, unsupervised (a supervisor restarting crashed services would hide a service that gives up)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from services.operator.embedded import EmbeddedNats
from tests.service_processes import start_service, stop_service, wait_services

pytestmark = pytest.mark.integration

SERVICES = ["kasmina", "tamiyo", "simic", "karn", "tolaria"]
OUTAGE_SECONDS = 6.0  # longer than the JetStream API timeout (5 s) and every poll interval


def log_tail(log_dir: Path, name: str) -> str:
    logs = sorted(log_dir.glob(f"{name}-*.log"))
    return logs[-1].read_text(errors="replace")[-1500:] if logs else "(no log)"


def test_every_service_outlives_a_nats_outage(fresh_nats: EmbeddedNats, tmp_path: Path) -> None:
    processes = {name: start_service(name, fresh_nats.url, tmp_path, ESPER_TORCH_THREADS="1") for name in SERVICES}
    try:
        asyncio.run(wait_services(fresh_nats.url, SERVICES, timeout=120))
        fresh_nats.kill()
        time.sleep(OUTAGE_SECONDS)
        fresh_nats.restart()
        time.sleep(3.0)
        dead = [name for name, process in processes.items() if process.poll() is not None]
        assert not dead, "stopped on a bus outage:\n" + "\n".join(f"{n}:\n{log_tail(tmp_path, n)}" for n in dead)
        asyncio.run(wait_services(fresh_nats.url, SERVICES, timeout=60))
    finally:
        for process in processes.values():
            stop_service(process)
