"""Honest on-policy learning with a slow weight load, `--async`, evaluation versions and continuing a line.

Real services on a private nats-server; Tamiyo's weight loads are held back 1.5 s (ESPER_WEIGHT_LOAD_DELAY), so a
new version is published well before any Tamiyo serves it. Every claim is read back from the step records the runs
wrote to STEPS.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import leyline_schemas as L
from leyline_schemas import routes
from services.experiments.step_audit import (
    UNDECIDED,
    evaluation_version_check,
    latest_attempts,
    read_step_records,
    round_version_lags,
)
from services.experiments.training import train_from_args
from services.operator.cli import build_parser
from services.operator.embedded import free_port, start_nats
from services.policy.pointers import read_pointer
from services.runtime import jetstream
from services.runtime.bus import connect, request
from services.runtime.settings import RuntimeSettings
from tests.resilience.run_probes import digits_learning_spec
from tests.service_processes import start_service, stop_service, wait_services

pytestmark = pytest.mark.integration

LOAD_DELAY = 1.5
N_ENVS, LENGTH = 2, 4
SERVICE_ENV = {
    "kasmina": {},
    "tamiyo": {"ESPER_WEIGHT_LOAD_DELAY": str(LOAD_DELAY)},
    "tolaria": {"ESPER_MAX_ENVS": "4", "ESPER_LEASE_TTL": "10"},
    "simic": {"ESPER_POLICY_HIDDEN": "16", "ESPER_POLICY_HEAD_HIDDEN": "8", "ESPER_PPO_EPOCHS": "2"},
    "karn": {},
}


class Bus:
    def __init__(self, url: str, logs: Path) -> None:
        self.url, self.logs = url, logs

    def log_text(self, service: str) -> str:
        return "\n".join(path.read_text(errors="replace") for path in self.logs.glob(f"{service}-*.log"))


@pytest.fixture(scope="module")
def bus() -> Iterator[Bus]:
    state = Path(tempfile.mkdtemp(prefix="esper-version-honesty-"))
    server = start_nats(state / "nats", port=free_port())
    logs = state / "logs"
    logs.mkdir()
    common = {"ESPER_TORCH_THREADS": "1", "ESPER_STORE_PATH": str(state / "karn.sqlite")}
    processes = {name: start_service(name, server.url, logs, **common, **env) for name, env in SERVICE_ENV.items()}
    try:
        asyncio.run(wait_services(server.url, list(processes), timeout=180))
        yield Bus(server.url, logs)
    finally:
        for process in processes.values():
            stop_service(process)
        server.stop()
        shutil.rmtree(state, ignore_errors=True)


async def _pointer_at_least(nc, policy_id: str, version: int, timeout: float) -> None:  # type: ignore[no-untyped-def]
    policies = await jetstream.policies_bucket(nc.jetstream())
    deadline = time.monotonic() + timeout
    while True:
        pointer = await read_pointer(policies, policy_id)
        if pointer is not None and pointer.version >= version:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{policy_id} never reached v{version}")
        await asyncio.sleep(0.1)


def test_a_slow_weight_load_never_lets_an_older_version_act_in_a_strict_run_or_an_evaluation(bus: Bus) -> None:
    line = f"slow-{uuid.uuid4().hex[:6]}"
    spec = digits_learning_spec(
        f"slow-{uuid.uuid4().hex[:6]}", line, episodes=2 * N_ENVS, n_envs=N_ENVS, episode_length=LENGTH
    )
    evaluation = L.RunSpec(
        run_id=f"eval-{uuid.uuid4().hex[:6]}",
        task="digits",
        episodes=N_ENVS,
        n_envs=N_ENVS,
        episode_length=3,
        max_batches=2,
        arms=[L.ArmSpec(arm_id="eval", policy_id=f"{line}+greedy", from_version=2)],
    )

    async def scenario() -> tuple[list[L.StepRecord], list[L.StepRecord]]:
        nc = await connect(RuntimeSettings.from_env({"service": "test", "nats_url": bus.url}))
        try:
            await request(nc, routes.RUNS_START, spec, timeout=120.0)
            await _pointer_at_least(nc, line, 2, timeout=300)
            # At once, while Tamiyo still holds back the load of v2: the evaluation must wait for it.
            await request(nc, routes.RUNS_START, evaluation, timeout=120.0)
            learned = await read_step_records(nc, spec.run_id, expected=spec.episodes * LENGTH, timeout=60)
            evaluated = await read_step_records(nc, evaluation.run_id, expected=N_ENVS * 3, timeout=180)
            return learned, evaluated
        finally:
            await nc.close()

    learned, evaluated = asyncio.run(scenario())
    kept = latest_attempts(learned)
    assert len(kept) == spec.episodes * LENGTH
    for record in kept:
        round_index = record.episode // N_ENVS
        where = f"episode {record.episode} step {record.step}"
        assert record.directive.decision is not None and record.directive.outcome not in UNDECIDED, where
        assert record.policy_version == round_index, (
            f"{where} acted with v{record.policy_version} in round {round_index}"
        )
    assert [(row["lag_mean"], row["lag_max"], row["undecided_steps"]) for row in round_version_lags(spec, kept)] == [
        (0.0, 0, 0),
        (0.0, 0, 0),
    ]
    check = evaluation_version_check(evaluated, 2)
    assert check == {"evaluated_version": 2, "steps": N_ENVS * 3, "version_mismatches": 0, "undecided_steps": 0}
    tamiyo = bus.log_text("tamiyo")
    assert f"serving {line} v1" in tamiyo and f"serving {line} v2" in tamiyo
    assert "holding back" in tamiyo, "the weight loads were not slowed"


def test_async_runs_report_their_lag_and_a_resumed_line_goes_on_from_its_latest_version(
    bus: Bus, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["--task", "digits", "--envs", "2", "--episode-length", "3", "--max-batches", "2"]
    common += ["--eval-episodes", "1", "--timeout", "400", "--reward-mode", "shaped"]
    parser = build_parser()
    first = parser.parse_args(
        ["run", "--policy", "ppo", "--rounds", "2", "--async", "--out", str(tmp_path / "a"), *common]
    )
    assert train_from_args(first, bus.url) == 0
    printed = capsys.readouterr().out
    report = json.loads((tmp_path / "a" / "report.json").read_text())
    assert report["run_ahead"] is True and report["final_version"] == 2
    lags = [row["version_lag"] for row in report["rounds"]]
    assert [lag["steps"] for lag in lags] == [2 * 3, 2 * 3]
    assert lags[0]["lag_max"] == 0, "round 0 can only act with v0"
    assert max(lag["lag_max"] for lag in lags) >= 1, f"no step ran ahead of a {LOAD_DELAY}s weight load: {lags}"
    assert "version lag mean" in printed
    assert report["evaluation"]["main"]["version_check"]["evaluated_version"] == 2
    assert report["evaluation"]["main"]["version_check"]["version_mismatches"] == 0

    line = report["policy"]
    again = parser.parse_args(
        ["run", "--policy", "ppo", "--rounds", "1", "--resume-line", line, "--out", str(tmp_path / "b"), *common]
    )
    assert train_from_args(again, bus.url) == 0
    resumed = json.loads((tmp_path / "b" / "report.json").read_text())
    assert resumed["policy"] == line and resumed["from_version"] == 2
    assert resumed["final_version"] == 3, "the first new version is latest + 1"
    assert resumed["rounds"][0]["version_lag"]["lag_max"] == 0, "strict again: round 0 acted with v2"
    assert f"continues line {line} from v2 (checkpoint checkpoints/{report['run_id']}/main" in bus.log_text("simic")
    assert resumed["evaluation"]["main"]["version_check"] == {
        "evaluated_version": 3,
        "steps": 3,
        "version_mismatches": 0,
        "undecided_steps": 0,
    }
