"""Kasmina's bus adapter: `esper.v1.kasmina.step` → tick, observe, ask Tamiyo, validate, answer mutations."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from leyline_schemas import (
    Decision,
    DecisionOutcome,
    DecisionRequest,
    ErrorCode,
    RemoteError,
    StepDirective,
    StepRequest,
    routes,
)
from services.kasmina.lifecycle import InvalidStepRequest
from services.kasmina.step import complete_step, prepare_step
from services.runtime.bus import RequestTimeout, request
from services.runtime.service import Endpoint, RequestRejected, ServiceContext, ServiceDefinition
from services.runtime.settings import RuntimeSettings

log = logging.getLogger("esper.kasmina")


@dataclass(frozen=True, kw_only=True)
class KasminaSettings(RuntimeSettings):
    """Kasmina's settings: how long to wait for Tamiyo before answering WAIT (ARCHITECTURE.md §5)."""

    service: str = "kasmina"
    decision_timeout: float = 2.0
    decision_deadline: float = 8.0


#: Kasmina keeps no state between requests: each StepRequest carries the slots it rules on.
KasminaContext = ServiceContext[KasminaSettings, None]

#: Pause before asking Tamiyo again for a line version it has not loaded yet.
RETRY_UNAVAILABLE_S = 0.1


async def decide(
    req: StepRequest, decision_request: DecisionRequest, ctx: KasminaContext
) -> tuple[Decision | None, DecisionOutcome, str]:
    """Ask Tamiyo, retrying with backoff within the deadline; a missing policy is a WAIT, never a dead run.

    A refusal as UNAVAILABLE (the step needs a version of its line that Tamiyo has not loaded yet) is asked again
    while the deadline lasts, so that the step is decided by that version rather than refused.
    """
    settings = ctx.settings
    deadline = time.monotonic() + settings.decision_deadline
    while True:
        try:
            decision = await request(
                ctx.nc,
                routes.TAMIYO_DECIDE,
                decision_request,
                timeout=settings.decision_timeout,
                retries=1000,
                deadline=max(deadline - time.monotonic(), 0.0),
            )
        except RequestTimeout as exc:
            ctx.metrics.count_event("policy_unavailable")
            return None, DecisionOutcome.POLICY_UNAVAILABLE, str(exc)
        except RemoteError as exc:
            if exc.reply.code is ErrorCode.UNAVAILABLE and time.monotonic() + RETRY_UNAVAILABLE_S < deadline:
                ctx.metrics.count_event("policy_version_retried")
                await asyncio.sleep(RETRY_UNAVAILABLE_S)
                continue
            ctx.metrics.count_event("policy_error")
            log.warning("tamiyo refused %s env %d epoch %d: %s", req.run_id, req.env_id, req.epoch, exc)
            return None, DecisionOutcome.POLICY_ERROR, exc.reply.message
        return decision, DecisionOutcome.APPLIED, ""


async def handle_step(req: StepRequest, ctx: KasminaContext) -> StepDirective:
    try:
        prepared = prepare_step(req)
    except InvalidStepRequest as exc:
        raise RequestRejected(ErrorCode.INVALID_REQUEST, str(exc), exc.field) from exc
    decision, outcome, reason = await decide(req, prepared.decision_request(), ctx)
    directive, _ = complete_step(prepared, decision, outcome, reason)
    if directive.outcome is DecisionOutcome.INVALID_ACTION:
        ctx.metrics.count_event("invalid_action")
    return directive


def definition() -> ServiceDefinition[KasminaSettings, None]:
    return ServiceDefinition(
        name="kasmina",
        description="Lifecycle authority: ticks slots, builds observations and masks, validates decisions",
        endpoints=[Endpoint("step", routes.KASMINA_STEP, handle_step, max_concurrency=64)],
    )
