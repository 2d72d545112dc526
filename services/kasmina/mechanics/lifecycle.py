"""The lifecycle rules a process that holds seeds in memory may apply itself, as Kasmina the service would.

Kasmina owns every slot's state. Tolaria runs the seeds beside its host and, when its governor rolls a diverged host
back, must prune the live seeds at once, in the same process, with Kasmina's own rule (reference/tolaria.md §4.5).
Benches and tests that build an env without the bus seat a seed the same way. They go through this module, never
through `services.kasmina.transitions`, so the rules stay Kasmina's and this is the whole surface lent out.
"""

from __future__ import annotations

from leyline_schemas.lifecycle import SlotState
from services.kasmina.transitions import GOVERNOR_PRUNE_REASONS, SlotChange, advance_state, germinate_state, prune_state

__all__ = ["GOVERNOR_PRUNE_REASONS", "SlotChange", "advance_state", "germinate_state", "governor_prune"]


def governor_prune(state: SlotState, reason: str) -> SlotChange:
    """Prune a live seed because the governor rolled its host back; `reason` is one of GOVERNOR_PRUNE_REASONS."""
    if reason not in GOVERNOR_PRUNE_REASONS:
        raise ValueError(f"{reason!r} is not a governor prune reason ({', '.join(sorted(GOVERNOR_PRUNE_REASONS))})")
    return prune_state(state, reason, "governor")
