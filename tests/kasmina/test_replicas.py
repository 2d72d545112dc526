"""I15 in a service world: there is no DDP rank 0, but every Kasmina replica must reach the same gate decision.

Kasmina is stateless and deterministic, so two replicas (or one asked twice) answer a StepRequest identically.
"""

from __future__ import annotations

import leyline_schemas as L
from services.kasmina.bench import lifecycle_request as _lifecycle_request
from services.kasmina.lifecycle import execute, tick
from services.kasmina.masks import compute_masks
from services.observation.features import build_observation


def answer(request: L.StepRequest, action: L.FactoredAction) -> tuple[object, ...]:
    ticked = tick(request)
    observation = build_observation(request, ticked.slots)
    masks = compute_masks(ticked.slots, request.slot_config, request.lifecycle, 2)
    result = execute(action, request, ticked.slots)
    return (
        ticked.slots,
        ticked.events,
        observation,
        masks,
        result.effective_op,
        result.mutations,
        result.slots,
        result.events,
        result.valid,
    )


def test_replicas_agree_on_every_gate_decision() -> None:
    for n_slots in (3, 10):
        request = L.decode(L.encode(_lifecycle_request(n_slots)), L.StepRequest)
        for op in L.LifecycleOp:
            for slot in range(n_slots):
                action = L.FactoredAction(op=op, slot=slot, blueprint=L.BlueprintAction.NORM)
                first, second = answer(request, action), answer(request, action)
                assert first == second
