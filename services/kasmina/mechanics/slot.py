"""One seed slot: the torch side of an injection point, driven by the SlotState that Kasmina decides.

The slot never decides a transition. Tolaria germinates and prunes it on Kasmina's mutations and calls `sync`
with the new SlotState; the slot adopts stage, alpha, algorithm and isolation and applies the matching
forward path (reference/kasmina.md §2.6, §4.5, §4.6, §5). A microstructured seed's level arrives only through
`set_internal_level` (a SetInternalLevel mutation); `sync` checks it (plans/kasmina2-phase0.md §6.7).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from leyline_schemas.enums import (
    ACTIVE_STAGES,
    FAILURE_STAGES,
    AlphaAlgorithm,
    AlphaMode,
    BlendId,
    BlueprintAction,
    SeedInternalKind,
    SeedStage,
    Topology,
    blueprint_name,
)
from leyline_schemas.lifecycle import SlotState
from services.kasmina.mechanics.blending import GatedBlend, blend
from services.kasmina.mechanics.blueprints import build_seed, probe_input, zero_init_final_layer
from services.kasmina.mechanics.ladder import MicrostructuredSeed
from services.kasmina.mechanics.slot_checkpoint import SLOT_CHECKPOINT_VERSION as SLOT_CHECKPOINT_VERSION
from services.kasmina.mechanics.slot_checkpoint import SlotCheckpointError as SlotCheckpointError
from services.kasmina.mechanics.slot_checkpoint import decode_slot, encode_slot

# Stages in which the slot holds no seed module.
_EMPTY_STAGES = frozenset({SeedStage.UNKNOWN, SeedStage.DORMANT}) | FAILURE_STAGES


class GerminationError(RuntimeError):
    """A seed could not be grown in a slot: occupied slot, unknown blueprint, bad blend pairing or shape mismatch."""


class SlotSyncError(RuntimeError):
    """The SlotState handed to `sync` contradicts what the slot physically holds."""


def _detached_input(h: Tensor) -> Tensor:
    # A contiguous (NCHW) detached copy avoids the channels_last + detach fault while h keeps its own layout
    # (§5 item 97). A copy kept in channels_last instead was tried for speed (issue 16) and segfaults in the
    # backward of a TRAINING norm seed on the digits host (tests/kasmina/mechanics/test_mech_slot.py).
    x = h.detach()
    return x if x.is_contiguous() else x.contiguous()


class SeedSlot(nn.Module):
    """A seed slot at one injection point; forward is the identity unless a seed is active (§1.1 item 3)."""

    def __init__(self, slot_id: str, channels: int, topology: Topology, spatial_dims: int = 2) -> None:
        super().__init__()
        if channels <= 0:
            raise ValueError(f"slot {slot_id}: channels must be positive, got {channels}")
        self.slot_id = slot_id
        self.channels = channels
        self.topology = Topology(topology)
        #: The rank of a CNN host's feature maps at this slot (1: signals, 2: images); seeds are built for it.
        self.spatial_dims = spatial_dims
        # An empty non-persistent buffer follows .to(device) so germination knows where to build the seed.
        self.register_buffer("_anchor", torch.empty(0), persistent=False)
        self.seed: nn.Module | None = None
        self.gate: GatedBlend | None = None
        self.stage = SeedStage.DORMANT
        self.seed_id = ""
        self.blueprint: BlueprintAction | None = None
        self.blend_id = BlendId.SIGMOID
        self.alpha_algorithm = AlphaAlgorithm.ADD
        self.alpha = 0.0
        self.alpha_mode = AlphaMode.HOLD
        self.isolate_gradients = False
        self._frozen: list[nn.Parameter] = []
        self._alpha_cache: tuple[float, Tensor] | None = None

    # ------------------------------------------------------------------ inspection

    @property
    def device(self) -> torch.device:
        anchor = self._anchor
        assert isinstance(anchor, Tensor)
        return anchor.device

    @property
    def has_seed(self) -> bool:
        return self.seed is not None

    @property
    def is_active(self) -> bool:
        """Whether the seed takes part in forward (TRAINING, BLENDING, HOLDING, FOSSILIZED)."""
        return self.seed is not None and self.stage in ACTIVE_STAGES

    @property
    def occupied(self) -> bool:
        """A slot is germinable only when empty and DORMANT; failure stages still occupy it (invariant I2)."""
        return self.seed is not None or self.stage not in (SeedStage.DORMANT, SeedStage.UNKNOWN)

    def seed_parameters(self) -> list[nn.Parameter]:
        """The seed's parameters followed by the gate network's (both belong to the seed optimizer)."""
        params: list[nn.Parameter] = []
        if self.seed is not None:
            params.extend(self.seed.parameters())
        if self.gate is not None:
            params.extend(self.gate.parameters())
        return params

    @property
    def seed_param_count(self) -> int:
        """Seed plus gate parameters, whether or not a blend-out freeze currently holds them; a microstructured
        seed counts only its active parameters (plans/kasmina2-phase0.md §6.4 item 1)."""
        ladder = self.microstructure
        if ladder is None:
            return sum(p.numel() for p in self.seed_parameters())
        gate = sum(p.numel() for p in self.gate.parameters()) if self.gate is not None else 0
        return ladder.active_param_count() + gate

    @property
    def microstructure(self) -> MicrostructuredSeed | None:
        """The seed when its capacity is an internal level (a conv ladder), else None."""
        seed = self.seed
        return seed if isinstance(seed, MicrostructuredSeed) else None

    @property
    def internal_kind(self) -> SeedInternalKind:
        ladder = self.microstructure
        return SeedInternalKind.NONE if ladder is None else ladder.internal_kind

    @property
    def internal_level(self) -> int:
        ladder = self.microstructure
        return 0 if ladder is None else ladder.internal_level

    @property
    def internal_max_level(self) -> int:
        ladder = self.microstructure
        return 1 if ladder is None else ladder.internal_max_level

    @property
    def frozen_for_blend_out(self) -> bool:
        return bool(self._frozen)

    # ------------------------------------------------------------------ mutations

    def germinate(
        self, blueprint: BlueprintAction, blend: BlendId, alpha_algorithm: AlphaAlgorithm, seed_id: str = ""
    ) -> None:
        """Build and probe a seed; the slot enters GERMINATED with alpha 0 (§2.6 item 52)."""
        if self.occupied:
            raise GerminationError(f"I2: slot {self.slot_id} is occupied (stage {self.stage.name}); cannot germinate")
        blueprint, blend, alpha_algorithm = BlueprintAction(blueprint), BlendId(blend), AlphaAlgorithm(alpha_algorithm)
        if (blend is BlendId.GATED) != (alpha_algorithm is AlphaAlgorithm.GATE):
            raise GerminationError(
                f"slot {self.slot_id}: blend 'gated' and algorithm GATE go together, "
                f"got blend {blend.value!r} with {alpha_algorithm.name}"
            )
        try:
            seed = build_seed(self.topology, blueprint, self.channels, self.spatial_dims).to(self.device)
        except (KeyError, ValueError) as exc:
            raise GerminationError(f"slot {self.slot_id}: cannot build {blueprint_name(blueprint)}: {exc}") from exc
        # A ladder is the identity at birth already; zeroing its last conv would kill that rung for good (Choice 15).
        if alpha_algorithm is AlphaAlgorithm.MULTIPLY and not isinstance(seed, MicrostructuredSeed):
            zero_init_final_layer(seed)
        self._probe(seed, blueprint)
        self.seed = seed
        self.gate = self._new_gate() if alpha_algorithm is AlphaAlgorithm.GATE else None
        self.stage = SeedStage.GERMINATED
        self.seed_id = seed_id or f"{self.slot_id}-{blueprint_name(blueprint)}"
        self.blueprint = blueprint
        self.blend_id = blend
        self.alpha_algorithm = alpha_algorithm
        self.alpha = 0.0
        self.alpha_mode = AlphaMode.HOLD
        self.isolate_gradients = False
        self._frozen = []

    def _probe(self, seed: nn.Module, blueprint: BlueprintAction) -> None:
        # Specs carry no H/W, so a seed must preserve shape at any resolution: probe two sizes (§3.1 item 54).
        was_training = seed.training
        seed.eval()
        generator = torch.Generator().manual_seed(0)
        try:
            with torch.no_grad():
                for variant in (0, 1):
                    x = probe_input(self.topology, self.channels, variant, generator, self.device, self.spatial_dims)
                    out = seed(x)
                    if not isinstance(out, Tensor) or out.shape != x.shape:
                        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
                        raise GerminationError(
                            f"I11: slot {self.slot_id}: {blueprint_name(blueprint)} maps "
                            f"{tuple(x.shape)} to {got}; seeds must preserve shape"
                        )
        finally:
            seed.train(was_training)

    def set_internal_level(self, level: int) -> list[nn.Parameter]:
        """Apply a SetInternalLevel: run `level` parts of the seed; returns the parameters switched on or off.

        SlotSyncError without a microstructured seed or on a fossil (custody); ValueError outside [0, max].
        """
        ladder = self.microstructure
        if ladder is None:
            held = "no seed" if self.blueprint is None else blueprint_name(self.blueprint)
            raise SlotSyncError(f"slot {self.slot_id} holds {held}, which has no internal level")
        if self.stage is SeedStage.FOSSILIZED:
            raise SlotSyncError(f"slot {self.slot_id} is FOSSILIZED: nothing may edit a fossil")
        return ladder.set_internal_level(level)

    def _new_gate(self) -> GatedBlend:
        return GatedBlend(self.channels, self.topology).to(self.device)

    def prune(self) -> bool:
        """Free the seed module and gate and enter PRUNED; False for an empty or FOSSILIZED slot (§1.5 items 27-28)."""
        if self.seed is None or self.stage is SeedStage.FOSSILIZED:
            return False
        self._release()
        self.stage = SeedStage.PRUNED
        return True

    def _release(self) -> None:
        self.seed = None
        self.gate = None
        self._frozen = []
        self.alpha = 0.0
        self.alpha_mode = AlphaMode.HOLD
        self.isolate_gradients = False
        self._alpha_cache = None

    def sync(self, state: SlotState) -> bool:
        """Adopt stage, alpha, algorithm and isolation from Kasmina's state; True when the seed parameters changed.

        A failure or empty stage frees the module; switching to or from GATE creates or drops the gate network
        (§4.6 item 94); the blend-out freeze follows the controller mode (§4.6 item 95).
        """
        if state.slot_id != self.slot_id:
            raise SlotSyncError(f"state for slot {state.slot_id!r} handed to slot {self.slot_id!r}")
        stage = SeedStage(state.stage)
        if stage in _EMPTY_STAGES:
            if self.stage is SeedStage.FOSSILIZED:
                raise SlotSyncError(f"I1: slot {self.slot_id} is FOSSILIZED, which has no exits (asked {stage.name})")
            changed = self.seed is not None
            if changed:
                self._release()
            self.stage = stage
            self.seed_id = state.seed_id if stage is not SeedStage.DORMANT else ""
            if stage is SeedStage.DORMANT:
                self.blueprint = None
            return changed
        if self.seed is None:
            raise SlotSyncError(f"slot {self.slot_id}: state says {stage.name} but no seed was germinated here")
        if state.seed_id and state.seed_id != self.seed_id:
            raise SlotSyncError(f"slot {self.slot_id}: holds seed {self.seed_id!r}, state names {state.seed_id!r}")
        if BlueprintAction(state.blueprint) is not self.blueprint:
            raise SlotSyncError(f"slot {self.slot_id}: holds {self.blueprint!r}, state names {state.blueprint!r}")
        held = (self.internal_kind, self.internal_level)
        if (SeedInternalKind(state.internal_kind), state.internal_level) != held:
            raise SlotSyncError(
                f"slot {self.slot_id}: holds {held[0].name} at level {held[1]}, state says "
                f"{SeedInternalKind(state.internal_kind).name} at level {state.internal_level}"
            )
        self.stage = stage
        self.alpha = min(1.0, max(0.0, float(state.controller.alpha)))
        self.alpha_mode = AlphaMode(state.controller.mode)
        self.isolate_gradients = bool(state.isolate_gradients)
        self.blend_id = BlendId(state.blend)
        changed = self._set_algorithm(AlphaAlgorithm(state.alpha_algorithm))
        self._apply_blend_out_freeze()
        return changed

    def _set_algorithm(self, algorithm: AlphaAlgorithm) -> bool:
        wants_gate = algorithm is AlphaAlgorithm.GATE
        self.alpha_algorithm = algorithm
        if wants_gate == (self.gate is not None):
            return False
        if wants_gate:
            self.gate = self._new_gate()
        else:
            gate_ids = {id(p) for p in self.gate.parameters()} if self.gate is not None else set()
            self._frozen = [p for p in self._frozen if id(p) not in gate_ids]
            self.gate = None
        return True

    def _apply_blend_out_freeze(self) -> None:
        # While alpha ramps DOWN the seed must not chase a vanishing blend: freeze what was trainable and restore
        # exactly that set once the mode leaves DOWN; the forward graph stays intact (§4.6 item 95, invariant I9).
        if self.alpha_mode is AlphaMode.DOWN:
            for p in self.seed_parameters():
                if p.requires_grad:
                    p.requires_grad_(False)
                    self._frozen.append(p)
        else:
            self._thaw()

    def _thaw(self) -> None:
        for p in self._frozen:
            p.requires_grad_(True)
        self._frozen = []

    # ------------------------------------------------------------------ forward

    def _alpha_tensor(self, like: Tensor) -> Tensor:
        # Keyed by the Python value, so a cache hit never reads the tensor back from the device (§5 item 99).
        cached = self._alpha_cache
        if cached is not None and cached[0] == self.alpha:
            value = cached[1]
            if value.device == like.device and value.dtype == like.dtype:
                return value
        value = torch.tensor(self.alpha, device=like.device, dtype=like.dtype)
        self._alpha_cache = (self.alpha, value)
        return value

    @property
    def feature_rank(self) -> int:
        """Axes of the features at this slot: (N, C, *spatial) on a CNN host, (N, T, D) on a transformer."""
        return 2 + self.spatial_dims if self.topology is Topology.CNN else 3

    def _check_override(self, h: Tensor, alpha_override: Tensor) -> None:
        expected = (h.shape[0], *([1] * (self.feature_rank - 1)))
        if tuple(alpha_override.shape) != expected:
            raise ValueError(
                f"slot {self.slot_id}: alpha_override must have shape {expected}, got {tuple(alpha_override.shape)}"
            )

    def forward(self, h: Tensor, alpha_override: Tensor | None = None) -> Tensor:
        """Blend the seed into h; `alpha_override` is a per-sample amplitude for fused counterfactual passes."""
        seed = self.seed
        if seed is None or self.stage not in ACTIVE_STAGES:
            return h
        if alpha_override is not None:
            self._check_override(h, alpha_override)
        elif self.stage is SeedStage.TRAINING and self.alpha == 0.0:
            # Incubator: the value is exactly h, yet the seed receives the full upstream gradient as if it were
            # the layer output; its input is detached so host gradients match a seedless run (§5 item 98).
            s = seed(_detached_input(h)).to(h.dtype)
            result: torch.Tensor = h + (s - s.detach())
            return result
        seed_input = _detached_input(h) if self.isolate_gradients else h
        alpha = alpha_override if alpha_override is not None else self._alpha_tensor(h)
        return blend(self.alpha_algorithm, h, seed(seed_input), seed_input, alpha, self.gate)

    def blend_at(self, h: Tensor, amplitudes: Sequence[float]) -> list[Tensor]:
        """h blended with the seed at each amplitude, the seed run once for all of them (counterfactual passes).

        An amplitude is clamped to [0, 1], as a fused pass's override is. Amplitude 0 is the slot switched off:
        h itself, for which the seed does not run (every blend operator returns h at amplitude 0). Each result
        equals `forward(h, alpha_override)` with that amplitude for every sample.
        """
        seed = self.seed
        levels = [min(1.0, max(0.0, float(a))) for a in amplitudes]
        if seed is None or self.stage not in ACTIVE_STAGES or not any(levels):
            return [h for _ in levels]
        seed_input = _detached_input(h) if self.isolate_gradients else h
        s = seed(seed_input)
        shape = (h.shape[0], *([1] * (self.feature_rank - 1)))
        return [
            blend(self.alpha_algorithm, h, s, seed_input, torch.full(shape, a, device=h.device), self.gate)
            if a > 0.0
            else h
            for a in levels
        ]

    # ------------------------------------------------------------------ checkpoint (§6 item 111)

    def slot_checkpoint(self) -> dict[str, Any]:
        """Everything but tensors, as primitives; the seed and gate weights live in the state_dict."""
        return encode_slot(self)

    def load_slot_checkpoint(self, data: dict[str, Any]) -> None:
        """Restore from `slot_checkpoint()`, rebuilding the seed and gate modules when the slot lacks them.

        Loud on any version, key or identity mismatch (I14). When the slot already holds the same blueprint the
        existing modules are kept, so parameters (and optimizers holding them) keep their identity.
        """
        record = decode_slot(data, (self.slot_id, self.topology.value, self.channels))
        self._thaw()
        if not record.has_seed:
            self._release()
        else:
            assert record.blueprint is not None
            if self.seed is None or self.blueprint is not record.blueprint:
                seed = build_seed(self.topology, record.blueprint, self.channels, self.spatial_dims)
                self.seed = seed.to(self.device)
            if record.has_gate and self.gate is None:
                self.gate = self._new_gate()
            elif not record.has_gate:
                self.gate = None
            ladder = self.microstructure
            if ladder is not None:
                ladder.set_internal_level(record.internal_level)
        self.stage = record.stage
        self.seed_id = record.seed_id
        self.blueprint = record.blueprint
        self.blend_id = record.blend
        self.alpha_algorithm = record.alpha_algorithm
        self.alpha = record.alpha
        self.alpha_mode = record.alpha_mode
        self.isolate_gradients = record.isolate_gradients
        self._alpha_cache = None
        # The freeze is not stored as flags: it is re-derived from the controller mode (§4.6 item 95).
        self._apply_blend_out_freeze()

    def get_extra_state(self) -> dict[str, Any]:
        return self.slot_checkpoint()

    def set_extra_state(self, state: Any) -> None:
        # torch calls this before loading child modules, so a rebuilt seed receives its weights in the same load.
        self.load_slot_checkpoint(state)

    def extra_repr(self) -> str:
        return (
            f"slot_id={self.slot_id!r}, channels={self.channels}, topology={self.topology.value}, "
            f"stage={self.stage.name}, alpha={self.alpha:.3f}"
        )
