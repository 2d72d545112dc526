"""The embedded stack: nats-server plus the five services as supervised children (`esper up`, `esper run`)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from services.runtime.embedded import EmbeddedNats, start_nats
from services.runtime.supervisor import SERVICES, Supervisor, service_child

log = logging.getLogger("esper.stack")


@dataclass
class LocalStack:
    """nats-server (unless `nats_url` is given) and one supervised child per service."""

    state_dir: Path
    services: tuple[str, ...] = SERVICES
    nats_url: str | None = None
    nats_port: int | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    output: Callable[[str], None] | None = None
    nats: EmbeddedNats | None = None
    supervisor: Supervisor | None = None

    @property
    def url(self) -> str:
        if self.nats_url:
            return self.nats_url
        assert self.nats is not None, "stack not started"
        return self.nats.url

    async def start(self) -> str:
        if not self.nats_url:
            self.nats = start_nats(self.state_dir / "nats", port=self.nats_port)
        children = [service_child(name, self.url, self.extra_env) for name in self.services]
        self.supervisor = Supervisor(children, output=self.output)
        await self.supervisor.start()
        return self.url

    async def stop(self) -> None:
        if self.supervisor is not None:
            await self.supervisor.stop()
        if self.nats is not None:
            self.nats.stop()
