"""Overwatch browser-test helpers: find Debian's chromium (or skip with one line, or fail where CI requires it),
serve `create_app` with uvicorn in a thread, open a page that refuses every request outside the server's origin,
format numbers as the page does, and save screenshots."""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from services.karn.api import create_app

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "docs" / "results"


def find_chromium() -> str:
    found = os.environ.get("ESPER_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    reason = ""
    if not found:
        reason = "no chromium on this machine (apt-get install chromium, or set ESPER_CHROMIUM)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            reason = "playwright is not installed (make install)"
    if reason:
        if os.environ.get("ESPER_REQUIRE_BROWSER") == "1":
            pytest.fail(f"Overwatch browser tests are required here, but {reason}")
        pytest.skip(f"Overwatch browser tests skipped: {reason}")
    return str(found)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """`esper karn serve`'s app under uvicorn in a thread; `restart` keeps the port."""

    store_path: Path
    nats_url: str | None = None
    port: int = field(default_factory=free_port)
    thread: threading.Thread | None = None
    server: uvicorn.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        app = create_app(self.store_path, self.nats_url, poll_seconds=0.1, reports_dir=RESULTS)
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", timeout_graceful_shutdown=1)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        assert self.server is not None and self.thread is not None
        self.server.should_exit = True
        self.thread.join(timeout=20)
        assert not self.thread.is_alive(), "uvicorn did not stop"

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=10) as response:
            return json.loads(response.read())


def open_page(browser: Any, server: Server) -> tuple[Any, list[str]]:
    """A page that records every request it makes and refuses any outside the server's origin."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    requests: list[str] = []
    page = context.new_page()
    page.on("request", lambda request: requests.append(request.url))

    def guard(route: Any) -> None:
        if route.request.url.startswith(server.url + "/"):
            route.continue_()
        else:
            route.abort()

    page.route("**/*", guard)
    return page, requests


def shoot(page: Any, tmp: Path, name: str) -> Path:
    """A full-page screenshot in the test's directory, and in ESPER_SCREENSHOT_DIR when it is set (docs images)."""
    shot = tmp / f"{name}.png"
    page.screenshot(path=str(shot), full_page=True)
    target = os.environ.get("ESPER_SCREENSHOT_DIR")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(target) / f"{name}.png")
    assert shot.stat().st_size > 10_000, "a screenshot of the page must not be blank"
    return shot


def cells(page: Any, selector: str) -> list[dict[str, str | None]]:
    values: list[dict[str, str | None]] = page.eval_on_selector_all(
        selector,
        "cells => cells.map(c => ({field: c.dataset.field, value: c.dataset.value ?? null, text: c.textContent}))",
    )
    return values


def fmt(value: float | None, digits: int = 2) -> str:
    """As the page formats a number: JavaScript's toFixed (ties away from zero on the exact binary value)."""
    if value is None:
        return "—"
    return str(Decimal(value).quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP))


@contextmanager
def launched_browser(chromium: str) -> Iterator[Any]:
    """Headless chromium under Playwright (sandboxing off: CI runs as root in a container)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            yield browser
        finally:
            browser.close()
