"""Kasmina's bus adapter: `esper.v1.kasmina.step` → tick, observe, ask Tamiyo, validate, answer mutations."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from leyline_schemas import (
    Decision,
    DecisionOutcome,
    DecisionRequest,
    ErrorCode,
    FactoredAction,
    LifecycleOp,
    RemoteError,
    StepDirective,
    StepRequest,
    subjects,
)
from services.kasmina.lifecycle import InvalidStepRequest, execute, tick, validate_request
from services.kasmina.masks import compute_masks
from services.kasmina.observation import build_observation
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


async def decide(
    req: StepRequest, decision_request: DecisionRequest, ctx: ServiceContext
) -> tuple[Decision | None, DecisionOutcome, str]:
    """Ask Tamiyo, retrying with backoff within the deadline; a missing policy is a WAIT, never a dead run."""
    settings = ctx.settings
    assert isinstance(settings, KasminaSettings)
    try:
        decision = await request(
            ctx.nc,
            subjects.TAMIYO_DECIDE,
            decision_request,
            Decision,
            timeout=settings.decision_timeout,
            retries=1000,
            deadline=settings.decision_deadline,
        )
    except RequestTimeout as exc:
        ctx.metrics.count_event("policy_unavailable")
        return None, DecisionOutcome.POLICY_UNAVAILABLE, str(exc)
    except RemoteError as exc:
        ctx.metrics.count_event("policy_error")
        log.warning("tamiyo refused %s env %d epoch %d: %s", req.run_id, req.env_id, req.epoch, exc)
        return None, DecisionOutcome.POLICY_ERROR, exc.reply.message
    return decision, DecisionOutcome.APPLIED, ""


async def handle_step(req: StepRequest, ctx: ServiceContext) -> StepDirective:
    try:
        validate_request(req)
    except InvalidStepRequest as exc:
        raise RequestRejected(ErrorCode.INVALID_REQUEST, str(exc), exc.field) from exc
    ticked = tick(req)
    observation, blueprint_indices = build_observation(req, ticked.slots)
    masks = compute_masks(ticked.slots, req.slot_config, req.lifecycle, req.total_seeds)
    decision_request = DecisionRequest(
        run_id=req.run_id,
        env_id=req.env_id,
        episode=req.episode,
        epoch=req.epoch,
        policy_id=req.policy_id,
        topology=req.slot_config.topology,
        slot_ids=[spec.slot_id for spec in req.slot_config.slots],
        observation=observation,
        blueprint_indices=blueprint_indices,
        masks=masks,
        slots=ticked.slots,
        signals=req.report.signals,
        policy_state=req.policy_state,
        deterministic=req.deterministic,
    )
    decision, outcome, reason = await decide(req, decision_request, ctx)
    action = decision.action if decision is not None else FactoredAction()
    result = execute(action, req, ticked.slots)
    if decision is not None:
        if not result.valid:
            outcome = DecisionOutcome.INVALID_ACTION
            reason = result.invalid_reason
            ctx.metrics.count_event("invalid_action")
        elif result.effective_op is LifecycleOp.WAIT or not result.mutations:
            outcome = DecisionOutcome.WAITED
            reason = result.invalid_reason
    return StepDirective(
        run_id=req.run_id,
        env_id=req.env_id,
        episode=req.episode,
        epoch=req.epoch,
        outcome=outcome,
        effective_op=result.effective_op,
        raw_action=action,
        decision=decision,
        invalid_reason=reason,
        target_slot=result.target_slot,
        mutations=result.mutations,
        observed_slots=ticked.slots,
        slots=result.slots,
        observation=observation,
        blueprint_indices=blueprint_indices,
        masks=masks,
        policy_state=decision.policy_state if decision is not None else req.policy_state,
        lifecycle_events=[*ticked.events, *result.events],
    )


def definition() -> ServiceDefinition:
    return ServiceDefinition(
        name="kasmina",
        description="Lifecycle authority: ticks slots, builds observations and masks, validates decisions",
        endpoints=[Endpoint("step", subjects.KASMINA_STEP, StepRequest, handle_step, max_concurrency=64)],
    )
