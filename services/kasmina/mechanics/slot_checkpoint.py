"""A seed slot's checkpoint: everything but tensors, as primitives, checked loudly on load (invariant I14).

It travels as the slot's extra state, so it lands before the seed's weights in the same `load_state_dict`
(reference/kasmina.md §6 item 111). Version 2 adds the internal level of a microstructured seed
(plans/kasmina2-phase0.md §6.7 item 4); every rung exists at every level, so the state_dict keys do not depend on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from leyline_schemas.enums import AlphaAlgorithm, AlphaMode, BlendId, BlueprintAction, SeedInternalKind, SeedStage
from leyline_schemas.lifecycle import internal_spec

if TYPE_CHECKING:
    from services.kasmina.mechanics.slot import SeedSlot

SLOT_CHECKPOINT_VERSION = 2
_CHECKPOINT_KEYS = frozenset(
    {
        "version",
        "slot_id",
        "topology",
        "channels",
        "stage",
        "seed_id",
        "blueprint",
        "blend",
        "alpha_algorithm",
        "alpha",
        "alpha_mode",
        "isolate_gradients",
        "has_seed",
        "has_gate",
        "internal_kind",
        "internal_level",
    }
)


class SlotCheckpointError(ValueError):
    """A slot checkpoint has the wrong version, keys or identity (invariant I14)."""


@dataclass(frozen=True)
class SlotRecord:
    """A checked slot checkpoint, ready to be adopted by the slot it was checked for."""

    stage: SeedStage
    seed_id: str
    blueprint: BlueprintAction | None
    blend: BlendId
    alpha_algorithm: AlphaAlgorithm
    alpha: float
    alpha_mode: AlphaMode
    isolate_gradients: bool
    has_seed: bool
    has_gate: bool
    internal_kind: SeedInternalKind
    internal_level: int


def encode_slot(slot: SeedSlot) -> dict[str, Any]:
    """The slot's checkpoint; the seed and gate weights live in the state_dict."""
    return {
        "version": SLOT_CHECKPOINT_VERSION,
        "slot_id": slot.slot_id,
        "topology": slot.topology.value,
        "channels": slot.channels,
        "stage": int(slot.stage),
        "seed_id": slot.seed_id,
        "blueprint": None if slot.blueprint is None else int(slot.blueprint),
        "blend": slot.blend_id.value,
        "alpha_algorithm": int(slot.alpha_algorithm),
        "alpha": float(slot.alpha),
        "alpha_mode": int(slot.alpha_mode),
        "isolate_gradients": bool(slot.isolate_gradients),
        "has_seed": slot.seed is not None,
        "has_gate": slot.gate is not None,
        "internal_kind": int(slot.internal_kind),
        "internal_level": slot.internal_level,
    }


def decode_slot(data: Any, identity: tuple[str, str, int]) -> SlotRecord:
    """Check a checkpoint against the slot `identity` = (slot_id, topology, channels); SlotCheckpointError (I14)."""
    slot_id = identity[0]
    if not isinstance(data, dict):
        raise SlotCheckpointError(f"I14: slot {slot_id}: checkpoint must be a dict, got {type(data).__name__}")
    if data.get("version") != SLOT_CHECKPOINT_VERSION:
        raise SlotCheckpointError(
            f"I14: slot {slot_id}: checkpoint version {data.get('version')!r}, expected {SLOT_CHECKPOINT_VERSION}"
        )
    missing, extra = _CHECKPOINT_KEYS - data.keys(), data.keys() - _CHECKPOINT_KEYS
    if missing or extra:
        raise SlotCheckpointError(
            f"I14: slot {slot_id}: checkpoint keys missing {sorted(missing)}, unexpected {sorted(extra)}"
        )
    found = (data["slot_id"], data["topology"], data["channels"])
    if found != identity:
        raise SlotCheckpointError(f"I14: checkpoint for {found} loaded into slot {identity}")
    algorithm = AlphaAlgorithm(data["alpha_algorithm"])
    blueprint = None if data["blueprint"] is None else BlueprintAction(data["blueprint"])
    if data["has_seed"] and blueprint is None:
        raise SlotCheckpointError(f"I14: slot {slot_id}: checkpoint has a seed but no blueprint")
    if data["has_seed"] and data["has_gate"] != (algorithm is AlphaAlgorithm.GATE):
        raise SlotCheckpointError(
            f"I5/I14: slot {slot_id}: gate presence {data['has_gate']} contradicts algorithm {algorithm.name}"
        )
    kind, level = _internal(slot_id, data, blueprint if data["has_seed"] else None)
    return SlotRecord(
        stage=SeedStage(data["stage"]),
        seed_id=str(data["seed_id"]),
        blueprint=blueprint,
        blend=BlendId(data["blend"]),
        alpha_algorithm=algorithm,
        alpha=float(data["alpha"]),
        alpha_mode=AlphaMode(data["alpha_mode"]),
        isolate_gradients=bool(data["isolate_gradients"]),
        has_seed=bool(data["has_seed"]),
        has_gate=bool(data["has_gate"]),
        internal_kind=kind,
        internal_level=level,
    )


def _internal(slot_id: str, data: dict[str, Any], seeded: BlueprintAction | None) -> tuple[SeedInternalKind, int]:
    # The seed the blueprint builds must have the stored kind, and the stored level must be one it can take.
    spec = internal_spec(seeded) if seeded is not None else None
    expected = spec.kind if spec is not None else SeedInternalKind.NONE
    try:
        kind = SeedInternalKind(data["internal_kind"])
    except ValueError as exc:
        raise SlotCheckpointError(f"I14: slot {slot_id}: unknown internal kind {data['internal_kind']!r}") from exc
    if kind is not expected:
        what = seeded.name if seeded is not None else "no seed"
        raise SlotCheckpointError(f"I14: slot {slot_id}: internal kind {kind.name} stored for {what} ({expected.name})")
    level = data["internal_level"]
    top = spec.max_level if spec is not None and kind is not SeedInternalKind.NONE else 0
    if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= top:
        raise SlotCheckpointError(f"I14: slot {slot_id}: internal level {level!r} is outside [0, {top}]")
    return kind, level
