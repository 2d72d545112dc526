"""Karn's HTTP API against its own OpenAPI document: schemathesis generates valid and invalid requests for every
route, and every reply must be declared, well-formed and never a 500 (issue 15: a >64-bit `after` was a 500, and
every `/runs/{run_id}/…` 404 was undeclared).

The event stream is an endless response by design, so it is fuzzed only through the checks below it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from karn_fixtures import script

from services.karn.api import STORE_INT_MAX, create_app
from services.karn.store import RunStore


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    path = tmp_path_factory.mktemp("fuzz") / "karn.sqlite"
    with RunStore.open(path) as store:
        store.ingest(script("run-fuzz", learn=True, policy_id="ppo-fuzz").items)
    return create_app(path, poll_seconds=0.05, reports_dir=Path(__file__).resolve().parents[2] / "docs" / "results")


FUZZ = settings(
    max_examples=30,
    derandomize=True,  # the same cases on every machine: a failure here is a real, reproducible one
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def test_every_route_answers_as_its_openapi_document_says(app: FastAPI) -> None:
    api = schemathesis.openapi.from_asgi("/openapi.json", app).exclude(path="/runs/{run_id}/stream")
    operations = [result.ok() for result in api.get_all_operations()]
    assert len(operations) == 17  # 13, then Overwatch's env detail, lifecycle and two experiment-report routes
    with TestClient(app) as client:  # runs the lifespan, so the store is open
        for operation in operations:

            @FUZZ
            @given(case=operation.as_strategy())
            def replies_as_declared(case: schemathesis.Case) -> None:
                case.call_and_validate(session=client)

            replies_as_declared()


def test_a_known_run_answers_every_route_and_unknown_runs_get_a_declared_404(app: FastAPI) -> None:
    with TestClient(app) as client:
        document = client.get("/openapi.json").json()
        run_routes = [p for p in document["paths"] if p.startswith("/runs/{run_id}")]
        assert len(run_routes) == 13
        for route in run_routes:
            assert "404" in document["paths"][route]["get"]["responses"], route
        for route in run_routes:
            if "{env_id}" in route or route.endswith("/stream"):
                continue
            assert client.get(route.replace("{run_id}", "run-fuzz")).status_code == 200, route
            missing = client.get(route.replace("{run_id}", "no-such-run"))
            assert missing.status_code == 404 and missing.json()["run_id"] == "no-such-run", route


def test_integers_beyond_the_store_range_are_a_422_naming_the_parameter(app: FastAPI) -> None:
    huge = STORE_INT_MAX + 1
    with TestClient(app) as client:
        for url, name in [
            (f"/runs/run-fuzz/events?after={huge}", "after"),
            ("/runs/run-fuzz/events?after=1333953720569625105309887088295936&kind=*&limit=8549", "after"),
            (f"/runs/run-fuzz/seeds?env_id={huge}", "env_id"),
            (f"/runs/run-fuzz/seeds/{huge}/0/s", "env_id"),
            (f"/runs/run-fuzz/seeds/0/{huge}/s", "episode"),
            (f"/runs/run-fuzz/envs/{huge}", "env_id"),
            (f"/runs/run-fuzz/envs/0?episode={huge}", "episode"),
            (f"/runs/run-fuzz/stream?after={huge}", "after"),
            (f"/runs/run-fuzz/stream?limit={huge}", "limit"),
        ]:
            reply = client.get(url)
            assert reply.status_code == 422, url
            assert [e["loc"][-1] for e in reply.json()["detail"]] == [name], url
        assert client.get(f"/runs/run-fuzz/events?after={STORE_INT_MAX}").json() == []
        stale = client.get("/runs/run-fuzz/stream", headers={"Last-Event-ID": str(huge)})
        assert stale.status_code == 422 and "Last-Event-ID" in stale.json()["detail"]
        garbage = client.get("/runs/run-fuzz/stream", headers={"Last-Event-ID": "１２".encode()})  # non-ASCII digits
        assert garbage.status_code == 422
        with client.stream("GET", "/runs/run-fuzz/stream", params={"after": 0, "limit": 2}) as replay:
            assert replay.status_code == 200
            assert sum(line.startswith("event: ") for line in replay.iter_lines()) == 2
