"""Typed settings: defaults, then ESPER_* variables, then flags; secrets never logged."""

from __future__ import annotations

import pytest

from services.operator.registry import service_settings, settings_type
from services.runtime.settings import RuntimeSettings


def test_environment_then_overrides() -> None:
    env = {"ESPER_NATS_URL": "nats://bus:4222", "ESPER_ADMIN_PORT": "9100", "ESPER_DRAIN_TIMEOUT": "2.5"}
    settings = RuntimeSettings.from_env({"admin_port": 9200, "device": None}, environ=env)
    assert settings.nats_url == "nats://bus:4222"
    assert settings.admin_port == 9200 and settings.drain_timeout == 2.5 and settings.device == "auto"
    assert settings.instance.startswith("esper-")


def test_bad_values_name_the_variable() -> None:
    with pytest.raises(ValueError, match="ESPER_ADMIN_PORT"):
        RuntimeSettings.from_env(environ={"ESPER_ADMIN_PORT": "lots"})
    with pytest.raises(ValueError, match="ESPER_LIVE_LOG"):
        settings_type("karn").from_env(environ={"ESPER_LIVE_LOG": "maybe"})


def test_password_is_masked_in_the_startup_view() -> None:
    settings = RuntimeSettings.from_env(environ={"ESPER_NATS_PASSWORD": "hunter2"})
    assert settings.nats_password == "hunter2"
    assert settings.public_view()["nats_password"] == "***"
    assert "hunter2" not in repr(settings)


@pytest.mark.parametrize("name", ["kasmina", "tamiyo", "simic", "tolaria", "karn"])
def test_each_service_has_its_own_settings(name: str) -> None:
    settings = service_settings(name, {"nats_url": "nats://x:1"})
    assert settings.service == name and settings.nats_url == "nats://x:1"
    names = settings_type(name).env_names()
    assert "ESPER_NATS_URL" in names and "ESPER_SERVICE" not in names


def test_service_specific_fields_are_read() -> None:
    tolaria = settings_type("tolaria").from_env(environ={"ESPER_MAX_ENVS": "2", "ESPER_LEASE_TTL": "3"})
    assert tolaria.max_envs == 2 and tolaria.lease_ttl == 3.0  # type: ignore[attr-defined]
