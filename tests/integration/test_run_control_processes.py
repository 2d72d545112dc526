"""Run control on real processes (issue 15, item 1): `esper runs stop` ends a run within an epoch and releases its
leases, `esper runs resume` finishes it with no step lost, a client that is killed or times out leaves no run
running, and `esper runs list/show` report it all."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import leyline_schemas as L
from leyline_schemas import routes
from services.operator.embedded import EmbeddedNats
from services.runtime import jetstream
from services.runtime.bus import connect, request
from services.runtime.kv import bucket_keys
from services.runtime.settings import RuntimeSettings
from services.tolaria.leases import read_status
from tests.resilience.run_probes import audit_attempts, env_leases, step_records, steps_published
from tests.service_processes import REPO, running_services

pytestmark = pytest.mark.integration

LENGTH = 25


def esper(url: str, *argv: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.operator.cli", *argv],
        env={**os.environ, "ESPER_NATS_URL": url, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )


async def _session(url: str):  # type: ignore[no-untyped-def]
    nc = await connect(RuntimeSettings.from_env({"service": "test", "nats_url": url}))
    return nc, nc.jetstream()


async def _wait_state(js, run_id: str, state: L.RunState, timeout: float) -> L.RunStatus:  # type: ignore[no-untyped-def]
    kv = await jetstream.runs_bucket(js)
    deadline = time.monotonic() + timeout
    while (status := await read_status(kv, run_id)) is None or status.state is not state:
        assert time.monotonic() < deadline, f"{run_id} is {status}, not {state}"
        await asyncio.sleep(0.25)
    return status


async def _steps_seen(js, run_id: str, count: int, timeout: float = 120) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while await steps_published(js, run_id) < count:
        assert time.monotonic() < deadline, f"fewer than {count} steps of {run_id}"
        await asyncio.sleep(0.1)


def test_stop_mid_episode_releases_every_lease_and_resume_finishes_with_no_step_lost(
    fresh_nats: EmbeddedNats, tmp_path: Path
) -> None:
    url = fresh_nats.url
    spec = L.RunSpec(
        run_id=f"stop-{time.time_ns()}",
        task="digits",
        episodes=8,
        n_envs=2,
        episode_length=LENGTH,
        max_batches=16,
        seed=5,
        created_at=time.time(),
    )
    with running_services(["kasmina", "tamiyo", "tolaria"], url, tmp_path, ESPER_TORCH_THREADS="1"):

        async def until_stopped() -> int:
            nc, js = await _session(url)
            try:
                await request(nc, routes.RUNS_START, spec, timeout=60)
                await _steps_seen(js, spec.run_id, 6)
                # What `esper runs stop RUN --reason "operator test"` sends (sent from here, so it arrives while
                # the first episodes are still in progress; the CLI's own start-up takes seconds).
                stop = L.RunStopRequest(run_id=spec.run_id, reason="operator test")
                status = await request(nc, routes.RUNS_STOP, stop, timeout=10)
                assert status.state is L.RunState.STOPPED, status
                return await steps_published(js, spec.run_id)
            finally:
                await nc.close()

        asyncio.run(until_stopped())
        # The CLI answers the same for a run already stopped: it shows the state and the reason.
        stopped = esper(url, "runs", "stop", spec.run_id, "--reason", "a second stop")
        assert stopped.returncode == 0, stopped.stderr
        assert f"{spec.run_id}: stopped (operator test)" in stopped.stdout

        async def after_stop() -> tuple[int, int, dict[int, L.EnvLease]]:
            nc, js = await _session(url)
            try:
                await asyncio.sleep(3.0)  # the workers notice at the next epoch and let go
                settled = await steps_published(js, spec.run_id)
                await asyncio.sleep(2.0)
                later = await steps_published(js, spec.run_id)
                return settled, later, await env_leases(js, spec)
            finally:
                await nc.close()

        settled, later, held = asyncio.run(after_stop())
        assert later == settled, "steps went on after the stop"
        assert settled < spec.episodes * LENGTH, "the run finished before the stop reached it"
        assert all(lease.released for lease in held.values()), held
        listed = esper(url, "runs", "list", "--json")
        (row,) = [r for r in json.loads(listed.stdout) if r["run_id"] == spec.run_id]
        assert (row["state"], row["message"], row["followed_by"]) == ("stopped", "operator test", None)

        while_stopped = esper(url, "runs", "show", spec.run_id)  # names each cut env's host checkpoint
        assert while_stopped.returncode == 0, while_stopped.stderr
        resumed = esper(url, "runs", "resume", spec.run_id)
        assert resumed.returncode == 0 and f"{spec.run_id}: running" in resumed.stdout, resumed.stderr

        async def to_the_end() -> list[L.StepRecord]:
            nc, js = await _session(url)
            try:
                await _wait_state(js, spec.run_id, L.RunState.COMPLETED, timeout=240)
                return await step_records(js, spec.run_id)
            finally:
                await nc.close()

        records = asyncio.run(to_the_end())
        again = esper(url, "runs", "resume", spec.run_id)
        assert again.returncode == 1 and "only a stopped or failed run resumes" in again.stderr
        shown = esper(url, "runs", "show", spec.run_id)
        assert shown.returncode == 0 and "completed" in shown.stdout and "8/8" in shown.stdout
        missing = esper(url, "runs", "show", "no-such-run")
        assert missing.returncode == 1 and "no run 'no-such-run'" in missing.stderr
    audit = audit_attempts(records, LENGTH)
    assert audit.kept == spec.episodes * LENGTH and not audit.problems, audit
    assert audit.restarted, "the episodes cut by the stop run again as their next attempt"
    # ... from the host checkpoint of the last epoch they stored: a stop costs no epoch.
    assert audit.redone and set(audit.redone.values()) == {0}, audit.redone
    for (env, episode, attempt), _ in audit.redone.items():
        start = next(r.resumed_from for r in records if (r.env_id, r.episode, r.attempt) == (env, episode, attempt))
        if start:
            assert f"host checkpoint of episode {episode} epoch {start}" in while_stopped.stdout, while_stopped.stdout
    assert "host checkpoint" not in shown.stdout, "a completed run kept its host checkpoints"


def test_a_killed_client_and_a_timed_out_client_leave_no_run_running(fresh_nats: EmbeddedNats, tmp_path: Path) -> None:
    url = fresh_nats.url
    run_argv = [
        "run",
        "--nats",
        url,
        "--task",
        "digits",
        "--episodes",
        "40",
        "--envs",
        "1",
        "--episode-length",
        str(LENGTH),
        "--max-batches",
        "4",
        "--no-progress",
    ]
    # `esper run` waits for all five services before it submits.
    five = ["kasmina", "tamiyo", "tolaria", "simic", "karn"]
    store = str(tmp_path / "karn.sqlite")
    with running_services(five, url, tmp_path, ESPER_TORCH_THREADS="1", ESPER_STORE_PATH=store):
        timed_out = esper(url, *run_argv, "--timeout", "4", "--out", str(tmp_path / "timed-out"))
        assert timed_out.returncode == 1
        report = json.loads((tmp_path / "timed-out" / "report.json").read_text())
        assert "stopped: its client gave up after --timeout 4 s" in timed_out.stderr

        client = subprocess.Popen(
            [sys.executable, "-m", "services.operator.cli", *run_argv, "--out", str(tmp_path / "killed")],
            env={**os.environ, "ESPER_ATTACH_TTL": "2"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=REPO,
        )

        async def scenario() -> tuple[L.RunStatus, L.RunStatus]:
            nc, js = await _session(url)
            try:
                first = await _wait_state(js, report["run_id"], L.RunState.STOPPED, timeout=10)
                kv = await jetstream.runs_bucket(js)
                deadline = time.monotonic() + 120
                while True:  # the killed client's run: the newest one that is not the timed-out one
                    keys = [k for k in await bucket_keys(kv) if k.startswith("run.") and report["run_id"] not in k]
                    if keys:
                        break
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.2)
                run_id = keys[0].removeprefix("run.")
                await _steps_seen(js, run_id, 3)
                client.send_signal(signal.SIGKILL)
                client.wait(timeout=10)
                # Lapses after the 2 s TTL, then Tolaria's 10 s grace.
                return first, await _wait_state(js, run_id, L.RunState.STOPPED, timeout=60)
            finally:
                await nc.close()

        first, killed = asyncio.run(scenario())
    assert first.message == "its client gave up after --timeout 4 s"
    assert killed.message.startswith("its client cli-") and "went away" in killed.message, killed.message
