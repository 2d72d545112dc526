"""compose.yaml as the compose tests read it: variable interpolation, overlays, and what each Esper service runs."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from services.operator import security
from services.runtime.settings import RuntimeSettings

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "compose.yaml"
COMPOSE_GPU = REPO / "compose.gpu.yaml"
COMPOSE_CLUSTER = REPO / "compose.cluster.yaml"


def vendor_dir() -> Path:
    """The shared vendored files (the Compose Specification schema); configurable with ESPER_SHARED_VENDOR."""
    return Path(os.environ.get("ESPER_SHARED_VENDOR", REPO.parent / "shared" / "vendor"))


def dot_env() -> dict[str, str]:
    """The variables compose reads from `.env`: a fresh password per NATS user."""
    return security.server_environment(security.generate_passwords())


_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|(?P<bare>[A-Za-z_][A-Za-z0-9_]*)|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\})"
)


class InterpolationError(ValueError):
    """A `${VAR:?message}` whose variable is unset, as `docker compose config` would report it."""


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Compose's variable interpolation, applied to every string of a loaded file."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group("escaped"):
            return "$"
        name = match.group("bare") or match.group("name")
        op, arg = match.group("op"), match.group("arg") or ""
        current = env.get(name)
        unset = current is None or (op is not None and op.startswith(":") and current == "")
        if op in ("-", ":-"):
            return arg if unset else str(current)
        if op in ("?", ":?"):
            if unset:
                raise InterpolationError(f"required variable {name} is missing a value: {arg}")
            return str(current)
        if op in ("+", ":+"):
            return "" if unset else arg
        return "" if current is None else current

    return _VARIABLE.sub(substitute, value)


def load(path: Path, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A compose file, interpolated with `env` (raw when None)."""
    document = yaml.safe_load(path.read_text())
    assert isinstance(document, dict)
    return document if env is None else interpolate(document, env)


def merge(base: Any, overlay: Any) -> Any:
    """`docker compose -f base -f overlay`: mappings merge key by key, anything else is replaced."""
    if isinstance(base, dict) and isinstance(overlay, dict):
        merged = dict(base)
        for key, value in overlay.items():
            merged[key] = merge(base[key], value) if key in base else value
        return merged
    return overlay


def esper_services(document: dict[str, Any], *, with_profiles: bool = True) -> dict[str, dict[str, Any]]:
    """The services that run an `esper` command (all but the NATS server)."""
    return {
        name: service
        for name, service in document["services"].items()
        if (service.get("command") or [""])[0] == "esper" and (with_profiles or not service.get("profiles"))
    }


def settings_names(command: list[str]) -> set[str]:
    """Every `ESPER_*` variable the settings behind an `esper` command read."""
    from services.operator.registry import settings_type

    if command[1:2] == ["service"]:
        return set(settings_type(command[2]).env_names())
    if command[1:2] == ["karn"]:
        return set(settings_type("karn").env_names())
    return set(RuntimeSettings.env_names())


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    assert isinstance(env, dict), "environments are written as mappings"
    return {key: str(value) for key, value in env.items()}


def dockerfile_args() -> set[str]:
    return set(re.findall(r"^ARG (\w+)", (REPO / "Dockerfile").read_text(), re.M))


def dockerfile_workdir() -> str:
    return re.findall(r"^WORKDIR (\S+)", (REPO / "Dockerfile").read_text(), re.M)[-1]
