"""Karn as a real process on a real bus: durable consumers fill the store, garbage is counted and skipped,
the store rebuilt from the streams matches, and the `esper karn` commands export it."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from karn_fixtures import publish, put_run, script

import leyline_schemas as L
from services.karn import queries
from services.karn.rebuild import rebuild
from services.karn.store import RunStore
from services.operator.cli import main as esper
from services.runtime import jetstream
from services.runtime.bus import connect
from services.runtime.settings import RuntimeSettings
from tests.service_processes import running_services, wait_services

pytestmark = pytest.mark.integration


async def _publish_run_with_garbage(nats_url: str, run_id: str) -> None:
    nc = await connect(RuntimeSettings.from_env({"service": "test-karn", "nats_url": nats_url}))
    js = nc.jetstream()
    await jetstream.bootstrap(js)
    run = script(run_id, learn=True, policy_id=f"ppo-{run_id}")
    await put_run(js, run)
    half = len(run.items) // 2
    await publish(js, run.items[:half])
    await js.publish(L.subjects.telemetry_subject(run_id, "epoch_completed"), b"\x93not a telemetry event")
    await js.publish(L.subjects.steps_subject(run_id), L.encode(L.RunStopRequest(run_id=run_id)))  # wrong type
    await publish(js, run.items[half:])
    await nc.close()


def _wait_for_run(path: Path, run_id: str, timeout: float = 60.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        if path.exists():
            with RunStore.open(path) as store:
                try:
                    status = queries.run_status(store, run_id)
                except queries.UnknownRun:
                    status = {}
                if status.get("state") == "completed" and status.get("steps") == 48:
                    return status
        assert time.monotonic() < deadline, f"karn never stored all of {run_id}"
        time.sleep(0.3)


def _admin_metrics(nats_url: str) -> str:
    live = asyncio.run(wait_services(nats_url, ["karn"]))
    admin = next(s["admin"] for s in live if s["service"] == "karn")
    with urllib.request.urlopen(f"{admin}/metrics", timeout=5) as response:
        return response.read().decode()


def _derived(path: Path, run_id: str) -> tuple[object, ...]:
    with RunStore.open(path) as store:
        status = queries.run_status(store, run_id)
        return (
            {k: status[k] for k in ("state", "episodes_done", "steps", "committed_epochs", "best_accuracy")},
            queries.epochs(store, run_id),
            queries.seeds(store, run_id),
            queries.episodes(store, run_id),
            queries.analytics(store, run_id),
        )


def test_karn_stores_a_run_skips_garbage_and_rebuilds_the_same_store(nats_url: str, tmp_path: Path) -> None:
    run_id = f"run-svc-{uuid.uuid4().hex[:6]}"
    store_path = tmp_path / "karn.sqlite"
    env = {"ESPER_STORE_PATH": str(store_path), "ESPER_STORE_CONSUMER": f"karn-test-{uuid.uuid4().hex[:6]}"}
    with running_services(["karn"], nats_url, tmp_path, **env):
        asyncio.run(_publish_run_with_garbage(nats_url, run_id))
        status = _wait_for_run(store_path, run_id)
        metrics = _admin_metrics(nats_url)
    assert status["episodes_done"] == 4 and status["committed_epochs"] == 12
    assert 'esper_decode_failures_total{consumer="telemetry",service="karn"} 1.0' in metrics
    assert 'esper_decode_failures_total{consumer="steps",service="karn"} 1.0' in metrics
    with RunStore.open(store_path) as store:
        counters = store.counters()
    assert counters["undecodable.TELEMETRY"] >= 1 and counters["undecodable.STEPS"] >= 1

    rebuilt = tmp_path / "rebuilt.sqlite"
    report = asyncio.run(rebuild(nats_url, rebuilt))
    assert report.undecodable["TELEMETRY"] >= 1 and report.undecodable["STEPS"] >= 1
    assert _derived(rebuilt, run_id) == _derived(store_path, run_id)

    out = tmp_path / "export.jsonl"
    assert esper(["karn", "export", run_id, "--store", str(store_path), "--format", "jsonl", "--out", str(out)]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert records[0]["run_id"] == run_id and sum(r["record"] == "step" for r in records) == 48
    assert esper(["karn", "export", "no-such-run", "--store", str(store_path), "--out", str(out)]) == 2
