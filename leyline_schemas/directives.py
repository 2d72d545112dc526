"""Kasmina → Tolaria: the lifecycle mutations to apply to the model, as a tagged union."""

from __future__ import annotations

from leyline_schemas.base import Message, Record
from leyline_schemas.decisions import ActionMasks, Decision, FactoredAction
from leyline_schemas.enums import (
    AlphaAlgorithm,
    AlphaCurve,
    BlendId,
    BlueprintAction,
    DecisionOutcome,
    LifecycleOp,
    SeedStage,
)
from leyline_schemas.lifecycle import LifecycleConfig, SlotConfig, SlotState
from leyline_schemas.reports import EpochReport
from leyline_schemas.telemetry import LifecyclePayload


class Germinate(Record, frozen=True, kw_only=True, tag="germinate", tag_field="kind"):
    slot_id: str
    seed_id: str
    blueprint: BlueprintAction
    blend: BlendId
    alpha_algorithm: AlphaAlgorithm
    blend_tempo_epochs: int
    alpha_target: float


class Advance(Record, frozen=True, kw_only=True, tag="advance", tag_field="kind"):
    slot_id: str
    from_stage: SeedStage
    to_stage: SeedStage


class SetAlphaTarget(Record, frozen=True, kw_only=True, tag="set_alpha_target", tag_field="kind"):
    slot_id: str
    target: float
    steps: int
    curve: AlphaCurve
    steepness: float
    alpha_algorithm: AlphaAlgorithm


class Prune(Record, frozen=True, kw_only=True, tag="prune", tag_field="kind"):
    """Instant when `steps` is 0, otherwise a scheduled blend-out that completes on a later tick."""

    slot_id: str
    steps: int
    curve: AlphaCurve
    steepness: float
    reason: str
    initiator: str


class Fossilize(Record, frozen=True, kw_only=True, tag="fossilize", tag_field="kind"):
    slot_id: str


class SetInternalLevel(Record, frozen=True, kw_only=True, tag="set_internal_level", tag_field="kind"):
    """Switch a microstructured seed from `from_level` to `to_level` active parts; one step at a time in phase 0."""

    slot_id: str
    seed_id: str
    from_level: int
    to_level: int


Mutation = Germinate | Advance | SetAlphaTarget | Prune | Fossilize | SetInternalLevel


class StepRequest(Message, frozen=True, kw_only=True):
    """Tolaria → Kasmina once per epoch: the report, the slot states and the policy's opaque state."""

    run_id: str
    env_id: int
    episode: int
    epoch: int
    policy_id: str
    slot_config: SlotConfig
    lifecycle: LifecycleConfig
    report: EpochReport
    slots: list[SlotState]
    policy_state: bytes = b""
    last_op: LifecycleOp = LifecycleOp.WAIT
    last_action_succeeded: bool = True
    total_seeds: int = 0
    deterministic: bool = False
    #: The oldest version of the learned line `policy_id` that may decide this step (0: any). Strictly on-policy
    #: learning sets it to the round, so that no step of round r acts with a version older than r.
    min_policy_version: int = 0


class StepDirective(Message, frozen=True, kw_only=True):
    """Kasmina's answer: the decision, its validation and the mutations to apply.

    `observed_slots` are the ticked states the policy saw (the pre-action state rewards use);
    `slots` are the states after the mutations, which Tolaria adopts once it has applied them.
    """

    run_id: str
    env_id: int
    episode: int
    epoch: int
    outcome: DecisionOutcome
    effective_op: LifecycleOp
    raw_action: FactoredAction
    decision: Decision | None = None
    invalid_reason: str = ""
    target_slot: str = ""
    mutations: list[Mutation] = []
    observed_slots: list[SlotState] = []
    slots: list[SlotState] = []
    observation: list[float] = []
    blueprint_indices: list[int] = []
    masks: ActionMasks | None = None
    policy_state: bytes = b""
    lifecycle_events: list[LifecyclePayload] = []
