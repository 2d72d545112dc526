"""The architecture an episode commits to, and its replay from scratch (plans/proof-baselines.md §3.3).

An episode's last epoch records a `TopologyManifest`: every seed at full amplitude at the end (FOSSILIZED, or
HOLDING at α = 1). The static-final control builds the same host (same env seed, so the same host weights at epoch
0), germinates each manifest seed with fresh weights from the global RNG right after the host, and seats it
FOSSILIZED at α = 1, a state the normal lifecycle reaches, so nothing downstream meets anything new. Seeds at
0 < α < 1 are uncommitted and seeds at α = 0 dead: both are counted, never replayed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec

from leyline_schemas import AlphaControllerState, CommittedSeed, SeedStage, SlotState, TopologyManifest
from leyline_schemas.enums import ACTIVE_STAGES, AlphaMode, SeedInternalKind, blueprint_name
from leyline_schemas.lifecycle import internal_spec
from services.kasmina.mechanics import MorphogeneticModel

#: α within this of 1 counts as full amplitude (the controller lands on 1.0 exactly; this absorbs float noise).
FULL_AMPLITUDE = 1.0 - 1e-6


class ReplayError(ValueError):
    """A manifest that cannot be rebuilt on this host: another task, host size, or a slot it does not enable."""


@dataclass(frozen=True)
class ParameterSplit:
    """The episode's parameters by commitment: host + full-amplitude seeds, partly blended seeds, α-0 seeds."""

    committed: int
    uncommitted: int
    dead: int


def manifest_hash(task: str, host_params: int, seeds: Sequence[CommittedSeed]) -> str:
    """sha256 of the canonical encoding of what the architecture is (not where it came from)."""
    canonical = {
        "task": task,
        "host_params": host_params,
        "seeds": sorted((msgspec.to_builtins(s) for s in seeds), key=lambda s: s["slot_id"]),
    }
    return hashlib.sha256(msgspec.json.encode(canonical, order="sorted")).hexdigest()


def _is_committed(state: SlotState) -> bool:
    return state.stage is SeedStage.FOSSILIZED or (
        state.stage is SeedStage.HOLDING and state.controller.alpha >= FULL_AMPLITUDE
    )


def parameter_split(model: MorphogeneticModel, states: Sequence[SlotState]) -> ParameterSplit:
    committed, uncommitted, dead = model.host_param_count, 0, 0
    for state in states:
        slot = model.slot(state.slot_id)
        if not slot.has_seed:
            continue
        if _is_committed(state):
            committed += slot.seed_param_count
        elif state.stage in ACTIVE_STAGES and state.controller.alpha > 0.0:
            uncommitted += slot.seed_param_count
        else:
            dead += slot.seed_param_count
    return ParameterSplit(committed, uncommitted, dead)


def record_topology(
    task: str, model: MorphogeneticModel, states: Sequence[SlotState], *, run_id: str, env_id: int, episode: int
) -> TopologyManifest:
    """The committed architecture of `model` now, with its source identity."""
    seeds = [
        CommittedSeed(
            slot_id=state.slot_id,
            blueprint=state.blueprint,
            blend=state.blend,
            alpha_algorithm=state.alpha_algorithm,
            params=model.slot(state.slot_id).seed_param_count,
            internal_level=state.internal_level,
        )
        for state in states
        if _is_committed(state) and model.slot(state.slot_id).has_seed
    ]
    host = model.host_param_count
    return TopologyManifest(
        task=task,
        host_params=host,
        seeds=seeds,
        manifest_hash=manifest_hash(task, host, seeds),
        source_run=run_id,
        source_env=env_id,
        source_episode=episode,
    )


def replay_topology(
    task: str, model: MorphogeneticModel, states: Sequence[SlotState], manifest: TopologyManifest
) -> list[SlotState]:
    """Germinate every manifest seed with fresh weights and seat it FOSSILIZED at α = 1; returns the slot states.

    Raises ReplayError when the manifest is not this task's, not this host's size, names a slot the host does not
    enable, or its hash does not match its contents; the replayed seeds' parameter counts must match the manifest.
    """
    if manifest.task != task:
        raise ReplayError(f"manifest of task {manifest.task!r} cannot be replayed on {task!r}")
    if manifest.host_params != model.host_param_count:
        raise ReplayError(f"manifest host has {manifest.host_params} params, this host {model.host_param_count}")
    if manifest.manifest_hash != manifest_hash(manifest.task, manifest.host_params, manifest.seeds):
        raise ReplayError("manifest hash does not match its contents")
    by_slot = {s.slot_id: s for s in states}
    replayed = dict(by_slot)
    for seed in manifest.seeds:
        if seed.slot_id not in by_slot:
            raise ReplayError(f"manifest slot {seed.slot_id!r} is not enabled; enabled: {sorted(by_slot)}")
        seed_id = f"{seed.slot_id}-{blueprint_name(seed.blueprint)}-replay"
        internals = internal_spec(seed.blueprint)
        top = internals.max_level if internals.kind is not SeedInternalKind.NONE else 0
        if not 0 <= seed.internal_level <= top:
            raise ReplayError(f"slot {seed.slot_id}: level {seed.internal_level} is outside [0, {top}]")
        model.germinate(seed.slot_id, seed.blueprint, seed.blend, seed.alpha_algorithm, seed_id=seed_id)
        if internals.kind is not SeedInternalKind.NONE:
            model.slot(seed.slot_id).set_internal_level(seed.internal_level)
        state = SlotState(
            slot_id=seed.slot_id,
            stage=SeedStage.FOSSILIZED,
            seed_id=seed_id,
            blueprint=seed.blueprint,
            blend=seed.blend,
            alpha_algorithm=seed.alpha_algorithm,
            controller=AlphaControllerState(alpha=1.0, alpha_start=1.0, alpha_target=1.0, mode=AlphaMode.HOLD),
            previous_stage=SeedStage.HOLDING,
            germinated_epoch=0,
            internal_kind=internals.kind,
            internal_level=seed.internal_level,
            internal_max_level=internals.max_level,
        )
        model.apply_states([state])
        params = model.slot(seed.slot_id).seed_param_count
        if seed.params and params != seed.params:
            raise ReplayError(f"slot {seed.slot_id}: replayed seed has {params} params, the manifest {seed.params}")
        replayed[seed.slot_id] = state
    return [replayed[s.slot_id] for s in states]


def forward_signature(model: MorphogeneticModel) -> tuple[tuple[str, str, int], ...]:
    """Which seeds run forward, by slot, blueprint and internal level: the key forward FLOPs are cached under."""
    return tuple(
        (slot.slot_id, blueprint_name(slot.blueprint) if slot.blueprint is not None else "", slot.internal_level)
        for slot in model.seed_slots()
        if slot.is_active
    )
