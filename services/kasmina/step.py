"""Kasmina's step as pure calls: prepare (validate, tick, observe, mask) and complete (validate the decision).

The bus adapter puts a Tamiyo request between the two; the learning sandbox calls a policy directly.
"""

from __future__ import annotations

from dataclasses import dataclass

from leyline_schemas import (
    ActionMasks,
    Decision,
    DecisionOutcome,
    DecisionRequest,
    FactoredAction,
    LifecycleOp,
    StepDirective,
    StepRequest,
)
from services.kasmina.lifecycle import ActionResult, TickResult, execute, tick, validate_request
from services.kasmina.masks import compute_masks
from services.observation.features import build_observation


@dataclass(frozen=True)
class PreparedStep:
    """The ticked slots and what the policy sees of them."""

    request: StepRequest
    ticked: TickResult
    observation: list[float]
    blueprint_indices: list[int]
    masks: ActionMasks

    def decision_request(self) -> DecisionRequest:
        req = self.request
        return DecisionRequest(
            run_id=req.run_id,
            env_id=req.env_id,
            episode=req.episode,
            epoch=req.epoch,
            policy_id=req.policy_id,
            topology=req.slot_config.topology,
            slot_ids=[spec.slot_id for spec in req.slot_config.slots],
            observation=self.observation,
            blueprint_indices=self.blueprint_indices,
            masks=self.masks,
            slots=self.ticked.slots,
            signals=req.report.signals,
            policy_state=req.policy_state,
            deterministic=req.deterministic,
            min_policy_version=req.min_policy_version,
        )


def prepare_step(req: StepRequest) -> PreparedStep:
    """Validate the request (InvalidStepRequest names the field), tick every slot, build observation and masks."""
    validate_request(req)
    ticked = tick(req)
    observation, blueprint_indices = build_observation(req, ticked.slots)
    masks = compute_masks(ticked.slots, req.slot_config, req.lifecycle, req.total_seeds, epoch=req.epoch)
    return PreparedStep(req, ticked, observation, blueprint_indices, masks)


def complete_step(
    prepared: PreparedStep, decision: Decision | None, outcome: DecisionOutcome, reason: str = ""
) -> tuple[StepDirective, ActionResult]:
    """Execute the decision (None: no policy answered, so WAIT) and answer with the directive.

    `outcome` and `reason` describe how the decision was obtained; an invalid action or one that changes nothing
    overrides them.
    """
    req = prepared.request
    action = decision.action if decision is not None else FactoredAction()
    result = execute(action, req, prepared.ticked.slots)
    if decision is not None:
        if not result.valid:
            outcome, reason = DecisionOutcome.INVALID_ACTION, result.invalid_reason
        elif result.effective_op is LifecycleOp.WAIT or not result.mutations:
            outcome, reason = DecisionOutcome.WAITED, result.invalid_reason
    directive = StepDirective(
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
        observed_slots=prepared.ticked.slots,
        slots=result.slots,
        observation=prepared.observation,
        blueprint_indices=prepared.blueprint_indices,
        masks=prepared.masks,
        policy_state=decision.policy_state if decision is not None else req.policy_state,
        lifecycle_events=[*prepared.ticked.events, *result.events],
    )
    return directive, result
