"""Heuristic Tamiyo: the rule-based baseline controller (reference/tamiyo_simic.md §3), as a stateless decision.

Its memory (blueprint penalties, rotation index, last prune epoch) travels in `policy_state` (ARCHITECTURE.md §2.2),
so any instance can answer any request.
"""

from __future__ import annotations

import msgspec

from leyline_schemas.codec import decoder
from leyline_schemas.decisions import Decision, DecisionRequest, FactoredAction
from leyline_schemas.enums import (
    AlphaMode,
    BlueprintAction,
    LifecycleOp,
    SeedStage,
    Topology,
    blueprint_name,
    blueprints_for,
)
from leyline_schemas.lifecycle import SlotState
from leyline_schemas.policy_ids import HEURISTIC_LADDER_POLICY_ID, HEURISTIC_POLICY_ID

HEURISTIC_POLICY_VERSION = 0

DEFAULT_ROTATION: tuple[BlueprintAction, ...] = (
    BlueprintAction.CONV_LIGHT,
    BlueprintAction.CONV_HEAVY,
    BlueprintAction.ATTENTION,
    BlueprintAction.NORM,
    BlueprintAction.DEPTHWISE,
)

# The reference rotation names CNN blueprints only; a transformer host gets the same shape of rotation from its own
# set (cheap adapters first, then attention, norm and the larger adapter), so the heuristic runs on TinyStories.
TRANSFORMER_ROTATION: tuple[BlueprintAction, ...] = (
    BlueprintAction.LORA,
    BlueprintAction.MLP_SMALL,
    BlueprintAction.ATTENTION,
    BlueprintAction.NORM,
    BlueprintAction.LORA_LARGE,
)
DEFAULT_ROTATIONS: dict[Topology, tuple[BlueprintAction, ...]] = {
    Topology.CNN: DEFAULT_ROTATION,
    Topology.TRANSFORMER: TRANSFORMER_ROTATION,
}
#: `heuristic-ladder` (plans/kasmina2-phase0.md §7.2): conv_heavy's place goes to the ladder, which buys capacity a
#: rung at a time; transformers have no ladder yet and keep their rotation.
LADDER_ROTATION: tuple[BlueprintAction, ...] = (
    BlueprintAction.CONV_LADDER,
    BlueprintAction.CONV_LIGHT,
    BlueprintAction.ATTENTION,
    BlueprintAction.NORM,
    BlueprintAction.DEPTHWISE,
)
LADDER_ROTATIONS: dict[Topology, tuple[BlueprintAction, ...]] = {
    Topology.CNN: LADDER_ROTATION,
    Topology.TRANSFORMER: TRANSFORMER_ROTATION,
}

# §3.6: a seed is "live" unless it is fossilized or in the prune → embargo → reset cooldown.
_LIVE_STAGES = frozenset({SeedStage.GERMINATED, SeedStage.TRAINING, SeedStage.BLENDING, SeedStage.HOLDING})
_ALPHA_TOLERANCE = 1e-6


class HeuristicConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Thresholds of the heuristic (§3.7–3.11); the plateau counter itself lives in Tolaria's signal tracker."""

    min_epochs_to_germinate: int = 5
    plateau_epochs_to_germinate: int = 3
    embargo_epochs_after_prune: int = 5
    prune_penalty: float = 2.0
    penalty_decay: float = 0.5
    penalty_delete_below: float = 0.1
    penalty_skip_threshold: float = 3.0
    prune_min_epochs_in_stage: int = 5
    prune_improvement_threshold: float = -2.0
    fossilize_contribution: float = 0.5
    ransomware_contribution: float = 0.1
    #: None: `rotations`' entry for the request's topology.
    rotation: tuple[BlueprintAction, ...] | None = None
    rotations: dict[Topology, tuple[BlueprintAction, ...]] = msgspec.field(default_factory=lambda: DEFAULT_ROTATIONS)
    #: Epochs a ladder holds its level before the heuristic adds another rung (§7.2).
    ladder_settle_epochs: int = 3


#: The heuristic variants served under their own ids; the decision carries the id it was asked for.
HEURISTIC_VARIANTS: dict[str, HeuristicConfig] = {
    HEURISTIC_POLICY_ID: HeuristicConfig(),
    HEURISTIC_LADDER_POLICY_ID: HeuristicConfig(rotations=LADDER_ROTATIONS),
}


class HeuristicMemory(msgspec.Struct, kw_only=True):
    """What the heuristic remembers between epochs; penalties are keyed by blueprint name."""

    penalties: dict[str, float] = msgspec.field(default_factory=dict)
    rotation_index: int = 0
    last_prune_epoch: int = -100
    last_decided_epoch: int | None = None


_memory_encoder = msgspec.msgpack.Encoder()


def encode_memory(memory: HeuristicMemory) -> bytes:
    return _memory_encoder.encode(memory)


def decode_memory(policy_state: bytes) -> HeuristicMemory:
    """Empty bytes mean a fresh episode; anything else must be a HeuristicMemory."""
    if not policy_state:
        return HeuristicMemory()
    try:
        return decoder(HeuristicMemory).decode(policy_state)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ValueError(f"policy_state is not a heuristic memory: {exc}") from exc


def validate_rotation(rotation: tuple[BlueprintAction, ...], topology: Topology) -> tuple[BlueprintAction, ...]:
    """The blueprint rotation must be non-empty and germinable on the topology (§3.8), else it is a config error."""
    if not rotation:
        raise ValueError("heuristic blueprint rotation is empty")
    allowed = set(blueprints_for(topology)) - {BlueprintAction.NOOP}
    invalid = [blueprint_name(bp) for bp in rotation if bp not in allowed]
    if invalid:
        raise ValueError(f"heuristic blueprint rotation has blueprints not valid for {topology.value} hosts: {invalid}")
    return rotation


def decide_heuristic(
    request: DecisionRequest, config: HeuristicConfig | None = None, *, policy_id: str = HEURISTIC_POLICY_ID
) -> Decision:
    """One heuristic decision from the request alone; the updated memory is returned in `policy_state`."""
    cfg = config if config is not None else HeuristicConfig()
    rotation = validate_rotation(cfg.rotation or cfg.rotations[request.topology], request.topology)
    memory = decode_memory(request.policy_state)
    if memory.last_decided_epoch != request.epoch:
        _decay_penalties(memory, cfg)
        memory.last_decided_epoch = request.epoch

    live = [state for state in request.slots if state.stage in _LIVE_STAGES]
    if live:
        action, confidence, reason = _manage(request, live[0], memory, cfg)
    else:
        action, confidence, reason = _germinate_or_wait(request, memory, cfg, rotation)

    return Decision(
        policy_id=policy_id,
        policy_version=HEURISTIC_POLICY_VERSION,
        action=action,
        value=0.0,
        policy_state=encode_memory(memory),
        confidence=confidence,
        reason=reason,
    )


def _decay_penalties(memory: HeuristicMemory, cfg: HeuristicConfig) -> None:
    # §3.5: once per new epoch, before deciding, so a pruned blueprint becomes eligible again after a few epochs.
    decayed = {name: penalty * cfg.penalty_decay for name, penalty in memory.penalties.items()}
    memory.penalties = {name: p for name, p in decayed.items() if p >= cfg.penalty_delete_below}


def _germinate_or_wait(
    request: DecisionRequest,
    memory: HeuristicMemory,
    cfg: HeuristicConfig,
    rotation: tuple[BlueprintAction, ...],
) -> tuple[FactoredAction, float, str]:
    """§3.7: the first matching rule wins."""
    epoch = request.epoch
    signals = request.signals
    since_prune = epoch - memory.last_prune_epoch
    if since_prune < cfg.embargo_epochs_after_prune:
        return _wait(request), 1.0, f"embargo: last prune {since_prune} epochs ago"
    if not signals.host_stabilized:
        return _wait(request), 1.0, "host not stabilized yet"
    if epoch < cfg.min_epochs_to_germinate:
        return _wait(request), 1.0, f"epoch {epoch} < {cfg.min_epochs_to_germinate}: too early to germinate"
    slot = _first_germinable_slot(request)
    if slot is None:
        return _wait(request), 1.0, "no slot available for germination"
    if signals.plateau_epochs < cfg.plateau_epochs_to_germinate:
        return _wait(request), 1.0, f"plateau {signals.plateau_epochs} epochs: keep training the host"
    # The run's allowlist may take blueprints out of the rotation; the rest keep their order.
    allowed = tuple(bp for bp in rotation if request.masks.blueprint[bp]) or rotation
    blueprint = _next_blueprint(memory, cfg, allowed)
    confidence = min(1.0, signals.plateau_epochs / 5.0)
    action = FactoredAction(op=LifecycleOp.GERMINATE, slot=slot, blueprint=blueprint)
    slot_id = request.slot_ids[slot]
    reason = f"plateau {signals.plateau_epochs} epochs: germinate {blueprint_name(blueprint)} in {slot_id}"
    return action, confidence, reason


def _first_germinable_slot(request: DecisionRequest) -> int | None:
    masks = request.masks
    if not masks.op[LifecycleOp.GERMINATE]:
        return None
    for index, legal in enumerate(masks.slot_by_op[LifecycleOp.GERMINATE]):
        if legal:
            return index
    return None


def _next_blueprint(
    memory: HeuristicMemory, cfg: HeuristicConfig, rotation: tuple[BlueprintAction, ...]
) -> BlueprintAction:
    """§3.8: round-robin from the persistent index, skipping heavily penalized blueprints."""
    n = len(rotation)
    start = memory.rotation_index
    for offset in range(n):
        position = (start + offset) % n
        blueprint = rotation[position]
        if memory.penalties.get(blueprint_name(blueprint), 0.0) < cfg.penalty_skip_threshold:
            memory.rotation_index = (position + 1) % n
            return blueprint
    # Everything is penalized: the least-penalized order still rotates, so one bad blueprint cannot monopolize.
    ranked = sorted(rotation, key=lambda bp: (memory.penalties.get(blueprint_name(bp), 0.0), blueprint_name(bp)))
    memory.rotation_index = (start + 1) % n
    return ranked[start % n]


def _manage(
    request: DecisionRequest, seed: SlotState, memory: HeuristicMemory, cfg: HeuristicConfig
) -> tuple[FactoredAction, float, str]:
    """§3.9: the first live seed (in slot order) decides."""
    if seed.slot_id not in request.slot_ids:
        raise ValueError(f"slot state {seed.slot_id!r} is not one of the request's slot_ids {request.slot_ids}")
    slot = request.slot_ids.index(seed.slot_id)
    name = f"{blueprint_name(seed.blueprint)} in {seed.slot_id}"
    stage = seed.stage
    if stage is SeedStage.GERMINATED:
        return FactoredAction(op=LifecycleOp.ADVANCE, slot=slot), 1.0, f"{name} germinated: advance to training"
    if stage is SeedStage.TRAINING:
        if _should_prune(seed, cfg):
            return _prune(request, seed, slot, memory, cfg, f"{name} failing in training")
        return FactoredAction(op=LifecycleOp.ADVANCE, slot=slot), 1.0, f"{name} training: advance to blending"
    if stage is SeedStage.BLENDING:
        if _should_prune(seed, cfg):
            return _prune(request, seed, slot, memory, cfg, f"{name} failing in blending")
        controller = seed.controller
        blended_in = (
            controller.alpha_target >= 1.0
            and controller.mode is AlphaMode.HOLD
            and abs(controller.alpha - controller.alpha_target) <= _ALPHA_TOLERANCE
        )
        if blended_in:
            return FactoredAction(op=LifecycleOp.ADVANCE, slot=slot), 1.0, f"{name} fully blended: advance to holding"
        return _wait(request), 1.0, f"{name} blending (alpha {controller.alpha:.2f})"
    # HOLDING: the only live stage left.
    contribution = seed.metrics.counterfactual_contribution
    total_improvement = seed.metrics.current_val_accuracy - seed.metrics.initial_val_accuracy
    if contribution is not None and contribution > cfg.ransomware_contribution and total_improvement < 0:
        # The host leans on the seed (removal hurts) yet is worse off than before it: ransomware, cut it out.
        reason = f"{name} ransomware: contribution {contribution:.2f} but total improvement {total_improvement:.2f}"
        return _prune(request, seed, slot, memory, cfg, reason)
    if contribution is None:
        return _wait(request), 1.0, f"{name} holding: contribution not measured yet"
    if contribution > cfg.fossilize_contribution:
        action = FactoredAction(op=LifecycleOp.FOSSILIZE, slot=slot)
        return action, min(1.0, contribution / 5.0), f"{name} contributes {contribution:.2f}: fossilize"
    if request.masks.slot_by_op[LifecycleOp.GROW_INTERNAL][slot]:
        return _grow_or_settle(request, seed, slot, contribution, cfg)
    return _prune(request, seed, slot, memory, cfg, f"{name} contributes only {contribution:.2f}")


def _grow_or_settle(
    request: DecisionRequest, seed: SlotState, slot: int, contribution: float, cfg: HeuristicConfig
) -> tuple[FactoredAction, float, str]:
    """§7.2: a weak ladder gets another rung once its last level has settled, instead of being pruned."""
    name = f"{blueprint_name(seed.blueprint)} in {seed.slot_id}"
    level = f"level {seed.internal_level} of {seed.internal_max_level}"
    changed = seed.internal_level_changed_epoch
    if changed >= 0 and request.epoch - changed < cfg.ladder_settle_epochs:
        return _wait(request), 1.0, f"{name} at {level} since epoch {changed}: let it settle"
    action = FactoredAction(op=LifecycleOp.GROW_INTERNAL, slot=slot)
    return action, 1.0, f"{name} contributes {contribution:.2f} at {level}: add a rung"


def _should_prune(seed: SlotState, cfg: HeuristicConfig) -> bool:
    """§3.10: long enough in the stage and clearly worse than at its start."""
    metrics = seed.metrics
    improvement = metrics.current_val_accuracy - metrics.accuracy_at_stage_start
    return (
        metrics.epochs_in_current_stage >= cfg.prune_min_epochs_in_stage
        and improvement < cfg.prune_improvement_threshold
    )


def _prune(
    request: DecisionRequest,
    seed: SlotState,
    slot: int,
    memory: HeuristicMemory,
    cfg: HeuristicConfig,
    why: str,
) -> tuple[FactoredAction, float, str]:
    # §3.11: every prune starts the embargo and penalizes the blueprint so the rotation avoids it for a while.
    memory.last_prune_epoch = request.epoch
    key = blueprint_name(seed.blueprint)
    memory.penalties[key] = memory.penalties.get(key, 0.0) + cfg.prune_penalty
    return FactoredAction(op=LifecycleOp.PRUNE, slot=slot), 1.0, f"{why}: prune"


def _wait(request: DecisionRequest) -> FactoredAction:
    # §2.7: WAIT's slot head is canonicalized to the first legal slot.
    row = request.masks.slot_by_op[LifecycleOp.WAIT] if request.masks.slot_by_op else []
    slot = next((index for index, legal in enumerate(row) if legal), 0)
    return FactoredAction(op=LifecycleOp.WAIT, slot=slot)
