"""Fixtures for the tests that run Esper's images under a real Docker engine."""

from __future__ import annotations

import pytest

from tests.docker.docker_env import images_tool, require_docker


@pytest.fixture(scope="session")
def docker_images() -> dict[str, str]:
    """ESPER_IMAGE and NATS_IMAGE, made or reused once per session (official images where a registry answers)."""
    require_docker()
    tool = images_tool()
    try:
        return dict(tool.make_images())
    except tool.DockerError as exc:
        pytest.fail(f"the Docker engine answers but the images could not be made: {exc}", pytrace=False)
