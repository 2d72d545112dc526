"""Overwatch in a real browser: headless Chromium (Debian's package, driven by Playwright) against `create_app` served
by uvicorn, on a seeded store, on a run that goes on while the page is open, and across a server restart.

The tests click through runs, env detail and experiment reports, compare what the page shows with what the API
returns, and record every request the page makes: none may leave the server's origin. Without a browser they skip
with one line; CI sets ESPER_REQUIRE_BROWSER=1, which turns the skip into a failure.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from karn_fixtures import script
from overwatch_browser import Server, cells, find_chromium, fmt, open_page, shoot

import leyline_schemas as L
from services.karn.store import RunStore

PROOF_REPORT = "proof-mnist1d-5seeds"


def _shapley(run: Any, env_id: int, episode: int) -> L.TelemetryEvent:
    payload = L.ShapleyComputed(
        strategy="exact",
        slot_ids=["r0c0", "r0c1", "r0c2"],
        shapley={"r0c0": 0.75, "r0c1": 1.5, "r0c2": -0.25},
        shapley_std={"r0c0": 0.1, "r0c1": 0.2},
    )
    event: L.TelemetryEvent = run.event(payload, env_id=env_id, episode=episode, epoch=12)
    return event


@pytest.fixture(scope="module")
def chromium() -> str:
    return find_chromium()


@pytest.fixture(scope="module")
def browser(chromium: str) -> Iterator[Any]:
    from overwatch_browser import launched_browser

    with launched_browser(chromium) as launched:
        yield launched


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory, chromium: str) -> Iterator[Server]:
    path = tmp_path_factory.mktemp("overwatch") / "karn.sqlite"
    run = script("run-web", learn=True, policy_id="ppo-web")
    items: list[Any] = []
    for item in run.items:  # env 3's last epochs diverged: the page must say "—", not 0 or NaN
        if isinstance(item, L.TelemetryEvent) and isinstance(item.payload, L.EpochCompleted) and item.env_id == 3:
            item = msgspec.structs.replace(item, payload=msgspec.structs.replace(item.payload, val_loss=math.inf))
        items.append(item)
    items.insert(-1, _shapley(run, 0, 0))
    with RunStore.open(path) as store:
        store.ingest(items)
    server = Server(path)
    server.start()
    yield server
    server.stop()


def test_runs_to_env_detail_show_the_api_numbers_and_stay_on_localhost(
    browser: Any, seeded: Server, tmp_path: Path
) -> None:
    page, requests = open_page(browser, seeded)
    response = page.goto(seeded.url + "/")
    assert response.ok and "default-src 'none'" in response.headers["content-security-policy"]
    page.wait_for_selector("#runs a.run-link")
    (run,) = [r for r in seeded.get("/runs") if r["run_id"] == "run-web"]
    row = page.locator('#runs tr[data-run="run-web"]')
    assert row.locator('[data-field="best_accuracy"]').inner_text() == fmt(run["best_accuracy"])
    assert row.locator('[data-field="state"]').inner_text() == "completed"

    row.locator("a.run-link").click()
    page.wait_for_selector("#envs tbody tr")
    envs = seeded.get("/runs/run-web/envs")
    for env in envs:
        shown = page.locator(f'#envs tr[data-env="{env["env_id"]}"]')
        assert shown.locator('[data-field="val_accuracy"]').inner_text() == fmt(env["val_accuracy"])
        assert shown.locator('[data-field="best_accuracy"]').inner_text() == fmt(env["best_accuracy"])
        assert shown.locator('[data-field="val_loss"]').inner_text() == fmt(env["val_loss"], 4)
        for slot, text in env["slots"].items():
            assert shown.locator(f'[data-field="slot:{slot}"]').inner_text() == text
    assert envs[3]["val_loss"] is None  # the diverged env: shown as missing, never as a number
    assert page.locator('#envs tr[data-env="3"] [data-field="val_loss"]').inner_text() == "—"
    # Curves, a swimlane per env and the policy line with its versions.
    assert page.locator("#accuracy-chart path[data-series]").count() == 1
    assert page.locator("#reward-chart path[data-series]").count() == 1
    lifecycle = seeded.get("/runs/run-web/lifecycle")
    for env in envs:
        expected = [seg["stage"] for s in lifecycle[str(env["env_id"])]["seeds"] for seg in s["segments"]]
        stages = page.locator(f"#swimlane-{env['env_id']} rect[data-stage]").evaluate_all(
            "rects => rects.map(r => r.dataset.stage)"
        )
        assert sorted(stages) == sorted(expected)
    # env 0's conv_light went GERMINATED → TRAINING → BLENDING → HOLDING → FOSSILIZED: every stage has its segment.
    assert {"TRAINING", "BLENDING", "HOLDING", "FOSSILIZED"} <= set(
        page.locator("#swimlane-0 rect[data-stage]").evaluate_all("rects => rects.map(r => r.dataset.stage)")
    )
    (policy,) = seeded.get("/runs/run-web/policies")
    latest = policy["versions"][-1]
    version_row = page.locator(f'#versions-ppo-web tr[data-version="{latest["version"]}"]')
    assert version_row.locator('[data-field="approx_kl"]').inner_text() == fmt(latest["approx_kl"], 4)
    assert version_row.locator('[data-field="entropy"]').inner_text() == fmt(latest["entropy"], 3)
    shoot(page, tmp_path, "overwatch-run")

    page.locator('#envs tr[data-env="0"] a.env-link').click()
    page.wait_for_selector("#env-detail")
    detail = seeded.get("/runs/run-web/envs/0")
    bars = page.locator("#waterfall rect[data-label]").evaluate_all(
        "rects => rects.map(r => [r.dataset.label, Number(r.dataset.delta)])"
    )
    assert [label for label, _ in bars] == [b["label"] for b in detail["waterfall"]]
    assert [delta for _, delta in bars] == pytest.approx([b["delta"] for b in detail["waterfall"]])
    shown_seeds = {c["field"]: c["text"] for c in cells(page, "#seeds tbody tr:first-child td")}
    first = detail["seeds"][0]
    assert shown_seeds["contribution"] == fmt(first["contribution"])
    assert shown_seeds["stage"] == (first["stage"] or "—")
    shapley = {c["slot_id"]: c for c in detail["shapley"]["values"]}
    for slot, value in shapley.items():
        shown = page.locator(f'#shapley tr[data-slot="{slot}"]')
        assert shown.locator('[data-field="value"]').inner_text() == fmt(value["value"])
        assert shown.locator('[data-field="std"]').inner_text() == fmt(value["std"])
    assert page.locator('#shapley tr[data-slot="r0c2"] [data-field="std"]').inner_text() == "—"  # no std sent
    for pair in detail["interactions"]:
        text = page.locator(f'#interactions [data-field="interaction:{pair["slot_a"]}:{pair["slot_b"]}"]').inner_text()
        assert text == fmt(pair["interaction"])
    shoot(page, tmp_path, "overwatch-env-detail")

    assert requests, "the page made no request at all"
    assert all(url.startswith(seeded.url + "/") for url in requests), requests
    page.context.close()


def test_an_experiment_report_shows_its_cohorts_and_flops_curves(browser: Any, seeded: Server, tmp_path: Path) -> None:
    page, requests = open_page(browser, seeded)
    page.goto(seeded.url + "/#/experiments")
    page.wait_for_selector("#reports")
    listed = seeded.get("/experiments")
    assert page.locator("#reports tbody tr").count() == len(listed) > 0
    page.locator(f'#reports tr[data-report="{PROOF_REPORT}"] a.report-link').click()
    page.wait_for_selector("#cohorts")
    report = seeded.get(f"/experiments/{PROOF_REPORT}")
    assert page.locator("#report-verdict").inner_text() == report["verdict"]
    for cohort in report["cohorts"]:
        row = page.locator(f'#cohorts tr[data-cohort="{cohort["cohort"]}"]')
        acc = cohort["final_accuracy"]
        shown = row.locator('[data-field="final_accuracy"]').inner_text()
        assert shown == f"{fmt(acc['mean'])} [{fmt(acc['low'])}, {fmt(acc['high'])}]"
        assert row.locator('[data-field="train_gflops"]').inner_text() == fmt(cohort["train_gflops"], 3)
    series = page.locator("#flops-chart path[data-series]").evaluate_all("paths => paths.map(p => p.dataset.series)")
    assert series == list(report["flops_curves"])
    for comparison in report["comparisons"]:
        row = page.locator(f'#comparisons tr[data-comparison="{comparison["id"]}"]')
        assert row.locator('[data-field="status"]').inner_text() == comparison["status"]
    shoot(page, tmp_path, "overwatch-experiment")
    assert all(url.startswith(seeded.url + "/") for url in requests), requests
    page.context.close()


def test_unknown_pages_and_runs_say_so(browser: Any, seeded: Server) -> None:
    page, _ = open_page(browser, seeded)
    page.goto(seeded.url + "/#/runs/no-such-run")
    page.wait_for_selector("#error")
    assert "no-such-run" in page.locator("#error").inner_text()
    page.goto(seeded.url + "/#/nowhere")
    page.wait_for_selector("#error")
    assert "No such page" in page.locator("#error").inner_text()
    page.context.close()


def _wait_for(page: Any, predicate: str, arg: Any = None, timeout: float = 20_000) -> None:
    page.wait_for_function(predicate, arg=arg, timeout=timeout)


def test_a_live_run_updates_over_sse_and_reconnects_after_a_server_restart(
    browser: Any, chromium: str, tmp_path: Path
) -> None:
    """The run goes on while the page is open (the store grows as Karn's collector writes it), the server restarts
    mid-run, and the page reconnects with backoff, resumes from the last event it saw, and shows the final state."""
    path = tmp_path / "karn.sqlite"
    run = script("run-live", policy_id="heuristic")
    items = [i for i in run.items if not (isinstance(i, L.TelemetryEvent) and isinstance(i.payload, L.RunFinished))]
    half = len(items) // 3
    with RunStore.open(path) as store:
        store.ingest(items[:half])
    server = Server(path)
    server.start()
    page, requests = open_page(browser, server)
    try:
        page.goto(server.url + "/#/runs/run-live")
        page.wait_for_selector("#envs tbody tr")
        _wait_for(page, "() => document.getElementById('live').dataset.state === 'live'")
        first = server.get("/runs/run-live/envs")[0]
        cell = '#envs tr[data-env="0"] [data-field="epoch"]'
        assert page.locator(cell).inner_text().startswith(f"{first['epoch']} /")

        with RunStore.open(path) as store:
            store.ingest(items[half : 2 * half])
        middle = server.get("/runs/run-live/envs")[0]
        assert (middle["episode"], middle["epoch"]) != (first["episode"], first["epoch"])
        _wait_for(
            page,
            "([sel, text]) => document.querySelector(sel)?.textContent.startsWith(text)",
            [cell, f"{middle['epoch']} /"],
        )

        server.stop()
        _wait_for(page, "() => document.getElementById('live').dataset.state === 'reconnecting'")
        with RunStore.open(path) as store:  # the run goes on while nobody serves it
            store.ingest(items[2 * half :])
        server.start()
        # Still running: the page reconnects its stream (resuming after the last event it saw).
        _wait_for(page, "() => document.getElementById('live').dataset.state === 'live'", timeout=60_000)
        streams = [u for u in requests if "/stream" in u]
        assert len(streams) >= 2 and any("after=" in u for u in streams[1:]), streams
        with RunStore.open(path) as store:
            store.ingest([i for i in run.items if i not in items])  # the run finishes
        page.wait_for_function(
            "() => document.querySelector('#run-facts [data-fact=\"state\"]')?.textContent === 'completed'",
            timeout=30_000,
        )
        final = server.get("/runs/run-live/envs")
        for env in final:
            text = page.locator(f'#envs tr[data-env="{env["env_id"]}"] [data-field="val_accuracy"]').inner_text()
            assert text == fmt(env["val_accuracy"])
        assert all(url.startswith(server.url + "/") for url in requests), requests
        shoot(page, tmp_path, "overwatch-live")
    finally:
        page.context.close()
        if server.thread is not None and server.thread.is_alive():
            server.stop()


def test_a_state_the_store_records_after_the_last_event_still_reaches_the_page(browser: Any, tmp_path: Path) -> None:
    """On the bus, the stream can carry a run's last event before Karn has stored it, so the refresh it triggers
    reads the old state; the page refreshes once events settle and polls while it follows a run. Here the run's
    state changes in the store with no event at all: the page must still show it within the poll."""
    import sqlite3

    path = tmp_path / "karn.sqlite"
    run = script("run-lag", policy_id="heuristic")
    items = [i for i in run.items if not (isinstance(i, L.TelemetryEvent) and isinstance(i.payload, L.RunFinished))]
    with RunStore.open(path) as store:
        store.ingest(items)
    server = Server(path)
    server.start()
    page, _ = open_page(browser, server)
    try:
        page.goto(server.url + "/#/runs/run-lag")
        page.wait_for_function("() => document.getElementById('live').dataset.state === 'live'", timeout=20_000)
        assert page.locator('#run-facts [data-fact="state"]').inner_text() == "running"
        with sqlite3.connect(path) as db:  # what Karn's store writer does a moment after the stream moved on
            db.execute("UPDATE runs SET state = 'completed' WHERE run_id = 'run-lag'")
        page.wait_for_function(
            "() => document.querySelector('#run-facts [data-fact=\"state\"]')?.textContent === 'completed'",
            timeout=20_000,
        )
        page.wait_for_function("() => document.getElementById('live').dataset.state === 'idle'", timeout=5_000)
    finally:
        page.context.close()
        server.stop()
