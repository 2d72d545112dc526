"""The seed potential Φ and its potential-based shaping, shared by every reward mode (reference/tamiyo_simic.md §6.3).

Φ is the single source of truth for lifecycle progress; paying γΦ(now) − Φ(before) each step telescopes over an
episode, so the shaping cannot change which policy is optimal.
"""

from __future__ import annotations

from collections.abc import Iterable

from leyline_schemas.enums import SeedStage
from leyline_schemas.lifecycle import SlotState
from services.simic.reward_inputs import SlotView
from services.simic.reward_ledgers import EpisodeRewardState

PBRS_WEIGHT = 0.3
DWELL_BONUS_PER_EPOCH = 0.3
DWELL_BONUS_CAP = 2.0

# §6.3: stage potentials; HOLDING → FOSSILIZED is deliberately the smallest step so fossilizing is not a reward grab.
STAGE_POTENTIAL: dict[SeedStage, float] = {
    SeedStage.UNKNOWN: 0.0,
    SeedStage.DORMANT: 0.0,
    SeedStage.GERMINATED: 1.0,
    SeedStage.TRAINING: 2.0,
    SeedStage.BLENDING: 3.5,
    SeedStage.HOLDING: 5.5,
    SeedStage.FOSSILIZED: 6.0,
    SeedStage.PRUNED: 0.0,
    SeedStage.EMBARGOED: 0.0,
    SeedStage.RESETTING: 0.0,
}

_UNBORN = frozenset({SeedStage.UNKNOWN, SeedStage.DORMANT})
_AFTER_PRUNE = frozenset({SeedStage.EMBARGOED, SeedStage.RESETTING})


def potential(stage: SeedStage, epochs_in_stage: int) -> float:
    """Φ(stage, e) = Φ_stage + min(0.3e, 2) (§6.3); a slot without a live or fossilized seed has no potential."""
    base = STAGE_POTENTIAL[stage]
    if base == 0.0:
        # A pruned or absent seed carries nothing: otherwise waiting out an embargo would earn dwell bonus.
        return 0.0
    return base + min(DWELL_BONUS_PER_EPOCH * max(0, epochs_in_stage), DWELL_BONUS_CAP)


def previous_potential(
    stage: SeedStage,
    epochs_in_stage: int,
    previous_stage: SeedStage,
    previous_epochs_in_stage: int,
    *,
    birth_paid: bool,
) -> float:
    """Φ of the previous step (§6.3): the previous stage's if the stage just changed, else this stage one epoch earlier.

    With `birth_paid` the germination action term already paid the jump out of DORMANT (§6.9, §11.9), so a newborn
    seed's previous potential is its own at age zero and the jump is not paid twice.
    """
    if epochs_in_stage > 0:
        return potential(stage, epochs_in_stage - 1)
    if previous_stage in _UNBORN and birth_paid:
        return potential(stage, 0)
    return potential(previous_stage, previous_epochs_in_stage)


def pbrs_term(
    stage: SeedStage,
    epochs_in_stage: int,
    previous_stage: SeedStage,
    previous_epochs_in_stage: int,
    gamma: float,
    *,
    birth_paid: bool = False,
) -> float:
    """F = 0.3(γΦ(stage, e) − Φ_prev) (§6.3)."""
    before = previous_potential(stage, epochs_in_stage, previous_stage, previous_epochs_in_stage, birth_paid=birth_paid)
    return PBRS_WEIGHT * (gamma * potential(stage, epochs_in_stage) - before)


def seed_pbrs(target: SlotState, state: EpisodeRewardState, gamma: float, *, birth_paid: bool) -> float:
    """The per-step PBRS term of the target slot's pre-action seed, pruned ones included.

    A pruned seed's first step pays the drop to Φ = 0, unless a PRUNE action already forfeited its potential.
    """
    key = (target.slot_id, target.seed_id)
    if state.is_forfeited(*key):
        return 0.0
    if (
        target.stage in _AFTER_PRUNE
        and target.previous_stage is SeedStage.PRUNED
        and target.metrics.epochs_in_current_stage == 0
    ):
        # Kasmina's tick moves an instantly pruned seed on to EMBARGOED before any step observes PRUNED, so the
        # drop is paid here, from the potential the seed had at the last step that saw it (else PRUNE is free and
        # prune-and-regerminate farms the shaping).
        return PBRS_WEIGHT * (gamma * 0.0 - state.potentials.pop(key, 0.0))
    shaping = pbrs_term(
        target.stage,
        target.metrics.epochs_in_current_stage,
        target.previous_stage,
        target.previous_epochs_in_stage,
        gamma,
        birth_paid=birth_paid,
    )
    state.potentials[key] = potential(target.stage, target.metrics.epochs_in_current_stage)
    return shaping


def prune_forfeiture(seed: SlotState, state: EpisodeRewardState) -> float:
    """PRUNE returns the seed's potential at once: 0.3(0 − Φ(current)) (§6.9), and remembers that it did."""
    if state.is_forfeited(seed.slot_id, seed.seed_id):
        return 0.0
    state.mark_forfeited(seed.slot_id, seed.seed_id)
    return PBRS_WEIGHT * (0.0 - potential(seed.stage, seed.metrics.epochs_in_current_stage))


def timing_discount(germination_epoch: int) -> float:
    """τ = 0.4 + 0.6g/10 for seeds germinated before epoch 10, else 1 (§6.5): early seeds mostly ride host gains."""
    if germination_epoch >= 10:
        return 1.0
    return 0.4 + 0.6 * max(0, germination_epoch) / 10.0


def germination_bonus(epoch: int, gamma: float) -> float:
    """The PBRS payment for DORMANT → GERMINATED made by the GERMINATE action itself: 0.3γΦ(GERMINATED)τ (§6.9)."""
    return PBRS_WEIGHT * gamma * STAGE_POTENTIAL[SeedStage.GERMINATED] * timing_discount(epoch)


def germination_clawback(slots: Iterable[SlotView], epoch: int, gamma: float) -> float:
    """At the horizon, refund the germination bonus of every seed that never reached BLENDING (§6.11, §12.14).

    Dividing by γ^age undoes the discount between the germination step and now, and τ(g) is what was actually paid,
    so in discounted-return space the refund cancels the bonus exactly.
    """
    total = 0.0
    for slot in slots:
        if slot.stage in (SeedStage.GERMINATED, SeedStage.TRAINING):
            paid = germination_bonus(epoch - slot.age, gamma)
            total -= paid / gamma**slot.age
    return total
