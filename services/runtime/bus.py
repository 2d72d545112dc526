"""The NATS connection, the typed request helper and the telemetry publisher every service uses."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import nats
from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext

from leyline_schemas import (
    ErrorReply,
    EventPayload,
    LeylineDecodeError,
    RemoteError,
    Severity,
    TelemetryEvent,
    decode,
    encode,
    subjects,
)
from leyline_schemas.base import Message
from leyline_schemas.routes import Route
from services.runtime.settings import RuntimeSettings
from services.runtime.tracing import client_span, outgoing_headers

log = logging.getLogger("esper.bus")

Req = TypeVar("Req", bound=Message)
Rep = TypeVar("Rep", bound=Message)
R = TypeVar("R")

ERROR_HEADER = "Nats-Service-Error"
ERROR_CODE_HEADER = "Nats-Service-Error-Code"


def inbox_prefix(user: str) -> str:
    """The per-user inbox prefix `connect` sets, so no user can subscribe to another's replies."""
    return f"_INBOX.{user}"


#: Errors that mean the bus (not the work) failed: timeouts, lost connections, JetStream unavailable.
BUS_ERRORS: tuple[type[BaseException], ...] = (NatsError, TimeoutError, ConnectionError)


class BusUnavailable(ConnectionError):
    """No NATS server answered within the connect timeout."""


class RequestTimeout(TimeoutError):
    """No responder answered a request within its deadline, after retries."""


def tls_context(settings: RuntimeSettings) -> ssl.SSLContext | None:
    """A client TLS context from the settings' CA (server verification) and certificate/key (mutual TLS)."""
    if not (settings.nats_tls_ca or settings.nats_tls_cert):
        return None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=settings.nats_tls_ca or None)
    if settings.nats_tls_cert:
        context.load_cert_chain(settings.nats_tls_cert, settings.nats_tls_key or None)
    return context


async def connect(
    settings: RuntimeSettings,
    *,
    on_state: Callable[[str], Awaitable[None]] | None = None,
) -> Client:
    """Connect with retry until `connect_timeout`, reconnecting forever afterwards."""

    async def notify(state: str) -> None:
        log.info("%s: bus %s (%s)", settings.service, state, settings.nats_url)
        if on_state is not None:
            await on_state(state)

    async def disconnected() -> None:
        await notify("disconnected")

    async def reconnected() -> None:
        await notify("reconnected")

    refused = asyncio.Event()

    async def error(exc: Exception) -> None:
        if "authorization violation" in str(exc).lower():
            refused.set()
        log.warning("%s: bus error: %s", settings.service, exc)

    options: dict[str, Any] = {
        "servers": [u.strip() for u in settings.nats_url.split(",") if u.strip()],
        "name": settings.instance or settings.service,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": 0.5,
        "connect_timeout": 2,
        "allow_reconnect": True,
        "disconnected_cb": disconnected,
        "reconnected_cb": reconnected,
        "error_cb": error,
    }
    if settings.nats_user:
        options["user"] = settings.nats_user
        options["password"] = settings.nats_password
        # Replies arrive on a per-user inbox that the server lets only this user read (operator/security.py).
        options["inbox_prefix"] = inbox_prefix(settings.nats_user)
    if settings.nats_creds:
        options["user_credentials"] = settings.nats_creds
    context = tls_context(settings)
    if context is not None:
        options["tls"] = context

    deadline = time.monotonic() + settings.connect_timeout
    delay = 0.2
    while True:
        remaining = deadline - time.monotonic()
        try:
            # nats-py keeps retrying an initial connect forever when reconnects are unlimited: bound each attempt,
            # and give up at once when the server refuses the credentials (retrying cannot fix them).
            client = await _connect_unless_refused(options, refused, max(0.5, remaining))
        except BusUnavailable:
            raise
        except Exception as exc:  # nats raises several unrelated types for an absent server
            if time.monotonic() + delay > deadline:
                raise BusUnavailable(f"cannot reach NATS at {settings.nats_url}: {exc}") from exc
            log.info("%s: waiting for NATS at %s (%s)", settings.service, settings.nats_url, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
            continue
        await notify("connected")
        return client


async def _connect_unless_refused(options: dict[str, Any], refused: asyncio.Event, timeout: float) -> Client:
    connecting = asyncio.ensure_future(nats.connect(**options))
    refusal = asyncio.ensure_future(refused.wait())
    try:
        done, _ = await asyncio.wait({connecting, refusal}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        refusal.cancel()
    if connecting in done:
        return connecting.result()
    connecting.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await connecting
    if refusal in done:
        who = f"user {options['user']!r}" if options.get("user") else "an anonymous client"
        raise BusUnavailable(f"NATS at {', '.join(options['servers'])} refused {who}: authorization violation")
    raise TimeoutError(f"no answer within {timeout:.1f}s")


async def settle(nc: Client, timeout: int = 5) -> None:
    """Return once the server has processed everything this client sent before the call, subscriptions included.

    nats-py's flush() writes its PING straight to the socket, ahead of commands still queued for its flusher task
    (a subscription just made, for one), so its PONG does not prove the server has seen them: another connection's
    request can still find no responders. The first flush hands the queue to the flusher; the second one's PING
    goes out behind it, so its PONG does.
    """
    await nc.flush(timeout=timeout)
    await nc.flush(timeout=timeout)


async def retry_while_bus_fails(
    operation: Callable[[], Awaitable[R]],
    *,
    what: str,
    stopping: asyncio.Event | None = None,
    deadline: float | None = None,
    on_retry: Callable[[BaseException], None] | None = None,
    max_delay: float = 5.0,
) -> R:
    """Run `operation` until it completes, retrying with backoff while the bus fails (a NATS outage is waited out:
    the client reconnects by itself). For idempotent writes that nothing can proceed without. Any other error
    raises at once, and so does a bus error once `stopping` is set or the next try would start more than
    `deadline` seconds after the first.
    """
    give_up_at = None if deadline is None else time.monotonic() + deadline
    delay = 0.2
    while True:
        try:
            return await operation()
        except BUS_ERRORS as exc:
            if stopping is not None and stopping.is_set():
                raise
            if give_up_at is not None and time.monotonic() + delay > give_up_at:
                raise
            if on_retry is not None:
                on_retry(exc)
            log.warning("%s failed (%s: %s); retrying in %.1fs", what, type(exc).__name__, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay)


def is_error_reply(headers: dict[str, str] | None) -> bool:
    return bool(headers) and ERROR_HEADER in (headers or {})


async def request(
    nc: Client,
    route: Route[Req, Rep],
    message: Req,
    *,
    timeout: float = 5.0,
    retries: int = 2,
    backoff: float = 0.1,
    deadline: float | None = None,
) -> Rep:
    """Send `message` on `route.subject` and decode the answer as `route.reply` (leyline_schemas.routes).

    Timeouts and missing responders are retried with exponential backoff (at most `retries` more
    times, and never past `deadline` seconds in total); an ErrorReply raises RemoteError at once.
    """
    subject = route.subject
    payload = encode(message)
    started = time.monotonic()
    attempt = 0
    while True:
        remaining = None if deadline is None else deadline - (time.monotonic() - started)
        per_try = timeout if remaining is None else max(0.05, min(timeout, remaining))
        try:
            with client_span(subject):
                reply = await nc.request(subject, payload, timeout=per_try, headers=outgoing_headers() or None)
        except (TimeoutError, NatsTimeoutError, NoRespondersError) as exc:
            attempt += 1
            elapsed = time.monotonic() - started
            out_of_time = deadline is not None and elapsed + backoff >= deadline
            if attempt > retries or out_of_time:
                kind = "no responders" if isinstance(exc, NoRespondersError) else "timeout"
                raise RequestTimeout(f"{subject}: {kind} after {attempt} attempt(s), {elapsed:.2f}s") from exc
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)
            continue
        if is_error_reply(reply.headers):
            try:
                error = decode(reply.data, ErrorReply)
            except LeylineDecodeError:
                headers = reply.headers or {}
                error = ErrorReply(code="internal", message=headers.get(ERROR_HEADER, "error"), subject=subject)  # type: ignore[arg-type]
            raise RemoteError(error)
        return decode(reply.data, route.reply)


class TelemetryPublisher:
    """Publishes TelemetryEvents to the TELEMETRY stream; publishing never raises into the caller."""

    def __init__(self, js: JetStreamContext, source: str, on_failure: Callable[[str], None] | None = None) -> None:
        self._js = js
        self._source = source
        self._on_failure = on_failure

    def event(
        self,
        run_id: str,
        payload: EventPayload,
        *,
        env_id: int | None = None,
        episode: int | None = None,
        epoch: int | None = None,
        severity: Severity = Severity.INFO,
    ) -> TelemetryEvent:
        return TelemetryEvent(
            event_id=uuid.uuid4().hex,
            run_id=run_id,
            source=self._source,
            timestamp=time.time(),
            payload=payload,
            env_id=env_id,
            episode=episode,
            epoch=epoch,
            severity=severity,
        )

    async def publish(self, event: TelemetryEvent) -> bool:
        kind = type(event.payload).__struct_config__.tag
        subject = subjects.telemetry_subject(event.run_id, str(kind))
        try:
            await self._js.publish(subject, encode(event), headers={"Nats-Msg-Id": event.event_id}, timeout=5.0)
        except Exception as exc:  # telemetry is best-effort: the lifecycle operation must still complete
            log.warning("%s: telemetry publish failed (%s): %s", self._source, subject, exc)
            if self._on_failure is not None:
                self._on_failure(str(kind))
            return False
        return True

    async def emit(self, run_id: str, payload: EventPayload, **kwargs: Any) -> bool:
        return await self.publish(self.event(run_id, payload, **kwargs))
