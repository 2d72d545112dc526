"""Shared fixtures: a real nats-server (local binary, an existing URL, or a testcontainers container)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.runtime.embedded import EmbeddedNats, start_nats

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """Where the shared small datasets live (configurable: ESPER_SHARED_DATA)."""
    return Path(os.environ.get("ESPER_SHARED_DATA", REPO.parent / "shared" / "data"))


def _container_nats() -> Iterator[str]:
    try:
        import docker  # type: ignore[import-untyped]

        docker.from_env().ping()
    except Exception as exc:  # no engine answering: a clear skip, never a failure
        pytest.skip(f"ESPER_TEST_NATS=container but no Docker engine answers: {exc}")
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.waiting_utils import wait_for_logs

    container = DockerContainer("nats:2.10-alpine").with_command("-js").with_exposed_ports(4222)
    with container:
        wait_for_logs(container, "Server is ready", timeout=60)
        yield f"nats://{container.get_container_host_ip()}:{container.get_exposed_port(4222)}"


@pytest.fixture(scope="session")
def nats_url() -> Iterator[str]:
    """A NATS server with JetStream for the whole session."""
    if os.environ.get("ESPER_TEST_NATS_URL"):
        yield os.environ["ESPER_TEST_NATS_URL"]
        return
    if os.environ.get("ESPER_TEST_NATS") == "container":
        yield from _container_nats()
        return
    state = Path(tempfile.mkdtemp(prefix="esper-test-nats-"))
    server = start_nats(state, port=_free_port())
    try:
        yield server.url
    finally:
        server.stop()
        shutil.rmtree(state, ignore_errors=True)


def _free_port() -> int:
    from services.runtime.embedded import free_port

    return free_port()


@pytest.fixture
def fresh_nats(tmp_path: Path) -> Iterator[EmbeddedNats]:
    """A private nats-server for tests that restart or inspect the server itself."""
    server = start_nats(tmp_path / "nats", port=_free_port())
    try:
        yield server
    finally:
        server.stop()
