"""The five services by name: their definitions and their settings types (what `esper service NAME` runs).

This is the one list of the services. `SERVICE_NAMES` is their start order: the lifecycle authority and the policy
before the learner, the learner before the env workers that need a policy, and the collector last.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from services.runtime.service import ServiceDefinition
from services.runtime.settings import RuntimeSettings

_MODULES = {
    "kasmina": ("services.kasmina.service", "KasminaSettings"),
    "tamiyo": ("services.tamiyo.service", "TamiyoSettings"),
    "simic": ("services.simic.service", "SimicSettings"),
    "tolaria": ("services.tolaria.service", "TolariaSettings"),
    "karn": ("services.karn.service", "KarnSettings"),
}
SERVICE_NAMES: tuple[str, ...] = tuple(_MODULES)


def settings_type(name: str) -> type[RuntimeSettings]:
    module, cls = _MODULES[name]
    settings_cls: type[RuntimeSettings] = getattr(importlib.import_module(module), cls)
    assert issubclass(settings_cls, RuntimeSettings)
    return settings_cls


def service_settings(name: str, overrides: Mapping[str, Any] | None = None) -> RuntimeSettings:
    return settings_type(name).from_env(overrides)


def service_definition(name: str) -> ServiceDefinition:
    module, _ = _MODULES[name]
    definition = importlib.import_module(module).definition()
    assert isinstance(definition, ServiceDefinition)
    return definition
