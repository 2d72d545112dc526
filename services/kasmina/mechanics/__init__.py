"""Kasmina's mechanics library: the torch side of seeds (blueprints, blend operators, slots, gradient telemetry).

Tolaria imports it so that seeds live in the same process as their host; Kasmina the service never does.
"""

from services.kasmina.mechanics.blending import GatedBlend, blend, blend_add, blend_gate, blend_multiply, gate_alpha
from services.kasmina.mechanics.blueprints import (
    Blueprint,
    BlueprintInfo,
    blueprint_catalog,
    blueprints_of,
    build_seed,
    get_blueprint,
    group_norm_groups,
    zero_init_final_layer,
)
from services.kasmina.mechanics.gradients import GradientMonitor, SeedGradientReport, gradient_health, gradient_ratio
from services.kasmina.mechanics.ladder import ConvLadderSeed, LadderRung, MicrostructuredSeed
from services.kasmina.mechanics.model import (
    MorphogeneticModel,
    SlottedHost,
    build_alpha_overrides,
    expand_for_configs,
)
from services.kasmina.mechanics.slot import (
    SLOT_CHECKPOINT_VERSION,
    GerminationError,
    SeedSlot,
    SlotCheckpointError,
    SlotSyncError,
)

__all__ = [
    "SLOT_CHECKPOINT_VERSION",
    "Blueprint",
    "BlueprintInfo",
    "ConvLadderSeed",
    "GatedBlend",
    "GerminationError",
    "GradientMonitor",
    "LadderRung",
    "MicrostructuredSeed",
    "MorphogeneticModel",
    "SeedGradientReport",
    "SeedSlot",
    "SlotCheckpointError",
    "SlotSyncError",
    "SlottedHost",
    "blend",
    "blend_add",
    "blend_gate",
    "blend_multiply",
    "blueprint_catalog",
    "blueprints_of",
    "build_alpha_overrides",
    "build_seed",
    "expand_for_configs",
    "gate_alpha",
    "get_blueprint",
    "gradient_health",
    "gradient_ratio",
    "group_norm_groups",
    "zero_init_final_layer",
]
