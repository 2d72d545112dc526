"""Seed and slot state: everything Kasmina needs to tick a slot, carried by Tolaria between steps."""

from __future__ import annotations

from collections.abc import Sequence

from leyline_schemas.base import Record
from leyline_schemas.enums import (
    AlphaAlgorithm,
    AlphaCurve,
    AlphaMode,
    BlendId,
    BlueprintAction,
    SeedInternalKind,
    SeedStage,
    SurfaceType,
    Topology,
    blueprints_for,
)

MAX_INTERNAL_LEVEL = 4


class InternalSpec(Record, frozen=True, kw_only=True):
    """A blueprint's internal structure: what its level means, how high it goes and where it starts (§4.2)."""

    kind: SeedInternalKind
    max_level: int
    initial_level: int


#: The single source of truth for microstructured seeds; Kasmina germinates from it and the mechanics build from it.
SEED_INTERNALS: dict[BlueprintAction, InternalSpec] = {
    BlueprintAction.CONV_LADDER: InternalSpec(kind=SeedInternalKind.CONV_LADDER, max_level=4, initial_level=1),
}
NO_INTERNALS = InternalSpec(kind=SeedInternalKind.NONE, max_level=1, initial_level=0)


def internal_spec(blueprint: BlueprintAction) -> InternalSpec:
    """The internal structure of `blueprint`; (NONE, max 1, level 0) for every seed without one."""
    return SEED_INTERNALS.get(blueprint, NO_INTERNALS)


def _check_internals() -> None:
    for blueprint, spec in SEED_INTERNALS.items():
        if spec.kind is SeedInternalKind.NONE:
            raise ValueError(f"SEED_INTERNALS[{blueprint.name}] has kind NONE")
        if not 1 <= spec.max_level <= MAX_INTERNAL_LEVEL:
            raise ValueError(f"SEED_INTERNALS[{blueprint.name}].max_level {spec.max_level} is outside [1, 4]")
        if not 0 <= spec.initial_level <= spec.max_level:
            raise ValueError(f"SEED_INTERNALS[{blueprint.name}].initial_level {spec.initial_level} is outside [0, max]")


_check_internals()


class AlphaControllerState(Record, frozen=True, kw_only=True):
    """The alpha controller of one slot (reference/kasmina.md §4.3)."""

    alpha: float = 0.0
    alpha_start: float = 0.0
    alpha_target: float = 0.0
    mode: AlphaMode = AlphaMode.HOLD
    curve: AlphaCurve = AlphaCurve.LINEAR
    steepness: float = 12.0
    steps_total: int = 0
    steps_done: int = 0


class SeedMetrics(Record, frozen=True, kw_only=True):
    """Accuracy, counterfactual and gradient metrics of one seed (reference/kasmina.md §6, item 104)."""

    epochs_total: int = 0
    epochs_in_current_stage: int = 0
    initial_val_accuracy: float = 0.0
    current_val_accuracy: float = 0.0
    best_val_accuracy: float = 0.0
    accuracy_at_stage_start: float = 0.0
    accuracy_at_germination: float = 0.0
    counterfactual_contribution: float | None = None
    contribution_velocity: float = 0.0
    epochs_since_counterfactual: int | None = None
    interaction_sum: float = 0.0
    boost_received: float = 0.0
    upstream_alpha_sum: float = 0.0
    downstream_alpha_sum: float = 0.0
    seed_gradient_norm_ratio: float | None = None
    gradient_norm: float | None = None
    gradient_health: float | None = None
    previous_gradient_health: float | None = None
    has_vanishing: bool | None = None
    has_exploding: bool | None = None
    seed_param_count: int = 0
    host_param_count: int = 0


class SlotState(Record, frozen=True, kw_only=True):
    """One slot's lifecycle state; stage DORMANT with an empty seed_id is an empty slot."""

    slot_id: str
    stage: SeedStage = SeedStage.DORMANT
    seed_id: str = ""
    blueprint: BlueprintAction = BlueprintAction.NOOP
    blend: BlendId = BlendId.SIGMOID
    alpha_algorithm: AlphaAlgorithm = AlphaAlgorithm.ADD
    blend_tempo_epochs: int = 5
    alpha_target_on_blend: float = 1.0
    controller: AlphaControllerState = AlphaControllerState()
    previous_stage: SeedStage = SeedStage.UNKNOWN
    previous_epochs_in_stage: int = 0
    germinated_epoch: int = -1
    isolate_gradients: bool = False
    is_healthy: bool = True
    prune_reason: str = ""
    prune_initiator: str = ""
    auto_pruned: bool = False
    metrics: SeedMetrics = SeedMetrics()
    #: What `internal_level` means; NONE for seeds without internal structure (plans/kasmina2-phase0.md §4.3).
    internal_kind: SeedInternalKind = SeedInternalKind.NONE
    #: Active internal parts (ladder rungs), in [0, internal_max_level].
    internal_level: int = 0
    #: L; at least 1 even for NONE, so a normalised level never divides by zero.
    internal_max_level: int = 1
    #: The epoch of the last applied GROW/SHRINK_INTERNAL, −1 when there was none.
    internal_level_changed_epoch: int = -1

    @property
    def occupied(self) -> bool:
        return self.stage is not SeedStage.DORMANT and self.stage is not SeedStage.UNKNOWN


class SlotSpec(Record, frozen=True, kw_only=True):
    """An injection point of the host (reference/kasmina.md §2.1)."""

    slot_id: str
    channels: int
    order: int
    surface: SurfaceType = SurfaceType.BLOCK_END
    position: float = 0.0
    #: The rank of a CNN host's feature maps here: 2 for images (N,C,H,W), 1 for signals (N,C,L); unused by
    #: transformer hosts.
    spatial_dims: int = 2


class SlotConfig(Record, frozen=True, kw_only=True):
    """The host's enabled slots in action (row-major) order and its topology."""

    topology: Topology
    slots: list[SlotSpec]
    host_param_count: int = 0


class LifecycleConfig(Record, frozen=True, kw_only=True):
    """Per-run lifecycle knobs that Kasmina applies to every step."""

    max_seeds: int = 0
    permissive_gates: bool = True
    auto_forward_gates: list[int] = []
    max_epochs: int = 25
    #: The blueprints a germination may use; empty means the topology's full set (NOOP never counts).
    blueprints: list[BlueprintAction] = []
    #: Epochs after a level change during which internal ops are masked (0: never; a timing mask, off by default).
    internal_op_cooldown_epochs: int = 0
    #: Allow internal ops only while alpha holds (a pivot lever, off by default).
    internal_ops_require_alpha_hold: bool = False


def foreign_blueprints(allowlist: Sequence[BlueprintAction], topology: Topology) -> list[int]:
    """The positions of a blueprint allowlist (`LifecycleConfig.blueprints`, `RunSpec.blueprints`) that name a
    blueprint the topology does not have; Kasmina refuses them per step, Tolaria at RUNS_START."""
    available = set(blueprints_for(topology))
    return [k for k, blueprint in enumerate(allowlist) if blueprint not in available]


def allowed_blueprints(allowlist: Sequence[BlueprintAction], topology: Topology) -> frozenset[BlueprintAction]:
    """The blueprints a germination may use: the allowlist (empty: all) within the topology's set, NOOP never.

    Empty for a non-empty allowlist that names nothing usable, which both validators refuse.
    """
    available = set(blueprints_for(topology)) - {BlueprintAction.NOOP}
    return frozenset(available & set(allowlist) if allowlist else available)


class CommittedSeed(Record, frozen=True, kw_only=True):
    """A seed at full amplitude at an episode's end (FOSSILIZED, or HOLDING at α = 1): part of the architecture."""

    slot_id: str
    blueprint: BlueprintAction
    blend: BlendId = BlendId.SIGMOID
    alpha_algorithm: AlphaAlgorithm = AlphaAlgorithm.ADD
    params: int = 0
    #: A microstructured seed's level when it was committed (a ladder's active rungs); 0 for every other seed.
    internal_level: int = 0


class TopologyManifest(Record, frozen=True, kw_only=True):
    """The committed architecture an episode ended with (plans/proof-baselines.md §3.3), replayable from scratch.

    `manifest_hash` covers the task, the host's parameter count and the committed seeds, not where it came from, so
    a static-final replay of it carries the same hash.
    """

    task: str
    host_params: int
    seeds: list[CommittedSeed] = []
    manifest_hash: str = ""
    source_run: str = ""
    source_env: int = -1
    source_episode: int = -1
