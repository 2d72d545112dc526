"""The service harness: endpoints declared in one place, NATS micro registration, admin app, drain on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Generic, cast

from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.micro import add_service
from nats.micro.request import Request
from nats.micro.service import EndpointConfig, Service, ServiceConfig
from typing_extensions import TypeVar  # TypeVar defaults (PEP 696) arrive in typing with Python 3.13

from leyline_schemas import (
    ErrorCode,
    ErrorReply,
    LeylineDecodeError,
    Message,
    ServiceStarted,
    ServiceStopped,
    decode,
    encode,
    subjects,
)
from leyline_schemas.routes import Route
from services import __version__
from services.runtime import jetstream
from services.runtime.admin import AdminServer, admin_app
from services.runtime.bus import ERROR_CODE_HEADER, ERROR_HEADER, TelemetryPublisher, connect, settle
from services.runtime.metrics import ServiceMetrics
from services.runtime.settings import RuntimeSettings, resolve_device
from services.runtime.tracing import configure_tracing, server_span

log = logging.getLogger("esper.service")

Req = TypeVar("Req", bound=Message)
Rep = TypeVar("Rep", bound=Message)
# With the defaults, a bare `ServiceContext` (or `ServiceDefinition`) is any service's: code that serves several
# services writes it so. The context is read-only, hence covariant: a TamiyoContext is a ServiceContext.
SettingsT = TypeVar("SettingsT", bound=RuntimeSettings, default=RuntimeSettings)
StateT = TypeVar("StateT", default=Any)
SettingsT_co = TypeVar("SettingsT_co", bound=RuntimeSettings, covariant=True, default=RuntimeSettings)
StateT_co = TypeVar("StateT_co", covariant=True, default=Any)

#: Lifecycle events of services are published under this pseudo run id.
SYSTEM_RUN = "_system"


class RequestRejected(Exception):
    """Raised by an endpoint's core call for a request it cannot serve; becomes an ErrorReply."""

    def __init__(self, code: ErrorCode, message: str, field: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field


@dataclass(frozen=True)
class ServiceContext(Generic[SettingsT_co, StateT_co]):
    """What an endpoint handler or background task may use: the service's own settings type and state object.

    `state` is what the definition's `on_start` returned (None before it returns, and for a service without one).
    """

    settings: SettingsT_co
    nc: Client
    js: JetStreamContext
    metrics: ServiceMetrics
    telemetry: TelemetryPublisher
    device: str
    stopping: asyncio.Event
    state: StateT_co


@dataclass(frozen=True)
class Endpoint(Generic[Req, Rep, SettingsT, StateT]):
    """One request/reply endpoint: its route (subject, request and reply types) and the async call that answers it."""

    name: str
    route: Route[Req, Rep]
    handle: Callable[[Req, ServiceContext[SettingsT, StateT]], Awaitable[Rep]]
    queue_group: str = subjects.QUEUE_GROUP
    max_concurrency: int = 32

    @property
    def subject(self) -> str:
        return self.route.subject


@dataclass
class ServiceDefinition(Generic[SettingsT, StateT]):
    """A service: its endpoints, background tasks and readiness, declared in one place.

    `on_start` runs once connected, before any endpoint or background task, and returns the service's state.
    """

    name: str
    description: str
    endpoints: Sequence[Endpoint[Any, Any, SettingsT, StateT]] = ()
    background: Sequence[Callable[[ServiceContext[SettingsT, StateT]], Coroutine[Any, Any, None]]] = ()
    on_start: Callable[[ServiceContext[SettingsT, None]], Awaitable[StateT]] | None = None
    on_stop: Callable[[ServiceContext[SettingsT, StateT]], Awaitable[None]] | None = None
    uses_torch: bool = False


async def drain_endpoints(micro: Service) -> None:
    """Stop new deliveries to every endpoint of `micro` and let the requests already delivered be handled.

    nats.py offers no public way to do this: `Service.stop()` unsubscribes, which drops requests already delivered
    to this client, and the endpoints' subscriptions are private. This is the one place that reaches inside
    (`Service._endpoints`, `Endpoint._subscription`); getattr keeps a renamed attribute from breaking a drain.
    """
    for endpoint in getattr(micro, "_endpoints", []):
        sub = getattr(endpoint, "_subscription", None)
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.drain()


class ServiceRunner(Generic[SettingsT, StateT]):
    """Runs one ServiceDefinition until SIGTERM/SIGINT, then drains: no request in flight is dropped."""

    def __init__(self, definition: ServiceDefinition[SettingsT, StateT], settings: SettingsT) -> None:
        self.definition = definition
        self.settings = settings
        self.metrics = ServiceMetrics(definition.name)
        self.device = resolve_device(settings.device) if definition.uses_torch else "cpu"
        self.stopping = asyncio.Event()
        self._inflight: set[asyncio.Task[None]] = set()
        self._ready = False
        self.failed = False  # stopped because a background task failed, not because it was told to
        self._micro: Service | None = None
        self.admin_port = 0
        self.context: ServiceContext[SettingsT, StateT] | None = None

    def readiness(self) -> tuple[bool, str]:
        if self.stopping.is_set():
            return False, "draining"
        if not self._ready:
            return False, "starting"
        if self.context is None or not self.context.nc.is_connected:
            return False, "bus disconnected"
        return True, "ok"

    async def _bus_state(self, state: str) -> None:
        self.metrics.connected.labels(self.definition.name).set(1 if state in ("connected", "reconnected") else 0)
        if state == "reconnected":
            self.metrics.reconnects.labels(self.definition.name).inc()

    async def run(self) -> None:
        name = self.definition.name
        self.settings.log_startup()
        configure_tracing(name, self.settings.instance)
        admin = AdminServer(
            admin_app(name, self.settings.instance, self.device, __version__, self.metrics, self.readiness),
            self.settings.admin_host,
            self.settings.admin_port,
        )
        admin.start()
        self.admin_port = admin.port
        log.info("%s: admin on http://%s:%d (device %s)", name, self.settings.admin_host, admin.port, self.device)

        loop = asyncio.get_running_loop()
        if threading.current_thread() is threading.main_thread() and sys.platform != "win32":
            # Signal handlers can only be installed from the main thread (tests may run a service elsewhere).
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stopping.set)

        nc = await connect(self.settings, on_state=self._bus_state)
        js = nc.jetstream()
        await jetstream.bootstrap(js, on_retry=lambda _: self.metrics.count_event("bootstrap_retry"))
        telemetry = TelemetryPublisher(
            js, self.settings.instance, lambda kind: self.metrics.count_event(f"telemetry_drop_{kind}")
        )
        shared = (self.settings, nc, js, self.metrics, telemetry, self.device, self.stopping)
        starting: ServiceContext[SettingsT, None] = ServiceContext(*shared, None)
        state = None if self.definition.on_start is None else await self.definition.on_start(starting)
        # A definition without on_start has no state: its StateT is None, which is what `state` holds then.
        ctx = ServiceContext(*shared, cast(StateT, state))
        self.context = ctx
        # What exists once the service is up (modules, torch, loaded policies) lives as long as the process: take it
        # out of the cyclic collector's view, so that a full collection in the middle of a request (a p99 spike of
        # ~90 ms with torch imported, measured) scans only what requests allocate.
        gc.collect()
        gc.freeze()

        self._micro = await add_service(
            nc,
            ServiceConfig(
                name=f"esper-{name}",
                version=__version__,
                description=self.definition.description,
                metadata={
                    "service": name,
                    "device": self.device,
                    "instance": self.settings.instance,
                    "admin_port": str(admin.port),
                    "admin_host": self.settings.admin_host,
                    # Discovery answers before the endpoints below exist: callers count them to tell ready.
                    "endpoints": str(len(self.definition.endpoints)),
                },
                queue_group=subjects.QUEUE_GROUP,
            ),
        )
        for endpoint in self.definition.endpoints:
            await self._micro.add_endpoint(
                EndpointConfig(
                    name=endpoint.name,
                    subject=endpoint.subject,
                    queue_group=endpoint.queue_group,
                    handler=self._dispatcher(endpoint, ctx),
                    metadata={"request": endpoint.route.request.__name__},
                )
            )
        # Ready means the server routes to these endpoints: a caller that saw us ready finds a responder.
        await settle(ctx.nc)
        background = [
            asyncio.create_task(task(ctx), name=f"{name}-bg-{i}") for i, task in enumerate(self.definition.background)
        ]
        self._ready = True
        await telemetry.emit(
            SYSTEM_RUN,
            ServiceStarted(service=name, instance=self.settings.instance, version=__version__, device=self.device),
        )
        log.info("%s: ready (%d endpoints)", name, len(self.definition.endpoints))

        stop_wait = asyncio.create_task(self.stopping.wait())
        await asyncio.wait([stop_wait, *background], return_when=asyncio.FIRST_COMPLETED)
        for task in background:
            if task.done() and not task.cancelled() and task.exception() is not None:
                log.error("%s: background task failed", name, exc_info=task.exception())
                self.failed = True
                self.stopping.set()
        await self._drain(ctx, background, admin)

    async def _drain(
        self, ctx: ServiceContext[SettingsT, StateT], background: list[asyncio.Task[None]], admin: AdminServer
    ) -> None:
        name = self.definition.name
        self.stopping.set()
        log.info("%s: draining", name)
        if self._micro is not None:
            await drain_endpoints(self._micro)
        deadline = time.monotonic() + self.settings.drain_timeout
        while self._inflight and time.monotonic() < deadline:
            await asyncio.wait(list(self._inflight), timeout=max(0.0, deadline - time.monotonic()))
        for task in background:
            task.cancel()
        for task in background:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, timeout=max(1.0, deadline - time.monotonic()))
        if self.definition.on_stop is not None:
            await self.definition.on_stop(ctx)
        await ctx.telemetry.emit(
            SYSTEM_RUN, ServiceStopped(service=name, instance=self.settings.instance, reason="drain")
        )
        # Endpoint subscriptions are drained above; the rest (pull consumers) just needs a flush before closing.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ctx.nc.flush(), timeout=5)
        with contextlib.suppress(Exception):
            await ctx.nc.close()
        await admin.stop()
        log.info("%s: stopped", name)

    def _dispatcher(
        self, endpoint: Endpoint[Any, Any, SettingsT, StateT], ctx: ServiceContext[SettingsT, StateT]
    ) -> Callable[[Request], Awaitable[None]]:
        limit = asyncio.Semaphore(endpoint.max_concurrency)

        async def dispatch(request: Request) -> None:
            # Handle each request in its own task so that one slow call (Kasmina waiting on Tamiyo) does not
            # serialise the endpoint; the semaphore bounds the work in flight.
            await limit.acquire()
            task = asyncio.create_task(self._answer(endpoint, ctx, request))
            self._inflight.add(task)

            def done(t: asyncio.Task[None]) -> None:
                self._inflight.discard(t)
                limit.release()

            task.add_done_callback(done)

        return dispatch

    async def _answer(
        self, endpoint: Endpoint[Any, Any, SettingsT, StateT], ctx: ServiceContext[SettingsT, StateT], request: Request
    ) -> None:
        service = self.definition.name
        started = time.perf_counter()
        with server_span(endpoint.subject, request.headers):
            try:
                message = decode(request.data, endpoint.route.request)
                reply = await endpoint.handle(message, ctx)
            except LeylineDecodeError as exc:
                code = ErrorCode.WRONG_TYPE if exc.wrong_type else ErrorCode.MALFORMED
                await self._reply_error(request, endpoint, code, str(exc), exc.field)
                self.metrics.decode_failures.labels(service, endpoint.name).inc()
            except RequestRejected as exc:
                await self._reply_error(request, endpoint, exc.code, exc.message, exc.field)
            except Exception as exc:
                log.exception("%s: %s failed", service, endpoint.subject)
                await self._reply_error(request, endpoint, ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}", "")
            else:
                await request.respond(encode(reply))
                self.metrics.requests.labels(service, endpoint.name, "ok").inc()
        self.metrics.latency.labels(service, endpoint.name).observe(time.perf_counter() - started)

    async def _reply_error(
        self, request: Request, endpoint: Endpoint[Any, Any, Any, Any], code: ErrorCode, message: str, field_path: str
    ) -> None:
        self.metrics.requests.labels(self.definition.name, endpoint.name, "error").inc()
        self.metrics.bad_requests.labels(self.definition.name, endpoint.name, code.value).inc()
        reply = ErrorReply(code=code, message=message, subject=endpoint.subject, field=field_path)
        with contextlib.suppress(Exception):
            await request.respond(
                encode(reply), headers={ERROR_HEADER: " ".join(message.split())[:200], ERROR_CODE_HEADER: code.value}
            )


def run_service(definition: ServiceDefinition[SettingsT, StateT], settings: SettingsT) -> int:
    """Run a service in the foreground until it is told to stop; the exit status: 1 when it stopped on a failure."""
    logging.basicConfig(
        level=getattr(logging, settings.log_level.upper(), logging.INFO),
        format=f"%(asctime)s %(levelname)s {definition.name} %(name)s: %(message)s",
    )
    runner = ServiceRunner(definition, settings)
    asyncio.run(runner.run())
    return 1 if runner.failed else 0
