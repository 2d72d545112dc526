"""The Docker side of the tests: whether an engine answers, the images, and compose projects of our own.

Tests marked `docker` need a Docker engine. Without one they skip with one clear line (see the root conftest's
summary); with ESPER_REQUIRE_DOCKER=1 (CI sets it) a missing engine fails them instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from types import ModuleType

import pytest

from tests.scripts import load_script

#: Every skip for want of Docker starts with this, so the session summary can count them.
SKIP_PREFIX = "no Docker here"


def images_tool() -> ModuleType:
    """deploy/docker/images.py (a script, not a package module)."""
    return load_script("deploy/docker/images.py")


def docker_required() -> bool:
    return os.environ.get("ESPER_REQUIRE_DOCKER") == "1"


@cache
def docker_unavailable() -> str | None:
    """Why Docker tests cannot run here (no engine, no Compose v2), or None."""
    tool = images_tool()
    error = tool.engine_error()
    if error is not None:
        return str(error)
    try:
        tool.compose_command()
    except tool.DockerError as exc:
        return str(exc)
    return None


def require_docker() -> None:
    """Skip (or, under ESPER_REQUIRE_DOCKER=1, fail) the calling test when Docker cannot serve it."""
    reason = docker_unavailable()
    if reason is None:
        return
    if docker_required():
        pytest.fail(f"ESPER_REQUIRE_DOCKER=1 but {reason}", pytrace=False)
    pytest.skip(f"{SKIP_PREFIX}: {reason}")


def configure_testcontainers() -> None:
    """Settings testcontainers needs on a machine like ours, unless the user set them.

    - Ryuk (the reaper container) is disabled when its image is neither here nor pullable; the fixtures then stop
      their containers themselves (they always do, in `finally`).
    - When the engine runs on this machine (a dockerd in our own process namespace), published ports are reached
      on this machine: connection mode `docker_host`. testcontainers would otherwise see a container-like
      environment (as our sandbox is) and aim at the bridge gateway, where nothing answers.
    """
    from testcontainers.core.config import ConnectionMode, testcontainers_config

    tool = images_tool()
    if "TESTCONTAINERS_RYUK_DISABLED" not in os.environ and not tool.available(testcontainers_config.ryuk_image):
        testcontainers_config.ryuk_disabled = True
    if "TESTCONTAINERS_CONNECTION_MODE" not in os.environ and _engine_is_local():
        testcontainers_config.connection_mode_override = ConnectionMode.docker_host


def _engine_is_local() -> bool:
    host = os.environ.get("DOCKER_HOST", "")
    if host and not host.startswith("unix://"):
        return False
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() == "dockerd":
                return True
        except OSError:
            continue
    return False


@contextmanager
def nats_container() -> Iterator[str]:
    """nats-server with JetStream in a testcontainers container; yields its URL on this machine."""
    require_docker()
    tool = images_tool()
    try:
        image = tool.nats_image()
    except tool.DockerError as exc:
        pytest.fail(f"the Docker engine answers but no NATS image could be had: {exc}", pytrace=False)
    configure_testcontainers()
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.wait_strategies import LogMessageWaitStrategy

    container = (
        DockerContainer(image)
        .with_command(["--jetstream", "--store_dir", "/data"])
        .with_exposed_ports(4222)
        .waiting_for(LogMessageWaitStrategy("Server is ready").with_startup_timeout(60))
    )
    with container:
        yield f"nats://{container.get_container_host_ip()}:{container.get_exposed_port(4222)}"
