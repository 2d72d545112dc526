"""MorphogeneticModel: a host network with a SeedSlot at each enabled injection point (reference/kasmina.md §2.5)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from leyline_schemas.enums import AlphaAlgorithm, BlendId, BlueprintAction, Topology
from leyline_schemas.lifecycle import SlotSpec, SlotState
from services.kasmina.mechanics.slot import SeedSlot


@runtime_checkable
class SlottedHost(Protocol):
    """What a host must offer to carry seed slots (reference/kasmina.md §2.2)."""

    @property
    def topology(self) -> Topology: ...

    @property
    def injection_points(self) -> dict[str, int]: ...

    def injection_specs(self) -> list[SlotSpec]: ...

    def execution_order(self) -> list[str]: ...

    def forward_to_segment(self, segment: str, x: Tensor, from_segment: str | None = None) -> Tensor: ...

    def forward_from_segment(self, segment: str, x: Tensor) -> Tensor: ...


class MorphogeneticModel(nn.Module):
    """Routes the host through its enabled slots in execution order; slots are kept in action (row-major) order."""

    def __init__(self, host: nn.Module, slot_ids: Sequence[str] | None = None) -> None:
        super().__init__()
        if not isinstance(host, SlottedHost):
            raise TypeError(f"{type(host).__name__} does not implement the slotted host protocol")
        self.host = host
        self.topology = Topology(host.topology)
        points = host.injection_points
        wanted = list(points) if slot_ids is None else list(slot_ids)
        if len(set(wanted)) != len(wanted):
            raise ValueError(f"duplicate slot ids in {wanted}")
        unknown = [sid for sid in wanted if sid not in points]
        if unknown:
            raise ValueError(f"slots {unknown} are not injection points of this host; it has {sorted(points)}")
        self._specs = [spec for spec in host.injection_specs() if spec.slot_id in wanted]
        self.slots = nn.ModuleDict(
            {
                spec.slot_id: SeedSlot(spec.slot_id, spec.channels, self.topology, spec.spatial_dims)
                for spec in self._specs
            }
        )
        self._execution = [sid for sid in host.execution_order() if sid in self.slots]

    # ------------------------------------------------------------------ slots

    def slot(self, slot_id: str) -> SeedSlot:
        """The SeedSlot at `slot_id` (KeyError when not enabled)."""
        if slot_id not in self.slots:
            raise KeyError(f"slot {slot_id!r} is not enabled; enabled: {list(self.slots)}")
        found = self.slots[slot_id]
        assert isinstance(found, SeedSlot)
        return found

    def seed_slots(self) -> list[SeedSlot]:
        """Every enabled slot in action order."""
        return [self.slot(sid) for sid in self.slots]

    def slot_specs(self) -> list[SlotSpec]:
        """The enabled injection points as leyline SlotSpecs, in action order."""
        return list(self._specs)

    def execution_order(self) -> list[str]:
        """Enabled slots in forward order (may differ from action order on a CNN)."""
        return list(self._execution)

    def germinate(
        self,
        slot_id: str,
        blueprint: BlueprintAction,
        blend: BlendId,
        alpha_algorithm: AlphaAlgorithm,
        seed_id: str = "",
    ) -> None:
        """Germinate a seed in one slot (raises GerminationError)."""
        self.slot(slot_id).germinate(blueprint, blend, alpha_algorithm, seed_id)

    def prune(self, slot_id: str) -> bool:
        """Free one slot's seed; False when empty or FOSSILIZED."""
        return self.slot(slot_id).prune()

    def apply_states(self, states: Iterable[SlotState]) -> list[str]:
        """Sync each slot to Kasmina's state; returns the slots whose seed parameters changed."""
        changed: list[str] = []
        for state in states:
            if self.slot(state.slot_id).sync(state):
                changed.append(state.slot_id)
        return changed

    # ------------------------------------------------------------------ parameters

    def host_parameters(self) -> list[nn.Parameter]:
        """Every model parameter except the slots' (compared by identity), tied weights once (§1.6 item 34)."""
        seed_ids = {id(p) for slot in self.seed_slots() for p in slot.parameters()}
        return [p for p in self.parameters() if id(p) not in seed_ids]

    def seed_parameters(self, slot_id: str | None = None) -> list[nn.Parameter]:
        """Seed and gate parameters of one slot, or of every slot when `slot_id` is None."""
        slots = self.seed_slots() if slot_id is None else [self.slot(slot_id)]
        return [p for slot in slots for p in slot.seed_parameters()]

    @property
    def host_param_count(self) -> int:
        return sum(p.numel() for p in self.host_parameters())

    @property
    def active_seed_params(self) -> int:
        """Parameters of every seed module present (GERMINATED through FOSSILIZED), gates included."""
        return sum(slot.seed_param_count for slot in self.seed_slots())

    @property
    def total_params(self) -> int:
        return self.host_param_count + self.active_seed_params

    # ------------------------------------------------------------------ forward

    def _route(self, x: Tensor, overrides: dict[str, Tensor] | None) -> Tensor:
        if not self._execution:
            result: torch.Tensor = self.host(x)
            return result
        previous: str | None = None
        for sid in self._execution:
            x = self.host.forward_to_segment(sid, x, previous)
            x = self.slots[sid](x, None if overrides is None else overrides.get(sid))
            previous = sid
        assert previous is not None
        return self.host.forward_from_segment(previous, x)

    def forward(self, x: Tensor) -> Tensor:
        return self._route(x, None)

    def fused_forward(self, x_expanded: Tensor, alpha_overrides: dict[str, Tensor]) -> Tensor:
        """One pass over K configs stacked on the batch axis, each slot's alpha given per sample (§2.5 item 50)."""
        unknown = [sid for sid in alpha_overrides if sid not in self.slots]
        if unknown:
            raise ValueError(f"alpha overrides name slots that are not enabled: {unknown}")
        n = x_expanded.shape[0]
        for sid, alpha in alpha_overrides.items():
            expected = (n, *([1] * (self.slot(sid).feature_rank - 1)))
            if tuple(alpha.shape) != expected:
                raise ValueError(f"alpha override for {sid} must have shape {expected}, got {tuple(alpha.shape)}")
        return self._route(x_expanded, alpha_overrides)

    def forward_configs(self, x: Tensor, configs: Sequence[Mapping[str, float]]) -> Iterator[tuple[list[int], Tensor]]:
        """The logits of K alpha configurations on one batch, computing what configurations share only once.

        Yields `(indices, logits)` once per distinct configuration: `indices` are the positions in `configs` that
        those logits answer. Configurations agree on everything upstream of the first slot where their alphas
        differ, so the forward is walked as a tree, depth first: the host before the first slot runs once, a
        seed once per distinct input, a host segment once per distinct input, and a configuration equal to
        another costs nothing more. A slot at amplitude 0 passes its input through without running its seed.

        Alphas mean what `build_alpha_overrides` makes them mean in `fused_forward`: a slot named by some
        configuration is blended at that configuration's amplitude (its current alpha where one is silent); a
        slot named by none runs its own forward. Every tensor keeps the batch's size, so a configuration's
        logits are what its own pass computes, and memory holds one activation per slot depth, not K batches.
        """
        paths = self.config_paths(configs)
        if not self._execution:
            yield list(range(len(configs))), self.host(x)
            return
        yield from self._walk(x, 0, list(range(len(configs))), paths)

    def config_paths(self, configs: Sequence[Mapping[str, float]]) -> list[tuple[float | None, ...]]:
        """Each configuration as the amplitude it gives every slot in execution order (`forward_configs`).

        An amplitude is clamped to [0, 1]; None is a slot no configuration names, which runs its own forward.
        """
        named = _named_slots(self, configs)
        return [
            tuple(
                min(1.0, max(0.0, config.get(sid, self.slot(sid).alpha))) if sid in named else None
                for sid in self._execution
            )
            for config in configs
        ]

    def _walk(
        self, h: Tensor, depth: int, members: list[int], paths: list[tuple[float | None, ...]]
    ) -> Iterator[tuple[list[int], Tensor]]:
        previous = self._execution[depth - 1] if depth else None
        if depth == len(self._execution):
            assert previous is not None
            yield members, self.host.forward_from_segment(previous, h)
            return
        sid = self._execution[depth]
        h = self.host.forward_to_segment(sid, h, previous)
        branches: dict[float | None, list[int]] = {}
        for index in members:
            branches.setdefault(paths[index][depth], []).append(index)
        slot = self.slot(sid)
        amplitudes = [a for a in branches if a is not None]
        outputs: dict[float | None, Tensor] = dict(zip(amplitudes, slot.blend_at(h, amplitudes), strict=True))
        if None in branches:
            outputs[None] = slot(h)
        del h
        for amplitude, group in branches.items():
            yield from self._walk(outputs.pop(amplitude), depth + 1, group, paths)


def _named_slots(model: MorphogeneticModel, configs: Sequence[Mapping[str, float]]) -> set[str]:
    """The slots some alpha config names; ValueError for no configs or a slot the model does not have."""
    if not configs:
        raise ValueError("need at least one alpha config")
    named = {sid for config in configs for sid in config}
    unknown = sorted(named - set(model.slots))
    if unknown:
        raise ValueError(f"alpha configs name slots that are not enabled: {unknown}")
    return named


def expand_for_configs(x: Tensor, k: int) -> Tensor:
    """Stack K copies of a batch on the batch axis (config k occupies rows k·B … (k+1)·B − 1)."""
    if k < 1:
        raise ValueError(f"need at least one config, got {k}")
    return x.repeat(k, *([1] * (x.dim() - 1)))


def build_alpha_overrides(
    model: MorphogeneticModel, configs: list[dict[str, float]], batch_size: int
) -> dict[str, Tensor]:
    """Per-sample alpha tensors for K configs, matching `expand_for_configs` (tolaria_karn.md §3.6).

    A slot named by some config gets an override in every config (its current alpha where a config is silent);
    a slot absent from every config gets none, because an override changes that slot's forward path.
    """
    named = _named_slots(model, configs)
    overrides: dict[str, Tensor] = {}
    for sid in model.slots:
        if sid not in named:
            continue
        slot = model.slot(sid)
        current = slot.alpha
        values = torch.tensor([config.get(sid, current) for config in configs], dtype=torch.float32)
        trailing = [1] * (slot.feature_rank - 1)
        overrides[sid] = values.clamp(0.0, 1.0).repeat_interleave(batch_size).view(-1, *trailing).to(slot.device)
    return overrides
