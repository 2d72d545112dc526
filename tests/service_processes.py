"""Run Esper services as real child processes against a test bus (shared by integration tests)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from services.runtime.bus import connect
from services.runtime.discovery import live_services
from services.runtime.settings import RuntimeSettings

REPO = Path(__file__).resolve().parents[1]


def start_service(name: str, nats_url: str, log_dir: Path, **env: str) -> subprocess.Popen[bytes]:
    log = open(log_dir / f"{name}-{time.monotonic_ns()}.log", "wb")  # noqa: SIM115 - owned by the child
    return subprocess.Popen(
        [sys.executable, "-m", "services.operator.cli", "service", name],
        env={**os.environ, "ESPER_NATS_URL": nats_url, "PYTHONUNBUFFERED": "1", **env},
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=REPO,
        start_new_session=True,
    )


def stop_service(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    return int(process.returncode)


async def wait_services(nats_url: str, names: list[str], timeout: float = 90.0) -> list[dict[str, object]]:
    nc = await connect(RuntimeSettings.from_env({"service": "test", "nats_url": nats_url}))
    try:
        deadline = time.monotonic() + timeout
        while True:
            live = await live_services(nc, timeout=0.3)
            if all(any(s["service"] == n and s["ready"] for s in live) for n in names):
                return live
            if time.monotonic() > deadline:
                raise TimeoutError(f"services {names} not up; live: {[s['service'] for s in live]}")
            await asyncio.sleep(0.3)
    finally:
        await nc.close()


@contextmanager
def running_services(
    names: list[str], nats_url: str, log_dir: Path, **env: str
) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    processes = {name: start_service(name, nats_url, log_dir, **env) for name in names}
    try:
        asyncio.run(wait_services(nats_url, names))
        yield processes
    finally:
        for process in processes.values():
            stop_service(process)
