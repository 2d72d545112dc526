"""Run control: the state changes of a run after it started, in one place (stop, resume, end, and the rule for a run
whose client went away).

A run is RUNNING until every env is done (COMPLETED), an env fails (FAILED), or someone stops it (STOPPED, with the
reason). STOPPED and FAILED runs can be resumed: their envs are leased again and go on from the episodes they
finished; an episode that was in progress starts again as its next attempt. Each change is a compare-and-set on the
run's status and is announced once, as RunFinished or RunResumed telemetry, so Karn and the TUI show it.

A run that a client follows carries a `RunAttachment` the client renews; once it has lapsed for `grace` seconds more
(seen by a connected worker, so a bus restart alone does not end a run), the run is STOPPED with the reason. A run
without an attachment is detached: it runs on across client exits and `esper down` / `esper up`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import msgspec
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from leyline_schemas import (
    RunAttachment,
    RunFinished,
    RunResumed,
    RunSpec,
    RunState,
    RunStatus,
    Severity,
    encode,
    subjects,
)
from services.runtime.bus import TelemetryPublisher
from services.runtime.kv import read_message
from services.tolaria import leases

#: Seconds an attachment must have lapsed, as seen by a connected worker, before its run is stopped.
ATTACHMENT_GRACE = 10.0
RESUMABLE = (RunState.STOPPED, RunState.FAILED)


class NotResumable(ValueError):
    """Only a STOPPED or FAILED run can be resumed."""


async def end_run(
    kv: KeyValue, telemetry: TelemetryPublisher, run_id: str, state: RunState, message: str
) -> RunStatus | None:
    """Move a RUNNING run to `state`; only the caller whose compare-and-set did it announces the end.

    Returns the stored status (unchanged when the run was not RUNNING), None when there is no such run.
    """
    transitioned: list[bool] = []

    def finish(status: RunStatus) -> RunStatus | None:
        transitioned.clear()  # called again after a lost compare-and-set: only the attempt written counts
        if status.state is not RunState.RUNNING:
            return None
        transitioned.append(True)
        return msgspec.structs.replace(status, state=state, message=message, updated_at=time.time())

    status = await leases.update_status(kv, run_id, finish)
    if transitioned:
        severity = Severity.INFO if state in (RunState.COMPLETED, RunState.STOPPED) else Severity.ERROR
        await telemetry.emit(run_id, RunFinished(state=state.value, message=message), severity=severity)
    return status


async def resume_run(kv: KeyValue, telemetry: TelemetryPublisher, run_id: str, by: str) -> RunStatus | None:
    """Put a STOPPED or FAILED run back to RUNNING (a RUNNING one is left as it is); NotResumable otherwise."""
    previous: list[RunState] = []

    def resume(status: RunStatus) -> RunStatus | None:
        previous.clear()
        if status.state is RunState.RUNNING:
            return None
        if status.state not in RESUMABLE:
            raise NotResumable(f"run {run_id!r} is {status.state.value}: only a stopped or failed run resumes")
        previous.append(status.state)
        note = f"resumed by {by}" if by else "resumed"
        return msgspec.structs.replace(status, state=RunState.RUNNING, message=note, updated_at=time.time())

    status = await leases.update_status(kv, run_id, resume)
    if previous:
        await telemetry.emit(run_id, RunResumed(previous_state=previous[0].value, by=by))
    return status


async def attach(kv: KeyValue, run_id: str, client_id: str, ttl: float) -> None:
    """Write or renew a client's attachment to a run."""
    attachment = RunAttachment(run_id=run_id, client_id=client_id, ttl=ttl, expires_at=time.time() + ttl)
    await kv.put(subjects.attach_key(run_id), encode(attachment))


async def detach(kv: KeyValue, run_id: str) -> None:
    with contextlib.suppress(KeyNotFoundError):
        await kv.delete(subjects.attach_key(run_id))


async def read_attachment(kv: KeyValue, run_id: str) -> RunAttachment | None:
    return await read_message(kv, subjects.attach_key(run_id), RunAttachment)


@dataclass
class AbandonedRuns:
    """Stops the running runs whose client went away: attachment lapsed, and still lapsed `grace` seconds after a
    connected worker first saw it so. Meanwhile their envs are not leased (after `esper up`, a run whose client is
    gone does not start again only to be stopped)."""

    grace: float = ATTACHMENT_GRACE
    lapsed_since: dict[str, float] = field(default_factory=dict)

    async def sweep(self, kv: KeyValue, telemetry: TelemetryPublisher, specs: Sequence[RunSpec]) -> set[str]:
        """Check every running run once; returns the ids not to lease now (stopped here, or lapsed and in grace)."""
        now = time.time()
        held_back = set()
        for spec in specs:
            attachment = await read_attachment(kv, spec.run_id)
            if attachment is None or attachment.expires_at > now:
                self.lapsed_since.pop(spec.run_id, None)
                continue
            held_back.add(spec.run_id)
            first_seen = self.lapsed_since.setdefault(spec.run_id, now)
            if now - first_seen < self.grace:
                continue
            silent = now - attachment.expires_at + attachment.ttl
            reason = f"its client {attachment.client_id} went away (no heartbeat for {silent:.0f} s)"
            await end_run(kv, telemetry, spec.run_id, RunState.STOPPED, reason)
            with contextlib.suppress(KeyWrongLastSequenceError):
                await detach(kv, spec.run_id)
            self.lapsed_since.pop(spec.run_id, None)
        return held_back
