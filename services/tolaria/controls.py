"""The off-switch control (plans/proof-baselines.md §3.1): an env trained with no growth machinery at all.

With `RunSpec.morphogenesis = False` Tolaria builds the host with no slots and never asks Kasmina; each epoch's
step record carries this synthetic WAIT directive instead, so the run is stored and scored like any other. Off-switch
and static-initial episodes of the same env seed must then train identically (the inertness check).
"""

from __future__ import annotations

from leyline_schemas import DecisionOutcome, FactoredAction, LifecycleOp, StepDirective, StepRequest


def morphogenesis_off_directive(step: StepRequest) -> StepDirective:
    """The WAIT that stands in for Kasmina's answer when the run has morphogenesis off."""
    return StepDirective(
        run_id=step.run_id,
        env_id=step.env_id,
        episode=step.episode,
        epoch=step.epoch,
        outcome=DecisionOutcome.MORPHOGENESIS_OFF,
        effective_op=LifecycleOp.WAIT,
        raw_action=FactoredAction(),
        observed_slots=list(step.slots),
        slots=list(step.slots),
    )
