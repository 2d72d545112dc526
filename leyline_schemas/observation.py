"""The layout of Obs V3, the flat vector every policy reads (reference/tamiyo_simic.md §1.1).

Kasmina's observation builder writes it, Tamiyo checks requests against it and the policy network sizes its input
from it: the widths live here once.
"""

from __future__ import annotations

from leyline_schemas.enums import BLUEPRINT_NULL_INDEX

BASE_FEATURES = 23
SLOT_FEATURES = 31
#: An empty slot's blueprint index; occupied slots carry 0 ≤ index < BLUEPRINT_NULL_INDEX (§1.17).
EMPTY_SLOT_BLUEPRINT = -1
MAX_BLUEPRINT_INDEX = BLUEPRINT_NULL_INDEX - 1


def observation_size(num_slots: int) -> int:
    """Width of the flat observation for `num_slots` enabled slots (§1.1)."""
    return BASE_FEATURES + SLOT_FEATURES * num_slots
