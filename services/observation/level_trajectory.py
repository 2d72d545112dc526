"""How a microstructured seed's level moved over its life: the anti-thrash statistics of plans/kasmina2-phase0.md
§9 item 3.

Pure and torch-free. A trajectory is the seed's applied internal ops in order, as directions (+1 a grow, −1 a
shrink). Karn's ladder report and Simic's optional thrash penalty (§8.3) read the same functions, so the store
stays rebuildable from the log and the penalty measures what the report shows (Choice 12). The plan puts them in
`services/kasmina/ladder.py`; no service imports another here, so they live in this shared library.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

GROW = 1
SHRINK = -1

#: §9 item 3: ops per live epoch up to 0.4 is healthy, above 0.6 is thrash; in between is caution.
HEALTHY_DENSITY = 0.4
THRASH_DENSITY = 0.6
#: §9 item 3: a reversal rate below 0.3 is healthy, above 0.7 is thrash (early exploration shows 0.4–0.6).
HEALTHY_REVERSAL_RATE = 0.3
THRASH_REVERSAL_RATE = 0.7
#: A seed is settled when its level has not changed in its last this many live epochs.
SETTLE_EPOCHS = 5
#: §8.3: the thrash penalty looks at a seed's last 10 ops, and only once it has 4.
THRASH_WINDOW_OPS = 10
THRASH_MIN_OPS = 4


def direction(from_level: int, to_level: int) -> int:
    """GROW or SHRINK for one level change; a change by anything but one level is not a Phase 0 op (§4.5)."""
    if abs(to_level - from_level) != 1:
        raise ValueError(f"level change {from_level} -> {to_level}: an internal op moves exactly one level")
    return GROW if to_level > from_level else SHRINK


def _checked(directions: Sequence[int]) -> Sequence[int]:
    for i, d in enumerate(directions):
        if d not in (GROW, SHRINK):
            raise ValueError(f"level trajectory: direction {i} is {d!r}, but every internal op moves by +1 or -1")
    return directions


def reversals(directions: Sequence[int]) -> int:
    """How many ops went the other way from the op before them."""
    d = _checked(directions)
    return sum(1 for before, after in pairwise(d) if before != after)


def reversal_rate(directions: Sequence[int]) -> float:
    """reversals / (ops − 1), in [0, 1]; 0 with fewer than two ops (nothing to reverse)."""
    return reversals(directions) / (len(directions) - 1) if len(directions) >= 2 else 0.0


def windowed_reversal_rate(
    directions: Sequence[int], window: int = THRASH_WINDOW_OPS, min_ops: int = THRASH_MIN_OPS
) -> float:
    """The reversal rate of the last `window` ops, or 0 while there are fewer than `min_ops` (§8.3)."""
    if window < 2 or min_ops < 2:
        raise ValueError(f"thrash window needs window >= 2 and min_ops >= 2, got {window} and {min_ops}")
    recent = directions[-window:]
    return reversal_rate(recent) if len(recent) >= min_ops else 0.0


@dataclass(frozen=True)
class LevelTrajectoryStats:
    """One seed life's level trajectory in numbers (§9 item 3)."""

    ops: int
    reversals: int
    reversal_rate: float
    net_level_change: int
    density: float


def level_trajectory_stats(directions: Sequence[int], live_epochs: int) -> LevelTrajectoryStats:
    """Ops, reversals, reversal rate, net level change (final − initial) and ops per live epoch.

    Live epochs are the seed's epochs in TRAINING, BLENDING or HOLDING; an internal op only acts in one, at most
    once an epoch, so more ops than live epochs is a broken record and raises.
    """
    d = _checked(directions)
    if live_epochs < len(d):
        raise ValueError(f"level trajectory: {len(d)} ops in {live_epochs} live epochs, but ops are one per live epoch")
    return LevelTrajectoryStats(
        ops=len(d),
        reversals=reversals(d),
        reversal_rate=reversal_rate(d),
        net_level_change=sum(d),
        density=len(d) / live_epochs if live_epochs else 0.0,
    )


def settled(change_epochs: Sequence[int], live_epochs: Sequence[int], window: int = SETTLE_EPOCHS) -> bool:
    """True when no level change falls in the seed's last `window` live epochs (a seed never live is settled)."""
    tail = sorted(live_epochs)[-window:]
    return not tail or all(epoch < tail[0] for epoch in change_epochs)


def band(value: float, healthy_below: float, thrash_above: float) -> str:
    """`healthy`, `caution` or `thrash` for a density or reversal rate against its two thresholds."""
    if value < healthy_below:
        return "healthy"
    return "thrash" if value > thrash_above else "caution"


def density_band(density: float) -> str:
    return band(density, HEALTHY_DENSITY, THRASH_DENSITY)


def reversal_band(rate: float) -> str:
    return band(rate, HEALTHY_REVERSAL_RATE, THRASH_REVERSAL_RATE)
