"""Kasmina ↔ Tamiyo: observation, masks and the factored decision."""

from __future__ import annotations

from leyline_schemas.base import Message, Record
from leyline_schemas.enums import (
    AlphaCurveAction,
    AlphaSpeedAction,
    AlphaTargetAction,
    BlueprintAction,
    GerminationStyle,
    LifecycleOp,
    TempoAction,
    Topology,
)
from leyline_schemas.lifecycle import SlotState
from leyline_schemas.reports import TrainingSignals

HEAD_NAMES = ("slot", "blueprint", "style", "tempo", "alpha_target", "alpha_speed", "alpha_curve", "op")


class ActionMasks(Record, frozen=True, kw_only=True):
    """Legal values per head (reference/tamiyo_simic.md §2.3–2.5); `slot_by_op[op][slot]`."""

    op: list[bool]
    slot_by_op: list[list[bool]]
    blueprint: list[bool]
    style: list[bool]
    tempo: list[bool]
    alpha_target: list[bool]
    alpha_speed: list[bool]
    alpha_curve: list[bool]


class FactoredAction(Record, frozen=True, kw_only=True):
    """One value per head; `slot` indexes the enabled slots in action order."""

    op: LifecycleOp = LifecycleOp.WAIT
    slot: int = 0
    blueprint: BlueprintAction = BlueprintAction.NOOP
    style: GerminationStyle = GerminationStyle.SIGMOID_ADD
    tempo: TempoAction = TempoAction.STANDARD
    alpha_target: AlphaTargetAction = AlphaTargetAction.FULL
    alpha_speed: AlphaSpeedAction = AlphaSpeedAction.INSTANT
    alpha_curve: AlphaCurveAction = AlphaCurveAction.LINEAR


class HeadValues(Record, frozen=True, kw_only=True):
    """A float per head: log-probabilities or normalised entropies."""

    op: float = 0.0
    slot: float = 0.0
    blueprint: float = 0.0
    style: float = 0.0
    tempo: float = 0.0
    alpha_target: float = 0.0
    alpha_speed: float = 0.0
    alpha_curve: float = 0.0


class DecisionRequest(Message, frozen=True, kw_only=True):
    """Everything a stateless policy needs for one decision; `policy_state` is opaque to all but the policy."""

    run_id: str
    env_id: int
    episode: int
    epoch: int
    policy_id: str
    topology: Topology
    slot_ids: list[str]
    observation: list[float]
    blueprint_indices: list[int]
    masks: ActionMasks
    slots: list[SlotState]
    signals: TrainingSignals = TrainingSignals()
    policy_state: bytes = b""
    deterministic: bool = False
    #: As StepRequest.min_policy_version: Tamiyo decides only with this version of the line or a newer one.
    min_policy_version: int = 0


class Decision(Message, frozen=True, kw_only=True):
    """A policy's factored action with per-head log-probs, V(s) and the new recurrent state."""

    policy_id: str
    policy_version: int
    action: FactoredAction
    log_probs: HeadValues = HeadValues()
    entropies: HeadValues = HeadValues()
    value: float = 0.0
    policy_state: bytes = b""
    confidence: float = 1.0
    reason: str = ""
