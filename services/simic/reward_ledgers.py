"""Per-env, per-episode reward memory: escrow credit, BASIC_PLUS drips, the scaffold ledger (reference §6.11–6.15)
and each seed's internal-op directions (plans/kasmina2-phase0.md §8.3).

One `EpisodeRewardState` lives beside each env's episode buffer in the learner and starts fresh with the episode.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from leyline_schemas.enums import SeedStage
from leyline_schemas.reports import PairInteraction
from services.simic.reward_inputs import SlotView

HINDSIGHT_WEIGHT = 0.1
HINDSIGHT_SCALE = 0.1
HINDSIGHT_CAP = 0.2
DRIP_MIN_EPOCHS = 5
DRIP_CLIP_LOW = -0.05
DRIP_CLIP_HIGH = 0.1


@dataclass
class DripPool:
    """The deferred part of one fossil's bonus, paid per epoch in proportion to its current contribution (§6.15)."""

    per_epoch: float
    epochs_left: int


@dataclass
class ScaffoldBoost:
    """A positive pairwise interaction a seed received at some epoch (§8.4)."""

    epoch: int
    boost: float


@dataclass
class EpisodeRewardState:
    """Mutable ledgers of one env's episode; ledgers are keyed by slot and belong to the seed recorded in `owners`."""

    owners: dict[str, str] = field(default_factory=dict)
    escrow_credit: dict[str, float] = field(default_factory=dict)
    drip_pools: dict[str, DripPool] = field(default_factory=dict)
    scaffold_boosts: dict[str, list[ScaffoldBoost]] = field(default_factory=dict)
    forfeited: set[tuple[str, str]] = field(default_factory=set)
    potentials: dict[tuple[str, str], float] = field(default_factory=dict)
    internal_ops: dict[str, list[int]] = field(default_factory=dict)
    pending_hindsight: float = 0.0
    episode_start_accuracy: float | None = None

    def sync_owners(self, current: dict[str, str]) -> None:
        """Drop every ledger of a slot that lost its seed or now holds another (§6.12); `current` maps slot → seed."""
        for slot_id in list(self.owners):
            if current.get(slot_id) != self.owners[slot_id]:
                self._forget(slot_id)
        for slot_id, seed_id in current.items():
            self.owners.setdefault(slot_id, seed_id)

    def _forget(self, slot_id: str) -> None:
        self.owners.pop(slot_id, None)
        self.escrow_credit.pop(slot_id, None)
        self.drip_pools.pop(slot_id, None)
        self.scaffold_boosts.pop(slot_id, None)
        self.internal_ops.pop(slot_id, None)

    # PBRS forfeiture (§6.9)

    def mark_forfeited(self, slot_id: str, seed_id: str) -> None:
        """A PRUNE action returned this seed's potential, so later PBRS steps must not return it again."""
        self.forfeited.add((slot_id, seed_id))

    def is_forfeited(self, slot_id: str, seed_id: str) -> bool:
        return (slot_id, seed_id) in self.forfeited

    # Scaffold ledger (§6.11, §8.4)

    def record_boosts(self, interactions: tuple[PairInteraction, ...], epoch: int) -> None:
        """Log every positive pairwise interaction as a boost received by both seeds of the pair."""
        for pair in interactions:
            if pair.interaction > 0.0:
                for slot_id in (pair.slot_a, pair.slot_b):
                    if slot_id in self.owners:
                        self.scaffold_boosts.setdefault(slot_id, []).append(ScaffoldBoost(epoch, pair.interaction))

    def hindsight_credit(self, slot_id: str, total_improvement: float, epoch: int, gamma: float) -> float:
        """Σ 0.1·tanh(0.1·b·imp)·γ^(epoch − t_b), capped at 0.2, for a seed fossilizing with positive improvement."""
        if total_improvement <= 0.0:
            return 0.0
        credit = sum(
            HINDSIGHT_WEIGHT
            * math.tanh(HINDSIGHT_SCALE * entry.boost * total_improvement)
            * gamma ** (epoch - entry.epoch)
            for entry in self.scaffold_boosts.get(slot_id, [])
        )
        return min(credit, HINDSIGHT_CAP)

    def take_hindsight(self) -> float:
        """The credit earned at the previous step, paid once with this step's reward."""
        credit, self.pending_hindsight = self.pending_hindsight, 0.0
        return credit

    # BASIC_PLUS drip (§6.15)

    def open_drip(self, slot_id: str, pool: float, epoch: int, max_epochs: int) -> None:
        epochs = max(max_epochs - epoch, DRIP_MIN_EPOCHS)
        self.drip_pools[slot_id] = DripPool(per_epoch=pool / epochs, epochs_left=epochs)

    def pay_drips(self, slots: tuple[SlotView, ...]) -> float:
        """One epoch of every open pool: clip((pool/R)·c_t, −0.05, 0.1), so a fossil that stops helping stops paying."""
        contributions = {slot.slot_id: slot.contribution for slot in slots}
        paid = 0.0
        for slot_id in list(self.drip_pools):
            pool = self.drip_pools[slot_id]
            contribution = contributions.get(slot_id)
            if contribution is not None:
                paid += min(max(pool.per_epoch * contribution, DRIP_CLIP_LOW), DRIP_CLIP_HIGH)
            pool.epochs_left -= 1
            if pool.epochs_left <= 0:
                del self.drip_pools[slot_id]
        return paid

    # Internal-op trajectory (plans/kasmina2-phase0.md §8.3)

    def record_internal_op(self, slot_id: str, direction: int) -> list[int]:
        """Append one applied GROW (+1) or SHRINK (−1) to the slot's seed's trajectory and return the trajectory."""
        if direction not in (1, -1):
            raise ValueError(f"internal op direction must be +1 or -1, got {direction}")
        directions = self.internal_ops.setdefault(slot_id, [])
        directions.append(direction)
        return directions

    # ESCROW credit (§6.12)

    def credit(self, slot_id: str) -> float:
        return self.escrow_credit.get(slot_id, 0.0)

    def set_credit(self, slot_id: str, credit: float) -> None:
        self.escrow_credit[slot_id] = credit

    def forfeit_unfinished_credit(self, slots: tuple[SlotView, ...]) -> float:
        """At the horizon, seeds that were neither fossilized nor pruned give back all credit they hold."""
        forfeited = 0.0
        for slot in slots:
            if slot.has_seed and slot.stage is not SeedStage.FOSSILIZED:
                forfeited -= self.escrow_credit.pop(slot.slot_id, 0.0)
        return forfeited
