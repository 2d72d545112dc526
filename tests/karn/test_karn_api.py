"""Karn's HTTP API over a store: runs, envs, seeds, policies, outcomes, analytics, events, SSE, 404s, strict JSON."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator

import msgspec
import pytest
from fastapi.testclient import TestClient
from karn_fixtures import accuracy, script

import leyline_schemas as L
from services.karn.api import create_app
from services.karn.store import RunStore


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    path = tmp_path_factory.mktemp("api") / "karn.sqlite"
    run = script("run-api", learn=True, policy_id="ppo-api")
    items = []
    for item in run.items:  # a diverged epoch: NaN loss must leave the API as null
        if isinstance(item, L.TelemetryEvent) and isinstance(item.payload, L.EpochCompleted) and item.env_id == 3:
            item = msgspec.structs.replace(item, payload=msgspec.structs.replace(item.payload, val_loss=math.inf))
        items.append(item)
    with RunStore.open(path) as store:
        store.ingest(items)
    with TestClient(create_app(path, poll_seconds=0.05)) as test_client:
        yield test_client


def strict(response: object) -> object:
    text = response.text  # type: ignore[attr-defined]
    return json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))


def test_runs_and_run_status(client: TestClient) -> None:
    (run,) = [r for r in strict(client.get("/runs")) if r["run_id"] == "run-api"]  # type: ignore[union-attr]
    assert (run["state"], run["episodes_done"], run["steps"]) == ("completed", 4, 48)
    status = strict(client.get("/runs/run-api"))
    assert status["slot_ids"] == ["r0c0", "r0c1", "r0c2"] and status["committed_epochs"] == 12  # type: ignore[index]


def test_envs_seeds_and_a_seed_lifecycle(client: TestClient) -> None:
    envs = strict(client.get("/runs/run-api/envs"))
    assert [e["val_accuracy"] for e in envs] == [accuracy(e, e, 12) for e in range(4)]  # type: ignore[union-attr]
    assert envs[3]["val_loss"] is None  # type: ignore[index] # infinity became null
    fossilized = strict(client.get("/runs/run-api/seeds", params={"stage": "fossilized"}))
    assert [s["seed_id"] for s in fossilized] == ["r0c1-conv_light-e3"]  # type: ignore[union-attr]
    seed = strict(client.get("/runs/run-api/seeds/0/0/r0c1-conv_light-e3"))
    assert [h["payload"].get("to_stage") for h in seed["history"]][1:5] == [  # type: ignore[index]
        "TRAINING",
        "BLENDING",
        "HOLDING",
        "FOSSILIZED",
    ]
    missing = client.get("/runs/run-api/seeds/0/0/no-such-seed")
    assert missing.status_code == 404 and "no-such-seed" in missing.json()["detail"]


def test_policies_outcomes_epochs_and_analytics(client: TestClient) -> None:
    (policy,) = strict(client.get("/runs/run-api/policies"))  # type: ignore[misc]
    assert policy["policy_id"] == "ppo-api" and policy["versions"][0]["clip_fraction"] == pytest.approx(0.05)
    assert any(p["policy_id"] == "ppo-api" for p in strict(client.get("/policies")))  # type: ignore[union-attr]
    outcomes = strict(client.get("/runs/run-api/episodes"))
    assert [o["episode"] for o in outcomes] == [0, 1, 2, 3]  # type: ignore[union-attr]
    epochs = strict(client.get("/runs/run-api/epochs"))
    assert len(epochs) == 12 and epochs[0]["val_loss"] is None  # type: ignore[arg-type,index] # mean with +inf
    analytics = strict(client.get("/runs/run-api/analytics"))
    assert analytics["pareto"]["hypervolume"] == pytest.approx(accuracy(2, 2, 12))  # type: ignore[index]
    assert analytics["outcomes"]["fossilized"] == 1  # type: ignore[index]


def test_events_page_by_sequence_and_filter_by_kind(client: TestClient) -> None:
    first = strict(client.get("/runs/run-api/events", params={"limit": 5}))
    assert len(first) == 5 and first[0]["payload"]["kind"] == "run_started"  # type: ignore[arg-type,index]
    after = first[-1]["seq"]  # type: ignore[index]
    nxt = strict(client.get("/runs/run-api/events", params={"after": after, "limit": 5}))
    assert nxt[0]["seq"] > after  # type: ignore[index]
    outcomes = strict(client.get("/runs/run-api/events", params={"kind": "episode_outcome"}))
    assert {e["payload"]["kind"] for e in outcomes} == {"episode_outcome"} and len(outcomes) == 4  # type: ignore


def test_unknown_run_is_a_404_with_a_clear_message(client: TestClient) -> None:
    for path in ("/runs/nope", "/runs/nope/envs", "/runs/nope/analytics", "/runs/nope/stream"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert "unknown run 'nope'" in response.json()["detail"] and "run-api" in response.json()["detail"]


def test_server_sent_events_replay_from_a_sequence(client: TestClient) -> None:
    with client.stream("GET", "/runs/run-api/stream", params={"after": 0, "limit": 3}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        body = "".join(response.iter_text())
    frames = [f for f in body.split("\n\n") if f.startswith("id:")]
    assert len(frames) == 3
    assert frames[0].splitlines()[1] == "event: run_started"
    data = json.loads(frames[0].splitlines()[2].removeprefix("data: "))
    assert data["run_id"] == "run-api"


def test_openapi_documents_every_route(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in (
        "/runs",
        "/runs/{run_id}",
        "/runs/{run_id}/envs",
        "/runs/{run_id}/seeds",
        "/runs/{run_id}/policies",
        "/runs/{run_id}/episodes",
        "/runs/{run_id}/analytics",
        "/runs/{run_id}/stream",
        "/policies",
    ):
        assert path in paths
    assert client.get("/docs").status_code == 200
