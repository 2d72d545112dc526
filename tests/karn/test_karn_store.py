"""The run store: idempotent ingestion, derived tables, the barrier across restarts, schema migration and refusal."""

from __future__ import annotations

import json
import math
import sqlite3
import uuid
from pathlib import Path

import msgspec
import pytest
from karn_fixtures import CONV_LIGHT_PARAMS, HOST_PARAMS, accuracy, script

import leyline_schemas as L
from services.karn import queries, schema
from services.karn.export import export_run
from services.karn.schema import SCHEMA_VERSION, StoreSchemaError
from services.karn.store import RunStore


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    opened = RunStore.open(tmp_path / "karn.sqlite")
    yield opened
    opened.close()


def test_ingest_is_idempotent_and_derives_runs_epochs_seeds_and_outcomes(store: RunStore) -> None:
    run = script("run-store", learn=True, policy_id="ppo-store")
    first = store.ingest(run.items)
    assert (first.events, first.steps, first.duplicates) == (69, 48, 0)
    again = store.ingest(run.items)
    assert (again.events, again.steps, again.duplicates) == (0, 0, len(run.items))

    status = queries.run_status(store, "run-store")
    assert (status["task"], status["n_envs"], status["episodes"], status["state"]) == ("digits", 4, 4, "completed")
    assert (status["episodes_done"], status["steps"], status["committed_epochs"]) == (4, 48, 12)
    assert status["best_accuracy"] == pytest.approx(max(accuracy(e, e, 12) for e in range(4)))

    # One committed epoch per epoch of the round, averaging the four envs.
    epochs = queries.epochs(store, "run-store")
    assert [e["epoch"] for e in epochs] == list(range(1, 13))
    assert all(e["n_reported"] == 4 and not e["partial"] for e in epochs)
    assert epochs[0]["val_accuracy"] == pytest.approx(sum(accuracy(e, e, 1) for e in range(4)) / 4)

    seeds = {s["seed_id"]: s for s in queries.seeds(store, "run-store")}
    fossil = seeds["r0c1-conv_light-e3"]
    assert (fossil["stage"], fossil["params"], fossil["blending_delta"], fossil["ended_epoch"]) == (
        "FOSSILIZED",
        CONV_LIGHT_PARAMS,
        0.75,
        9,
    )
    assert seeds["r0c0-attention-e3"]["prune_reason"] == "negative_contribution"
    assert seeds["r0c2-norm-e5"]["stage"] == "BLENDING"
    history = queries.seed_lifecycle(store, "run-store", 0, 0, "r0c1-conv_light-e3")
    assert history is not None
    kinds = [e["payload"]["kind"] for e in history["history"]]
    assert kinds == ["seed_germinated"] + ["seed_stage_changed"] * 4 + ["seed_fossilized"]

    outcomes = queries.episodes(store, "run-store")
    assert outcomes[0]["param_ratio"] == pytest.approx((HOST_PARAMS + CONV_LIGHT_PARAMS) / HOST_PARAMS)
    analytics = queries.analytics(store, "run-store")
    best = max(accuracy(e, e, 12) for e in range(4))
    assert analytics["pareto"]["hypervolume"] == pytest.approx(best * (2.0 - 1.0))
    assert [b["blueprint"] for b in analytics["blueprints"]] == ["attention", "conv_light", "norm"]

    (policy,) = queries.policies(store, "run-store")
    assert policy["policy_id"] == "ppo-store" and policy["steps"] == 48
    assert policy["versions"][0]["sha256"] == "ab" * 32 and policy["versions"][0]["approx_kl"] == pytest.approx(0.004)
    envs = queries.envs(store, "run-store")
    assert [e["epoch"] for e in envs] == [12] * 4
    assert envs[0]["slots"]["r0c1"] == "FOSSILIZED:conv_light"


def test_unknown_run_names_the_known_ones(store: RunStore) -> None:
    store.ingest(script("run-known", n_envs=1, episodes=1).items)
    with pytest.raises(queries.UnknownRun, match=r"unknown run .nope.*run-known"):
        queries.run_status(store, "nope")


def test_the_barrier_survives_a_restart_between_envs(tmp_path: Path) -> None:
    run = script("run-restart", n_envs=2, episodes=2, episode_length=3)
    epochs_env0 = [
        i
        for i in run.items
        if isinstance(i, L.TelemetryEvent) and i.env_id == 0 and isinstance(i.payload, L.EpochCompleted)
    ]
    rest = [i for i in run.items if i not in epochs_env0]
    path = tmp_path / "restart.sqlite"
    with RunStore.open(path) as first:
        first.ingest([run.items[0], *epochs_env0])  # RunStarted and env 0's three epochs, then Karn dies
        assert queries.epochs(first, "run-restart") == []
    with RunStore.open(path) as second:
        second.ingest(rest)
        epochs = queries.epochs(second, "run-restart")
    assert [(e["epoch"], e["n_reported"]) for e in epochs] == [(1, 2), (2, 2), (3, 2)]


def test_non_finite_numbers_survive_storage_and_leave_as_null(store: RunStore, tmp_path: Path) -> None:
    run = script("run-nan", n_envs=1, episodes=1, episode_length=2)
    items = []
    for item in run.items:
        if isinstance(item, L.TelemetryEvent) and isinstance(item.payload, L.EpochCompleted) and item.epoch == 2:
            item = msgspec.structs.replace(item, payload=msgspec.structs.replace(item.payload, val_loss=math.nan))
        items.append(item)
    store.ingest(items)
    (replayed,) = [
        i
        for i in queries.replay(store, "run-nan")
        if isinstance(i, L.TelemetryEvent) and isinstance(i.payload, L.EpochCompleted) and i.epoch == 2
    ]
    assert math.isnan(replayed.payload.val_loss)  # the store keeps what was sent
    env = queries.envs(store, "run-nan")[0]
    assert env["val_loss"] is None
    out = tmp_path / "run.jsonl"
    export_run(store, "run-nan", "jsonl", out)
    lines = [json.loads(line) for line in out.read_text().splitlines()]  # strict JSON: would fail on NaN
    assert lines[0]["record"] == "run" and lines[0]["store_schema_version"] == SCHEMA_VERSION
    nan_events = [e for e in lines if e["record"] == "event" and e["kind"] == "epoch_completed" and e["epoch"] == 2]
    assert nan_events[0]["payload"]["val_loss"] is None
    assert {line["record"] for line in lines} >= {"run", "event", "step", "env_epoch", "epoch", "episode", "analytics"}


def test_parquet_export_writes_one_table_per_kind(store: RunStore, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    store.ingest(script("run-pq").items)
    message = export_run(store, "run-pq", "parquet", tmp_path / "pq")
    assert "6 Parquet tables" in message
    events = pq.read_table(tmp_path / "pq" / "events.parquet").to_pylist()
    steps = pq.read_table(tmp_path / "pq" / "steps.parquet").to_pylist()
    assert len(events) == 67 and len(steps) == 48  # no policy events: this run does not learn
    assert {s["op"] for s in steps} >= {"WAIT", "GERMINATE", "FOSSILIZE", "PRUNE"}
    assert json.loads(events[0]["payload"])["kind"] == "run_started"
    assert pq.read_table(tmp_path / "pq" / "episodes.parquet").num_rows == 4


# -- schema ------------------------------------------------------------------------------------------------------


def test_an_older_store_is_migrated_with_its_data(tmp_path: Path) -> None:
    path = tmp_path / "v1.sqlite"
    conn = schema.connect(path, target=1)  # a store written by the Karn of schema v1
    conn.close()
    v1 = sqlite3.connect(path)
    v1.execute(
        "INSERT INTO runs (run_id, task, n_envs, episodes, state) VALUES ('old-run', 'digits', 1, 1, 'completed')"
    )
    v1.commit()
    assert v1.execute("PRAGMA user_version").fetchone()[0] == 1
    assert "policy_versions" not in {r[0] for r in v1.execute("SELECT name FROM sqlite_master")}
    v1.close()
    with RunStore.open(path) as store:
        assert queries.run_status(store, "old-run")["state"] == "completed"
        assert store.read("PRAGMA user_version")[0][0] == SCHEMA_VERSION
        store.ingest(script("new-run", learn=True, policy_id="ppo-new").items)
        assert queries.policies(store, "new-run")[0]["latest_version"] == 1
        assert store.read("SELECT COUNT(*) FROM steps WHERE attempt = 0")[0][0] == 48  # v3 column, default 0


def _unchanged(path: Path, before: bytes) -> bool:
    return path.read_bytes() == before and not path.with_name(path.name + "-wal").exists()


def test_a_newer_schema_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "future.sqlite"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA application_id = {schema.APPLICATION_ID}")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.execute("CREATE TABLE runs (run_id TEXT)")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    with pytest.raises(StoreSchemaError, match=f"schema v{SCHEMA_VERSION + 1}, newer.*rebuild"):
        RunStore.open(path)
    assert _unchanged(path, before)


def test_foreign_and_corrupt_files_are_refused_and_left_untouched(tmp_path: Path) -> None:
    foreign = tmp_path / "app.db"
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE users (name TEXT)")
    conn.commit()
    conn.close()
    before = foreign.read_bytes()
    with pytest.raises(StoreSchemaError, match="not a Karn run store"):
        RunStore.open(foreign)
    assert _unchanged(foreign, before)
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(uuid.uuid4().bytes * 300)
    before = garbage.read_bytes()
    with pytest.raises(StoreSchemaError, match="not an SQLite database"):
        RunStore.open(garbage)
    assert _unchanged(garbage, before)


def test_a_restarted_episode_replaces_the_earlier_attempts_steps(store: RunStore) -> None:
    run = script("run-attempts", n_envs=1, episodes=1)
    steps = [item for item in run.items if isinstance(item, L.StepRecord)]
    store.ingest(run.items)
    first = steps[0]
    retried = msgspec.structs.replace(
        first, attempt=1, report=msgspec.structs.replace(first.report, val_accuracy=12.5), worker_id="w2"
    )
    assert store.ingest([retried]).steps == 1
    late = msgspec.structs.replace(first, report=msgspec.structs.replace(first.report, val_accuracy=99.0))
    assert store.ingest([late]).duplicates == 1, "an earlier attempt arriving late does not win"
    rows = store.read(
        "SELECT attempt, val_accuracy FROM steps WHERE run_id = ? AND step = ?", ("run-attempts", first.step)
    )
    assert [tuple(r) for r in rows] == [(1, 12.5)]


def test_a_stopped_run_shows_stopped_with_its_reason_and_running_again_once_resumed(store: RunStore) -> None:
    run = script("run-stopped", n_envs=1, episodes=1)
    started = [
        item for item in run.items if not isinstance(item, L.StepRecord) and isinstance(item.payload, L.RunStarted)
    ]
    store.ingest(started)
    stopped = run.event(L.RunFinished(state="stopped", message="its client cli-x went away (no heartbeat for 40 s)"))
    store.ingest([stopped])
    status = queries.run_status(store, "run-stopped")
    assert (status["state"], status["message"]) == ("stopped", "its client cli-x went away (no heartbeat for 40 s)")
    store.ingest([run.event(L.RunResumed(previous_state="stopped", by="cli-y"))])
    status = queries.run_status(store, "run-stopped")
    assert (status["state"], status["message"]) == ("running", "resumed from stopped by cli-y")
