"""Overwatch on a real run: `esper up` (a nats-server and five service processes), `esper run --detach` on that bus,
and the page open on `esper karn serve --nats` while the run trains. The stream is the bus itself (SSE from NATS),
the numbers are the Karn service's store, and the page must follow the run to its end without a reload."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from overwatch_browser import Server, find_chromium, fmt, launched_browser, open_page, shoot

from tests.integration.esper_cli import esper

pytestmark = pytest.mark.integration


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[str, Path, dict[str, str]]]:
    find_chromium()  # skip (or fail where required) before starting anything
    store = tmp_path / "karn.sqlite"
    state = tmp_path / "state"
    env = {k: v for k, v in os.environ.items() if k != "ESPER_NATS_URL"}
    env.update({"ESPER_STORE_PATH": str(store), "ESPER_TORCH_THREADS": "1"})
    up = esper("up", "--state-dir", str(state), env=env)
    log = state / "esper.log"
    assert up.returncode == 0, up.stdout + up.stderr + (log.read_text()[-3000:] if log.exists() else "")
    try:
        yield up.stdout.strip().splitlines()[-1], store, env
    finally:
        esper("down", "--state-dir", str(state), env=env)


def test_the_page_follows_a_real_run_over_the_bus_to_its_end(
    stack: tuple[str, Path, dict[str, str]], tmp_path: Path
) -> None:
    url, store, env = stack
    server = Server(store, nats_url=url)
    server.start()
    try:
        with launched_browser(find_chromium()) as browser:
            page, requests = open_page(browser, server)
            submitted = esper(
                "run", "--nats", url, "--detach", "--task", "digits", "--episodes", "2", "--envs", "2",
                "--episode-length", "10", "--max-batches", "3", "--no-progress", env=env, timeout=120,
            )  # fmt: skip
            assert submitted.returncode == 0, submitted.stdout + submitted.stderr
            run_id = _run_id(submitted.stdout + submitted.stderr)
            page.goto(f"{server.url}/#/runs/{run_id}")
            page.wait_for_function("() => document.getElementById('live').dataset.state === 'live'", timeout=60_000)
            page.wait_for_function(
                "() => /live · [1-9]/.test(document.getElementById('live').textContent)", timeout=120_000
            )  # events arrived over the bus while the run trained
            page.wait_for_function(
                "() => document.querySelector('#run-facts [data-fact=\"state\"]')?.textContent === 'completed'",
                timeout=240_000,
            )
            page.wait_for_function("() => document.getElementById('view').dataset.loading === 'false'")
            envs: list[dict[str, Any]] = server.get(f"/runs/{run_id}/envs")
            assert {e["env_id"] for e in envs} == {0, 1}
            for e in envs:
                row = page.locator(f'#envs tr[data-env="{e["env_id"]}"]')
                assert row.locator('[data-field="val_accuracy"]').inner_text() == fmt(e["val_accuracy"])
                assert row.locator('[data-field="epoch"]').inner_text() == f"{e['epoch']} / 10"
            assert page.locator("#accuracy-chart path[data-series]").count() == 1
            shoot(page, tmp_path, "overwatch-real-run")
            streams = [u for u in requests if "/stream" in u]
            assert streams and all(u.startswith(server.url + "/") for u in requests), requests
            page.context.close()
    finally:
        server.stop()


def _run_id(output: str) -> str:
    for token in output.replace(":", " ").split():
        if token.startswith("run-"):
            return token
    raise AssertionError(f"no run id in {output!r}")
