"""compose.yaml run without Docker: each compose service's own command and environment as a local process (the
nats service with the local nats-server binary and the compose config), host names and container paths mapped to
this machine; their health checks pass and a short digits run started as compose documents it completes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from services.operator.embedded import free_port, nats_server_binary, wait_for_port
from tests.compose.compose_model import (
    COMPOSE,
    REPO,
    dockerfile_workdir,
    dot_env,
    environment,
    esper_services,
    load,
)

pytestmark = pytest.mark.integration

REPORT_DIR = "runs/compose-test"


@dataclass
class Mapping:
    """Where compose's names live on this machine: host names, container paths, ports and the services' logs."""

    root: Path
    binds: dict[str, Path]
    nats_port: int
    logs: Path
    ports: dict[str, int] = field(default_factory=dict)

    def path(self, container_path: str) -> str:
        for target, local in self.binds.items():
            if container_path == target or container_path.startswith(target + "/"):
                return str(local) + container_path[len(target) :]
        return str(self.root / container_path.lstrip("/"))

    def value(self, text: str) -> str:
        text = re.sub(r"nats://nats:4222", f"nats://127.0.0.1:{self.nats_port}", text)
        return self.path(text) if text.startswith("/") else text


#: The parsed compose document, where its names live here, and each service's process.
Stack = tuple[dict[str, Any], Mapping, dict[str, "subprocess.Popen[bytes]"]]


def start(argv: list[str], env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def base_environment() -> dict[str, str]:
    """This process's environment without any ESPER_* setting that would leak into the services."""
    return {k: v for k, v in os.environ.items() if not k.startswith("ESPER_")} | {"PYTHONUNBUFFERED": "1"}


def esper_argv(command: list[str], mapping: Mapping, port: int | None) -> list[str]:
    args = [mapping.value(arg) for arg in command[1:]]
    if "--host" in args:
        args[args.index("--host") + 1] = "127.0.0.1"
    if "--port" in args and port is not None:
        args[args.index("--port") + 1] = str(port)
    return [sys.executable, "-m", "services.operator.cli", *args]


def service_environment(service: dict[str, Any], mapping: Mapping, admin_port: int | None) -> dict[str, str]:
    env = {key: mapping.value(value) for key, value in environment(service).items()}
    if "ESPER_ADMIN_HOST" in env:
        env["ESPER_ADMIN_HOST"] = "127.0.0.1"
    if "ESPER_ADMIN_PORT" in env and admin_port is not None:
        env["ESPER_ADMIN_PORT"] = str(admin_port)
    return base_environment() | env


def healthy(service: dict[str, Any], container_port: str, port: int) -> bool:
    """The service's own compose health check, pointed at the port it listens on here."""
    test = service["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"], test
    code = test[3].replace(f":{container_port}/", f":{port}/")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=20).returncode == 0


@pytest.fixture(scope="module")
def compose_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("compose-root")
    logs = tmp_path_factory.mktemp("compose-logs")
    document = load(COMPOSE, dot_env())
    services = document["services"]
    nats = services["nats"]
    binds = {}
    for volume in nats["volumes"]:
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            binds[target] = REPO / source
    mapping = Mapping(root=root, binds=binds, nats_port=free_port(), logs=logs)
    (root / dockerfile_workdir().lstrip("/")).mkdir(parents=True, exist_ok=True)
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        http_port = free_port()
        argv = [nats_server_binary(), *(mapping.value(a) for a in nats["command"])]
        argv += ["-a", "127.0.0.1", "-p", str(mapping.nats_port), "-m", str(http_port)]
        nats_env = base_environment() | environment(nats)
        processes["nats"] = start(argv, nats_env, root, logs / "nats.log")
        wait_for_port("127.0.0.1", mapping.nats_port, 20, processes["nats"])
        health_url = next(a for a in nats["healthcheck"]["test"] if a.startswith("http://"))
        with urllib.request.urlopen(health_url.replace(":8222/", f":{http_port}/"), timeout=10) as answer:
            assert answer.status == 200

        workdir = root / dockerfile_workdir().lstrip("/")
        for name, service in esper_services(document, with_profiles=False).items():
            port = free_port()
            mapping.ports[name] = port
            processes[name] = start(
                esper_argv(service["command"], mapping, port),
                service_environment(service, mapping, port),
                workdir,
                logs / f"{name}.log",
            )
        deadline = time.monotonic() + 150
        waiting = set(mapping.ports)
        while waiting:
            for name in sorted(waiting):
                service = services[name]
                assert processes[name].poll() is None, (logs / f"{name}.log").read_text()[-3000:]
                container_port = environment(service).get("ESPER_ADMIN_PORT") or "8765"
                if healthy(service, container_port, mapping.ports[name]):
                    waiting.discard(name)
            assert time.monotonic() < deadline, f"not healthy: {sorted(waiting)}"
            time.sleep(0.5)
        yield document, mapping, processes
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def esper_in(service: dict[str, Any], mapping: Mapping, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """`docker compose run --rm SERVICE esper ARGS`: a one-off process with the service's environment."""
    return subprocess.run(
        esper_argv(["esper", *args], mapping, None),
        env=service_environment(service, mapping, 0),
        cwd=mapping.root / dockerfile_workdir().lstrip("/"),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.timeout(300)
def test_compose_services_run_a_digits_job(compose_stack: Stack) -> None:
    document, mapping, processes = compose_stack
    services = document["services"]

    status = esper_in(services["cli"], mapping, *services["cli"]["command"][1:], timeout=60)
    assert status.returncode == 0, status.stdout + status.stderr
    for name in ("kasmina", "tamiyo", "simic", "tolaria", "karn"):
        assert re.search(rf"^\s+{name}\s", status.stdout, re.M), status.stdout

    run_args = ["run", "--task", "digits", "--episodes", "1", "--envs", "1", "--episode-length", "3"]
    run_args += ["--max-batches", "4", "--no-progress", "--out", REPORT_DIR, "--timeout", "200"]
    run_args += ["--nats", "nats://nats:4222"]
    run = esper_in(services["tolaria"], mapping, *run_args, timeout=240)
    assert run.returncode == 0, run.stdout + run.stderr
    report = json.loads((mapping.root / dockerfile_workdir().lstrip("/") / REPORT_DIR / "report.json").read_text())
    assert report["state"] == "completed" and report["summary"]["episodes_completed"] == 1

    # Karn stored the run on the `runs` volume, where Karn's HTTP API reads it.
    api = f"http://127.0.0.1:{mapping.ports['karn-api']}/runs"
    deadline = time.monotonic() + 60
    while True:
        with urllib.request.urlopen(api, timeout=10) as answer:
            listed = json.dumps(json.loads(answer.read()))
        if report["run_id"] in listed or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert report["run_id"] in listed, listed[:2000]
    refused = [line for log in mapping.logs.glob("*.log") for line in log.read_text().splitlines()]
    refused = [line for line in refused if "permissions violation" in line.lower()]
    assert not refused, f"a service was refused by the compose permissions: {refused[:5]}"

    # Kasmina's rules and Karn's store need no torch: their containers should not carry its memory and threads.
    maps = Path("/proc") / str(processes["karn"].pid) / "maps"
    if maps.exists():
        for name in ("kasmina", "karn"):
            assert processes[name].poll() is None, f"{name} stopped during the job"
            mapped = (Path("/proc") / str(processes[name].pid) / "maps").read_text()
            assert "libtorch" not in mapped, f"{name} loaded torch"
