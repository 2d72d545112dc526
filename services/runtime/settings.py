"""One typed settings object per service, read from `ESPER_*` environment variables and flags."""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Self

log = logging.getLogger("esper.settings")

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"


def _instance_name(service: str) -> str:
    return f"{service}-{socket.gethostname()}-{os.getpid()}"


def _coerce(raw: str, kind: Any, name: str) -> Any:
    text = raw.strip()
    if kind in (bool, "bool"):
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off", ""):
            return False
        raise ValueError(f"{name}={raw!r} is not a boolean")
    try:
        if kind in (int, "int"):
            return int(text)
        if kind in (float, "float"):
            return float(text)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a valid {kind if isinstance(kind, str) else kind.__name__}") from None
    return text


@dataclass(frozen=True, kw_only=True)
class RuntimeSettings:
    """Settings every service shares; each field `foo` is read from `ESPER_FOO`."""

    service: str = "esper"
    nats_url: str = DEFAULT_NATS_URL
    device: str = "auto"
    admin_host: str = "127.0.0.1"
    admin_port: int = 0
    log_level: str = "INFO"
    instance: str = ""
    request_timeout: float = 10.0
    connect_timeout: float = 30.0
    drain_timeout: float = 20.0
    nats_user: str = ""
    nats_password: str = field(default="", repr=False)
    nats_creds: str = ""
    nats_tls_ca: str = ""
    nats_tls_cert: str = ""
    nats_tls_key: str = ""
    #: Copies of every stream, bucket and store (more than 1 needs a JetStream cluster of that many servers).
    stream_replicas: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.stream_replicas <= 5:
            raise ValueError(f"ESPER_STREAM_REPLICAS={self.stream_replicas} is outside 1-5, JetStream's range")

    @classmethod
    def env_names(cls) -> list[str]:
        """Every environment variable these settings read."""
        return [f"ESPER_{f.name.upper()}" for f in fields(cls) if f.name != "service"]

    @classmethod
    def from_env(cls, overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None) -> Self:
        """Defaults, then `ESPER_*` variables, then explicit overrides (flags); None overrides are ignored."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            key = f"ESPER_{f.name.upper()}"
            if f.name != "service" and key in env:
                values[f.name] = _coerce(env[key], f.type, key)
        for name, value in (overrides or {}).items():
            if value is not None:
                values[name] = value
        settings = cls(**values)
        if not settings.instance:
            settings = dataclasses.replace(settings, instance=_instance_name(settings.service))
        return settings

    def public_view(self) -> dict[str, Any]:
        """The settings as logged at start-up: secrets masked."""
        view = dataclasses.asdict(self)
        if view.get("nats_password"):
            view["nats_password"] = "***"
        return view

    def log_startup(self) -> None:
        log.info("%s settings: %s", self.service, self.public_view())


def resolve_device(requested: str) -> str:
    """`auto` picks CUDA when torch sees one; otherwise the requested device verbatim."""
    if requested != "auto":
        return requested
    try:
        import torch
    except ImportError:
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"
