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


#: The image of the official NATS server the container mode runs (the same as compose.yaml's default).
NATS_IMAGE = os.environ.get("ESPER_TEST_NATS_IMAGE", "nats:2.10-alpine")


def _docker_engine_error() -> str | None:
    """Why no Docker engine can serve containers here, or None when one answers."""
    try:
        import docker  # type: ignore[import-untyped]

        client = docker.from_env(timeout=5)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:  # the client raises several types for an absent or unreachable engine
        return f"{type(exc).__name__}: {exc}"
    return None


def _container_nats() -> Iterator[str]:
    """nats-server with JetStream in a container (ESPER_TEST_NATS=container); a clear skip without Docker."""
    error = _docker_engine_error()
    if error is not None:
        pytest.skip(f"ESPER_TEST_NATS=container but no Docker engine answers ({error})")
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.wait_strategies import LogMessageWaitStrategy

    container = (
        DockerContainer(NATS_IMAGE)
        .with_command(["--jetstream", "--store_dir", "/data"])
        .with_exposed_ports(4222)
        .waiting_for(LogMessageWaitStrategy("Server is ready").with_startup_timeout(60))
    )
    with container:
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
