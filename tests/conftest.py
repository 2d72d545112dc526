"""Shared fixtures: a real nats-server (local binary, an existing URL, or a testcontainers container)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.operator.embedded import EmbeddedNats, start_nats

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """Where the shared small datasets live (configurable: ESPER_SHARED_DATA)."""
    return Path(os.environ.get("ESPER_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def nats_url() -> Iterator[str]:
    """A NATS server with JetStream for the whole session."""
    if os.environ.get("ESPER_TEST_NATS_URL"):
        yield os.environ["ESPER_TEST_NATS_URL"]
        return
    if os.environ.get("ESPER_TEST_NATS") == "container":
        from tests.docker.docker_env import nats_container

        with nats_container() as url:
            yield url
        return
    state = Path(tempfile.mkdtemp(prefix="esper-test-nats-"))
    server = start_nats(state, port=_free_port())
    try:
        yield server.url
    finally:
        server.stop()
        shutil.rmtree(state, ignore_errors=True)


def _free_port() -> int:
    from services.operator.embedded import free_port

    return free_port()


@pytest.fixture
def fresh_nats(tmp_path: Path) -> Iterator[EmbeddedNats]:
    """A private nats-server for tests that restart or inspect the server itself."""
    server = start_nats(tmp_path / "nats", port=_free_port())
    try:
        yield server
    finally:
        server.stop()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One line for the Docker tests skipped for want of an engine, with the reason."""
    from tests.docker.docker_env import SKIP_PREFIX

    skipped = [r for r in terminalreporter.stats.get("skipped", []) if SKIP_PREFIX in str(r.longrepr)]
    if skipped:
        reason = str(skipped[0].longrepr[2]) if isinstance(skipped[0].longrepr, tuple) else str(skipped[0].longrepr)
        terminalreporter.write_line(f"docker: {len(skipped)} tests skipped ({reason.removeprefix('Skipped: ')})")
