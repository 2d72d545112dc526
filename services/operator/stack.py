"""The embedded stack: nats-server plus the five services as supervised children (`esper up`, `esper run`)."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from services.operator import security
from services.operator.embedded import EmbeddedNats, start_nats
from services.operator.registry import SERVICE_NAMES
from services.operator.supervisor import Supervisor, service_child

log = logging.getLogger("esper.stack")


@dataclass
class LocalStack:
    """nats-server (unless `nats_url` is given) and one supervised child per service.

    With `secure`, the server includes the authorization block of services/operator/security.py, every service
    connects as its own user with a fresh password, and the operator's credentials are written to
    `<state_dir>/cli.env` (owner-readable only).
    """

    state_dir: Path
    services: tuple[str, ...] = SERVICE_NAMES
    nats_url: str | None = None
    nats_port: int | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    output: Callable[[str], None] | None = None
    secure: bool = False
    nats: EmbeddedNats | None = None
    supervisor: Supervisor | None = None
    passwords: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def url(self) -> str:
        if self.nats_url:
            return self.nats_url
        assert self.nats is not None, "stack not started"
        return self.nats.url

    def credentials(self, user: str) -> dict[str, str]:
        """The `ESPER_NATS_*` variables that connect as `user` (empty on an open bus)."""
        if not self.secure:
            return {}
        return security.client_environment(user, self.passwords[user])

    def credentials_file(self, user: str = "cli") -> Path:
        return self.state_dir / f"{user}.env"

    async def start(self) -> str:
        if self.secure and self.nats_url:
            raise ValueError("a secure stack starts its own nats-server: do not pass nats_url")
        if not self.nats_url:
            self.nats = self._start_nats()
        children = []
        for name in self.services:
            env = {**self.extra_env, **self.credentials(name)}
            children.append(service_child(name, self.url, env))
        self.supervisor = Supervisor(children, output=self.output)
        await self.supervisor.start()
        return self.url

    def _start_nats(self) -> EmbeddedNats:
        nats_dir = self.state_dir / "nats"
        if not self.secure:
            return start_nats(nats_dir, port=self.nats_port)
        self.passwords = security.generate_passwords()
        auth = nats_dir / "auth.conf"
        auth.parent.mkdir(parents=True, exist_ok=True)
        auth.write_text(security.render_authorization())
        server = start_nats(
            nats_dir, port=self.nats_port, include=auth, env=security.server_environment(self.passwords)
        )
        for user in ("cli", "viewer"):
            security.write_env_file(
                self.credentials_file(user), {"ESPER_NATS_URL": server.url, **self.credentials(user)}
            )
        return server

    async def restart_nats(self, down_for: float = 0.0, kill: bool = True) -> None:
        """Stop the embedded server (SIGKILL by default), wait `down_for` seconds, start it on the same port and
        JetStream directory; services reconnect by themselves."""
        assert self.nats is not None, "no embedded nats-server to restart"
        if kill:
            self.nats.kill()
        else:
            self.nats.stop()
        await asyncio.sleep(down_for)
        await asyncio.to_thread(self.nats.restart)

    def kill(self, service: str, sig: int = signal.SIGKILL) -> int:
        """Signal one service's process (the supervisor restarts it when it dies); returns the pid signalled."""
        assert self.supervisor is not None, "stack not started"
        pid = self.supervisor.pid(service)
        if pid is None:
            raise ProcessLookupError(f"{service} is not running")
        self.supervisor.signal(service, sig)
        return pid

    async def stop(self) -> None:
        if self.supervisor is not None:
            await self.supervisor.stop()
        if self.nats is not None:
            self.nats.stop()
