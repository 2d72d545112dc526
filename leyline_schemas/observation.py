"""The layout of Obs V3, the flat vector every policy reads (reference/tamiyo_simic.md §1.1).

Kasmina's observation builder writes it, Tamiyo checks requests against it and the policy network sizes its input
from it: the widths live here once.
"""

from __future__ import annotations

from leyline_schemas.enums import BLUEPRINT_NULL_INDEX, LifecycleOp, SeedStage

#: The scalar features of the whole host, in order; the one-hot of the last op follows them (§1.3–1.9).
BASE_SCALAR_FIELDS: tuple[str, ...] = (
    "epoch",
    "val_loss",
    "val_accuracy",
    *(f"val_loss_history_{i}" for i in range(5)),
    *(f"val_accuracy_history_{i}" for i in range(5)),
    "training_fraction",
    "blending_fraction",
    "holding_or_fossilized_fraction",
    "last_action_succeeded",
)
#: The features of one occupied slot, in order (§1.10–1.16). `internal_level_norm` is appended last
#: (plans/kasmina2-phase0.md §5.4) so the 31 before it keep their positions.
SLOT_FIELDS: tuple[str, ...] = (
    "occupied",
    *(f"stage_{stage.name}" for stage in SeedStage),
    "alpha",
    "contribution",
    "contribution_velocity",
    "blend_tempo",
    "alpha_target",
    "alpha_mode",
    "alpha_steps_total",
    "alpha_steps_done",
    "time_to_target",
    "alpha_velocity",
    "alpha_algorithm",
    "interaction_sum",
    "gradient_norm",
    "gradient_health",
    "has_vanishing",
    "has_exploding",
    "previous_gradient_health",
    "epochs_in_stage",
    "counterfactual_freshness",
    "epochs_total",
    "internal_level_norm",
)
BASE_FEATURES = len(BASE_SCALAR_FIELDS) + len(LifecycleOp)
SLOT_FEATURES = len(SLOT_FIELDS)
#: An empty slot's blueprint index; occupied slots carry 0 ≤ index < BLUEPRINT_NULL_INDEX (§1.17).
EMPTY_SLOT_BLUEPRINT = -1
MAX_BLUEPRINT_INDEX = BLUEPRINT_NULL_INDEX - 1


def observation_size(num_slots: int) -> int:
    """Width of the flat observation for `num_slots` enabled slots (§1.1)."""
    return BASE_FEATURES + SLOT_FEATURES * num_slots
