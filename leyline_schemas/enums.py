"""Enumerations shared by every service, with the reference's integer values (reference/kasmina.md §1, §3.5, §4)."""

from __future__ import annotations

from enum import IntEnum, StrEnum


class SeedStage(IntEnum):
    """Lifecycle stage of a seed; value 5 (the removed SHADOWING stage) is reserved and never valid."""

    UNKNOWN = 0
    DORMANT = 1
    GERMINATED = 2
    TRAINING = 3
    BLENDING = 4
    HOLDING = 6
    FOSSILIZED = 7
    PRUNED = 8
    EMBARGOED = 9
    RESETTING = 10


ACTIVE_STAGES = frozenset({SeedStage.TRAINING, SeedStage.BLENDING, SeedStage.HOLDING, SeedStage.FOSSILIZED})
FAILURE_STAGES = frozenset({SeedStage.PRUNED, SeedStage.EMBARGOED, SeedStage.RESETTING})
LIVE_STAGES = frozenset({SeedStage.GERMINATED, SeedStage.TRAINING, SeedStage.BLENDING, SeedStage.HOLDING})


class GateLevel(IntEnum):
    """Quality gates by target stage; G4 (old shadowing gate) is removed and 4 is skipped."""

    G0 = 0
    G1 = 1
    G2 = 2
    G3 = 3
    G5 = 5


class LifecycleOp(IntEnum):
    WAIT = 0
    GERMINATE = 1
    SET_ALPHA_TARGET = 2
    PRUNE = 3
    FOSSILIZE = 4
    ADVANCE = 5
    #: Change a microstructured seed's internal level by one (plans/kasmina2-phase0.md §4.1; appended, Choice 1).
    GROW_INTERNAL = 6
    SHRINK_INTERNAL = 7


INTERNAL_OPS = frozenset({LifecycleOp.GROW_INTERNAL, LifecycleOp.SHRINK_INTERNAL})
#: Where an internal op may act: never before training, never on a fossil (custody) or a failed seed (§5.2).
INTERNAL_OP_STAGES = frozenset({SeedStage.TRAINING, SeedStage.BLENDING, SeedStage.HOLDING})


class BlueprintAction(IntEnum):
    """Blueprint indices in the action space and the embedding table (the null embedding index follows the last)."""

    NOOP = 0
    CONV_LIGHT = 1
    ATTENTION = 2
    NORM = 3
    DEPTHWISE = 4
    BOTTLENECK = 5
    CONV_SMALL = 6
    CONV_HEAVY = 7
    LORA = 8
    LORA_LARGE = 9
    MLP_SMALL = 10
    MLP = 11
    FLEX_ATTENTION = 12
    #: Up to four residual 3×3 conv rungs; its internal level is the number of active rungs (kasmina2 phase 0).
    CONV_LADDER = 13


#: The blueprint embedding's row for "no blueprint" (an empty slot), one past the last blueprint.
BLUEPRINT_NULL_INDEX = len(BlueprintAction)


class SeedInternalKind(IntEnum):
    """What a seed's internal level means (plans/kasmina2-phase0.md §4.1).

    Reserved, not defined yet: 2 = LORA_RANK_LADDER (phase 1), 3 = CHANNEL_GROUP_LADDER (phase 2),
    4 = ATTN_HEAD_GROUP_LADDER (phase 3).
    """

    NONE = 0
    CONV_LADDER = 1


class Topology(StrEnum):
    CNN = "cnn"
    TRANSFORMER = "transformer"


CNN_BLUEPRINTS = (
    BlueprintAction.NOOP,
    BlueprintAction.NORM,
    BlueprintAction.ATTENTION,
    BlueprintAction.CONV_LIGHT,
    BlueprintAction.DEPTHWISE,
    BlueprintAction.BOTTLENECK,
    BlueprintAction.CONV_SMALL,
    BlueprintAction.CONV_HEAVY,
    BlueprintAction.CONV_LADDER,
)
TRANSFORMER_BLUEPRINTS = (
    BlueprintAction.NOOP,
    BlueprintAction.NORM,
    BlueprintAction.ATTENTION,
    BlueprintAction.LORA,
    BlueprintAction.LORA_LARGE,
    BlueprintAction.MLP_SMALL,
    BlueprintAction.MLP,
    BlueprintAction.FLEX_ATTENTION,
)


def blueprints_for(topology: Topology) -> tuple[BlueprintAction, ...]:
    return CNN_BLUEPRINTS if topology is Topology.CNN else TRANSFORMER_BLUEPRINTS


def blueprint_name(blueprint: BlueprintAction) -> str:
    """The registry name of a blueprint (`conv_light`, `lora_large`, ...)."""
    return blueprint.name.lower()


class AlphaMode(IntEnum):
    HOLD = 0
    UP = 1
    DOWN = 2


class AlphaCurve(IntEnum):
    LINEAR = 1
    COSINE = 2
    SIGMOID = 3


class AlphaAlgorithm(IntEnum):
    ADD = 1
    MULTIPLY = 2
    GATE = 3


class BlendId(StrEnum):
    LINEAR = "linear"
    SIGMOID = "sigmoid"
    GATED = "gated"


class GerminationStyle(IntEnum):
    LINEAR_ADD = 0
    LINEAR_MULTIPLY = 1
    SIGMOID_ADD = 2
    GATED_GATE = 3


STYLE_TO_BLEND: dict[GerminationStyle, tuple[BlendId, AlphaAlgorithm]] = {
    GerminationStyle.LINEAR_ADD: (BlendId.LINEAR, AlphaAlgorithm.ADD),
    GerminationStyle.LINEAR_MULTIPLY: (BlendId.LINEAR, AlphaAlgorithm.MULTIPLY),
    GerminationStyle.SIGMOID_ADD: (BlendId.SIGMOID, AlphaAlgorithm.ADD),
    GerminationStyle.GATED_GATE: (BlendId.GATED, AlphaAlgorithm.GATE),
}


class TempoAction(IntEnum):
    FAST = 0
    STANDARD = 1
    SLOW = 2


TEMPO_EPOCHS: dict[TempoAction, int] = {TempoAction.FAST: 3, TempoAction.STANDARD: 5, TempoAction.SLOW: 8}


class AlphaTargetAction(IntEnum):
    HALF = 0
    SEVENTY = 1
    FULL = 2


ALPHA_TARGET_VALUES: dict[AlphaTargetAction, float] = {
    AlphaTargetAction.HALF: 0.5,
    AlphaTargetAction.SEVENTY: 0.7,
    AlphaTargetAction.FULL: 1.0,
}


class AlphaSpeedAction(IntEnum):
    INSTANT = 0
    FAST = 1
    MEDIUM = 2
    SLOW = 3


ALPHA_SPEED_STEPS: dict[AlphaSpeedAction, int] = {
    AlphaSpeedAction.INSTANT: 0,
    AlphaSpeedAction.FAST: 3,
    AlphaSpeedAction.MEDIUM: 5,
    AlphaSpeedAction.SLOW: 8,
}


class AlphaCurveAction(IntEnum):
    LINEAR = 0
    COSINE = 1
    SIGMOID_GENTLE = 2
    SIGMOID = 3
    SIGMOID_SHARP = 4


ALPHA_CURVE_SHAPES: dict[AlphaCurveAction, tuple[AlphaCurve, float]] = {
    AlphaCurveAction.LINEAR: (AlphaCurve.LINEAR, 12.0),
    AlphaCurveAction.COSINE: (AlphaCurve.COSINE, 12.0),
    AlphaCurveAction.SIGMOID_GENTLE: (AlphaCurve.SIGMOID, 6.0),
    AlphaCurveAction.SIGMOID: (AlphaCurve.SIGMOID, 12.0),
    AlphaCurveAction.SIGMOID_SHARP: (AlphaCurve.SIGMOID, 24.0),
}


class SurfaceType(IntEnum):
    BLOCK_END = 0
    PRE_POOL = 1
    POST_POOL = 2
    POST_ATTN = 3
    POST_MLP = 4


class RewardMode(StrEnum):
    SHAPED = "shaped"
    ESCROW = "escrow"
    BASIC = "basic"
    BASIC_PLUS = "basic_plus"
    SPARSE = "sparse"
    MINIMAL = "minimal"
    SIMPLIFIED = "simplified"


class RewardFamily(StrEnum):
    CONTRIBUTION = "contribution"
    LOSS = "loss"


class PolicyKind(StrEnum):
    HEURISTIC = "heuristic"
    RANDOM = "random"
    WAIT = "wait"
    LEARNED = "learned"
    #: A fixed lifecycle schedule (the proof experiment's non-adaptive control).
    SCHEDULE = "schedule"


class DecisionOutcome(StrEnum):
    """What became of the policy's decision at one step (ARCHITECTURE.md §5)."""

    APPLIED = "applied"
    WAITED = "waited"
    INVALID_ACTION = "invalid_action"
    POLICY_UNAVAILABLE = "policy_unavailable"
    POLICY_ERROR = "policy_error"
    GOVERNOR_ROLLBACK = "governor_rollback"
    MORPHOGENESIS_OFF = "morphogenesis_off"


class RunState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    STOPPED = "stopped"


class ErrorCode(StrEnum):
    MALFORMED = "malformed"
    WRONG_TYPE = "wrong_type"
    INVALID_REQUEST = "invalid_request"
    UNKNOWN_POLICY = "unknown_policy"
    UNKNOWN_RUN = "unknown_run"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"


class Severity(StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    CRITICAL = "critical"
