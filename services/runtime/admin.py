"""The admin HTTP app every service serves: /healthz, /readyz and Prometheus /metrics."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Any

import uvicorn
from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from services.runtime.metrics import ServiceMetrics

log = logging.getLogger("esper.admin")


def admin_app(
    service: str,
    instance: str,
    device: str,
    version: str,
    metrics: ServiceMetrics,
    readiness: Callable[[], tuple[bool, str]],
) -> FastAPI:
    app = FastAPI(title=f"esper {service} admin", version=version)

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "service": service, "instance": instance, "device": device, "version": version}

    @app.get("/readyz")
    def readyz(response: Response) -> dict[str, Any]:
        ready, reason = readiness()
        if not ready:
            response.status_code = 503
        return {"ready": ready, "reason": reason, "service": service}

    @app.get("/metrics")
    def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind before serving so that port 0 resolves to a known ephemeral port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


class AdminServer:
    """Uvicorn serving the admin app inside the service's event loop."""

    def __init__(self, app: FastAPI, host: str, port: int) -> None:
        self._socket = bind_socket(host, port)
        self.port: int = self._socket.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
        self._server = uvicorn.Server(config)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve(sockets=[self._socket]))

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout=5)
            except (TimeoutError, asyncio.CancelledError):
                log.warning("admin server did not stop in time")
        self._socket.close()
