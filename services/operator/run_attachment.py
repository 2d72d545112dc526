"""A client's attachment to the run it follows (the rule is in services/tolaria/run_control.py): a heartbeat while
it follows, the run stopped with the reason when the client leaves before the end, detached when it ends."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass

from nats.aio.client import Client
from nats.js.kv import KeyValue

from leyline_schemas import RemoteError, RunState, RunStopRequest, routes
from services.runtime import jetstream
from services.runtime.bus import BUS_ERRORS, request
from services.tolaria import run_control

log = logging.getLogger("esper.run")

#: Who follows a run, as its attachment names it.
CLIENT_ID = f"cli-{socket.gethostname()}-{os.getpid()}"


def attach_ttl() -> float:
    """Seconds a client may be silent before its run counts as abandoned (ESPER_ATTACH_TTL, default 30: a bus
    restart of a few seconds does not end a run)."""
    return float(os.environ.get("ESPER_ATTACH_TTL", "30"))


@dataclass
class Leaving:
    """Why the client leaves the run: empty when it followed the run to its end (nothing to stop)."""

    reason: str = "its client stopped following it (interrupted)"


@contextlib.asynccontextmanager
async def attached(nc: Client, run_id: str) -> AsyncIterator[Leaving]:
    """Attach to `run_id` before it is submitted and keep the attachment alive; on the way out, stop the run with
    `Leaving.reason` unless that is empty, then detach. An exception or Ctrl-C leaves with the default reason."""
    kv = await jetstream.runs_bucket(nc.jetstream())
    ttl = attach_ttl()
    await run_control.attach(kv, run_id, CLIENT_ID, ttl)
    heartbeat = asyncio.create_task(_keep_attached(kv, run_id, ttl))
    leaving = Leaving()
    try:
        yield leaving
    finally:
        heartbeat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await heartbeat
        if leaving.reason:
            await _stop(nc, run_id, leaving.reason)
        with contextlib.suppress(*BUS_ERRORS):
            await run_control.detach(kv, run_id)


async def _keep_attached(kv: KeyValue, run_id: str, ttl: float) -> None:
    while True:
        await asyncio.sleep(max(0.5, ttl / 6))
        try:
            await run_control.attach(kv, run_id, CLIENT_ID, ttl)
        except BUS_ERRORS as exc:  # the bus is away: the next beat tries again, the TTL covers the gap
            log.debug("attachment heartbeat for %s failed (%s)", run_id, exc)


async def _stop(nc: Client, run_id: str, reason: str) -> None:
    with contextlib.suppress(*BUS_ERRORS, RemoteError):
        stopped = await request(nc, routes.RUNS_STOP, RunStopRequest(run_id=run_id, reason=reason), timeout=10.0)
        if stopped.state is RunState.STOPPED:
            print(f"esper: run {run_id} stopped: {stopped.message}", file=sys.stderr)
