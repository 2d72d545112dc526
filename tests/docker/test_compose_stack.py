"""The real compose.yaml under a real Docker engine: up, status, a run, two workers, a killed service, Karn's API, down.

The tests share one compose project (a name of our own, so `down -v` touches nothing else) and run in file order,
each building on the stack the one before left. The images are the official ones where a registry answers, else
those deploy/docker/images.py builds here; only the env file points compose at them.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from services.operator.embedded import free_port
from tests.docker.docker_env import images_tool
from tests.scripts import REPO

pytestmark = [pytest.mark.docker, pytest.mark.integration, pytest.mark.timeout(900)]

SERVICES = ("kasmina", "tamiyo", "simic", "tolaria", "karn")
CONTAINERS = ("nats", *SERVICES, "karn-api")
_RUN_DONE = re.compile(r"^(run-\S+): (\d+)/(\d+) episodes", re.M)
_LEASED = re.compile(r"^(\S+)\s+\|.* leased (run-\S+) env (\d+)", re.M)


@dataclass
class ComposeProject:
    """One compose project of compose.yaml, under a name of its own, with its env file and host ports."""

    name: str
    env_file: Path
    api_port: int
    command: list[str]
    runs: dict[str, str] = field(default_factory=dict)

    def args(self, *args: str) -> list[str]:
        return [*self.command, "-p", self.name, "--env-file", str(self.env_file), "-f", str(REPO / "compose.yaml"),
                *args]

    def __call__(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(self.args(*args), capture_output=True, text=True, timeout=timeout, cwd=REPO)
        if check and result.returncode != 0:
            pytest.fail(f"docker compose {' '.join(args)} exited {result.returncode}:\n{result.stdout[-3000:]}\n"
                        f"{result.stderr[-3000:]}\n--- logs ---\n{self.logs()[-6000:]}", pytrace=False)
        return result

    def logs(self, *services: str, since: str | None = None) -> str:
        extra = ["--since", since] if since else []
        result = subprocess.run(self.args("logs", "--no-color", *extra, *services), capture_output=True, text=True,
                                timeout=120, cwd=REPO)
        return result.stdout + result.stderr

    def containers(self) -> list[dict[str, object]]:
        """`docker compose ps --all` rows (one JSON object per line in Compose v2)."""
        out = self("ps", "--all", "--format", "json").stdout
        rows = [json.loads(line) for line in out.splitlines() if line.strip().startswith("{")]
        if not rows and out.strip().startswith("["):
            rows = json.loads(out)
        return rows

    def esper(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """`esper ARGS` in a one-off operator container on the compose network."""
        return self("run", "--rm", "-T", "cli", "esper", *args, timeout=timeout)

    def run_args(self, episodes: int, envs: int, out: str) -> list[str]:
        return ["run", "--task", "digits", "--episodes", str(episodes), "--envs", str(envs), "--episode-length",
                "10", "--nats", "nats://nats:4222", "--no-progress", "--timeout", "600",
                "--out", f"/var/lib/esper/runs/{out}"]


def _finished_run(output: str, episodes: int) -> str:
    match = _RUN_DONE.search(output)
    assert match, f"no run summary in the output of esper run:\n{output[-3000:]}"
    assert (int(match.group(2)), int(match.group(3))) == (episodes, episodes), match.group(0)
    return match.group(1)


def _docker(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def stack(docker_images: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComposeProject]:
    tool = images_tool()
    passwords = subprocess.run([sys.executable, "-m", "services.operator.security", "compose-env"], cwd=REPO,
                               capture_output=True, text=True, check=True).stdout
    env_file = tmp_path_factory.mktemp("compose") / "compose.env"
    nats_port, api_port = free_port(), free_port()
    # Two envs per worker at most, so that a 4-env run needs both workers of `--scale tolaria=2`.
    settings = {**docker_images, "NATS_HOST_PORT": nats_port, "KARN_API_HOST_PORT": api_port, "TOLARIA_MAX_ENVS": 2}
    env_file.write_text(passwords + "".join(f"{key}={value}\n" for key, value in settings.items()))
    project = ComposeProject(f"esper-test-{uuid.uuid4().hex[:8]}", env_file, api_port, tool.compose_command())
    try:
        project("up", "-d", "--wait", "--wait-timeout", "300", timeout=420)
        yield project
    finally:
        project("down", "-v", "--remove-orphans", "--timeout", "20", check=False, timeout=300)


def test_every_container_is_healthy_and_status_lists_the_five_services_ready(stack: ComposeProject) -> None:
    rows = {str(row["Service"]): row for row in stack.containers()}
    assert set(rows) == set(CONTAINERS), sorted(rows)
    for name, row in rows.items():
        assert row["State"] == "running" and row["Health"] == "healthy", (name, row["State"], row["Health"])
    status = json.loads(stack.esper("status", "--json", "--wait", "2", timeout=180).stdout)
    assert status["reachable"] is True
    ready = {service["service"] for service in status["services"] if service["ready"]}
    assert ready == set(SERVICES), status["services"]


def test_a_two_episode_digits_run_completes(stack: ComposeProject) -> None:
    result = stack.esper(*stack.run_args(episodes=2, envs=1, out="two-episodes"))
    stack.runs["two-episodes"] = _finished_run(result.stdout, episodes=2)


def test_two_workers_drive_one_run_and_a_killed_service_is_brought_back(stack: ComposeProject) -> None:
    stack("up", "-d", "--wait", "--wait-timeout", "300", "--scale", "tolaria=2", timeout=420)
    workers = [str(row["Name"]) for row in stack.containers() if row["Service"] == "tolaria"]
    assert len(workers) == 2, workers
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 1))
    run = subprocess.Popen(stack.args("run", "--rm", "-T", "cli", "esper", *stack.run_args(4, 4, "two-workers")),
                           cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        leases: set[tuple[str, str, int]] = set()
        deadline = time.monotonic() + 300
        while len({(run_id, env) for _, run_id, env in leases}) < 4 or len({w for w, _, _ in leases}) < 2:
            assert run.poll() is None, f"the run ended before both workers leased its envs:\n{run.communicate()[0]}"
            assert time.monotonic() < deadline, f"leases seen: {sorted(leases)}"
            time.sleep(2)
            found = _LEASED.findall(stack.logs("tolaria", since=since))
            leases = {(worker, run_id, int(env)) for worker, run_id, env in found}
        assert len({run_id for _, run_id, _ in leases}) == 1, leases
        # Mid-run: crash Kasmina, the lifecycle authority every step goes through. The container's init forwards
        # SIGQUIT, whose default action ends the process at once (no shutdown), as a crash would. (A SIGKILL from
        # `docker kill` is an operator's stop, which Docker never restarts; init does not forward SIGABRT or
        # SIGSEGV.) The workers' step requests wait for Kasmina (up to the step deadline) while the restart policy
        # brings its container back.
        (kasmina,) = [str(row["ID"]) for row in stack.containers() if row["Service"] == "kasmina"]
        assert _docker("kill", "--signal", "SIGQUIT", kasmina).returncode == 0
        output, _ = run.communicate(timeout=700)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0, output[-4000:]
    stack.runs["two-workers"] = _finished_run(output, episodes=4)
    state = json.loads(_docker("inspect", "--format", "{{json .}}", kasmina).stdout)
    assert state["RestartCount"] >= 1, state["State"]
    deadline = time.monotonic() + 120
    while state["State"].get("Health", {}).get("Status") != "healthy":
        assert time.monotonic() < deadline, state["State"]
        time.sleep(2)
        state = json.loads(_docker("inspect", "--format", "{{json .}}", kasmina).stdout)
    assert state["State"]["Running"] is True


def test_karn_api_lists_the_runs_completed(stack: ComposeProject) -> None:
    assert set(stack.runs) == {"two-episodes", "two-workers"}, "the runs before this one did not complete"
    url = f"http://127.0.0.1:{stack.api_port}/runs"
    deadline = time.monotonic() + 60
    while True:
        runs = {run["run_id"]: run for run in httpx.get(url, timeout=10).json()}
        states = {name: runs.get(run_id, {}).get("state") for name, run_id in stack.runs.items()}
        if all(state == "completed" for state in states.values()) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert states == {"two-episodes": "completed", "two-workers": "completed"}
    assert runs[stack.runs["two-episodes"]]["episodes_done"] == 2
    assert runs[stack.runs["two-workers"]]["episodes_done"] == 4


def test_down_leaves_no_container_network_or_volume(stack: ComposeProject) -> None:
    stack("down", "-v", "--remove-orphans", "--timeout", "20", timeout=300)
    label = f"label=com.docker.compose.project={stack.name}"
    assert _docker("ps", "--all", "--quiet", "--filter", label).stdout.split() == []
    assert _docker("network", "ls", "--quiet", "--filter", label).stdout.split() == []
    assert _docker("volume", "ls", "--quiet", "--filter", label).stdout.split() == []
