"""All five services against a NATS server that testcontainers runs in a container: a two-episode digits run."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from services.runtime.bus import connect
from services.runtime.settings import RuntimeSettings
from tests.docker.docker_env import nats_container
from tests.integration.esper_cli import EPISODE_FIELDS, run_esper
from tests.service_processes import running_services

pytestmark = [pytest.mark.docker, pytest.mark.integration, pytest.mark.timeout(600)]

SERVICES = ["kasmina", "tamiyo", "simic", "tolaria", "karn"]


async def _jetstream_streams(url: str) -> list[str]:
    nc = await connect(RuntimeSettings.from_env({"service": "test", "nats_url": url}))
    try:
        return sorted(str(info.config.name) for info in await nc.jetstream().streams_info())
    finally:
        await nc.close()


def test_two_episode_digits_run_on_a_testcontainers_nats(tmp_path: Path) -> None:
    with nats_container() as url:
        logs = tmp_path / "logs"
        logs.mkdir()
        with running_services(SERVICES, url, logs):
            _, report = run_esper(
                ["run", "--task", "digits", "--episodes", "2", "--envs", "2", "--episode-length", "10",
                 "--no-progress", "--timeout", "400", "--nats", url],
                tmp_path / "report",
            )
            streams = asyncio.run(_jetstream_streams(url))
    assert report["state"] == "completed"
    assert sorted(e["episode"] for e in report["episodes"]) == [0, 1]
    assert sorted(e["env"] for e in report["episodes"]) == [0, 1]
    for episode in report["episodes"]:
        assert set(episode) >= EPISODE_FIELDS
        assert 50.0 < episode["final_accuracy"] <= 100.0
    # The services set up their JetStream streams on the container's server, not on some other bus.
    assert {"STEPS", "TELEMETRY"} <= set(streams), streams
