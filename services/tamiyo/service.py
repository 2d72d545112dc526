"""Tamiyo's bus adapter: `esper.v1.tamiyo.decide` → the policy named in the request."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from leyline_schemas import Decision, DecisionRequest, ErrorCode, subjects
from services.runtime.service import Endpoint, RequestRejected, ServiceContext, ServiceDefinition
from services.runtime.settings import RuntimeSettings
from services.tamiyo.policies import PolicyBook, UnknownPolicy
from services.tamiyo.requests import InvalidDecisionRequest, validate_decision_request

log = logging.getLogger("esper.tamiyo")


@dataclass(frozen=True, kw_only=True)
class TamiyoSettings(RuntimeSettings):
    service: str = "tamiyo"


def book(ctx: ServiceContext) -> PolicyBook:
    policies = ctx.state.get("policies")
    if policies is None:
        policies = ctx.state["policies"] = PolicyBook()
    assert isinstance(policies, PolicyBook)
    return policies


async def handle_decide(request: DecisionRequest, ctx: ServiceContext) -> Decision:
    try:
        policy = book(ctx).get(request.policy_id)
    except UnknownPolicy as exc:
        raise RequestRejected(ErrorCode.UNKNOWN_POLICY, str(exc), "policy_id") from exc
    try:
        validate_decision_request(request)
    except InvalidDecisionRequest as exc:
        raise RequestRejected(ErrorCode.INVALID_REQUEST, str(exc), exc.field) from exc
    try:
        decision = policy.decide(request)
    except ValueError as exc:
        raise RequestRejected(ErrorCode.INVALID_REQUEST, f"{policy.policy_id}: {exc}", "") from exc
    ctx.metrics.count_event(f"decision_{policy.policy_id}")
    return decision


async def start(ctx: ServiceContext) -> None:
    policies = book(ctx)
    log.info("tamiyo serves %s", ", ".join(policies.ids()))


def definition() -> ServiceDefinition:
    return ServiceDefinition(
        name="tamiyo",
        description="Policy inference: heuristic, random, wait and learned policies",
        endpoints=[Endpoint("decide", subjects.TAMIYO_DECIDE, DecisionRequest, handle_decide, max_concurrency=64)],
        on_start=start,
        uses_torch=True,
    )
