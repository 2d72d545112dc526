"""SeedSlot mechanics: germination, identity stages, incubator (I3), isolation (I4), blend-out freeze (I9), I14."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest
import torch
from torch import Tensor, nn

from leyline_schemas.enums import AlphaAlgorithm, AlphaMode, BlendId, BlueprintAction, SeedStage, Topology
from leyline_schemas.lifecycle import AlphaControllerState, SlotState
from services.kasmina.mechanics.slot import (
    GerminationError,
    SeedSlot,
    SlotCheckpointError,
    SlotSyncError,
)

B = BlueprintAction
C = 4


def _state(
    slot: SeedSlot,
    stage: SeedStage,
    alpha: float = 0.0,
    mode: AlphaMode = AlphaMode.HOLD,
    isolate: bool = True,
    algorithm: AlphaAlgorithm | None = None,
) -> SlotState:
    return SlotState(
        slot_id=slot.slot_id,
        stage=stage,
        seed_id=slot.seed_id,
        blueprint=slot.blueprint if slot.blueprint is not None else B.NOOP,
        blend=slot.blend_id,
        alpha_algorithm=algorithm if algorithm is not None else slot.alpha_algorithm,
        controller=AlphaControllerState(alpha=alpha, alpha_target=alpha, mode=mode),
        isolate_gradients=isolate,
    )


def _grown(
    blueprint: BlueprintAction = B.CONV_LIGHT,
    algorithm: AlphaAlgorithm = AlphaAlgorithm.ADD,
    topology: Topology = Topology.CNN,
) -> SeedSlot:
    slot = SeedSlot("r0c0", C, topology)
    blend = BlendId.GATED if algorithm is AlphaAlgorithm.GATE else BlendId.LINEAR
    slot.germinate(blueprint, blend, algorithm)
    return slot


def _features(seed: int = 0, topology: Topology = Topology.CNN) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    shape = (3, C, 5, 5) if topology is Topology.CNN else (3, 6, C)
    return torch.randn(shape, generator=gen)


def test_empty_slot_returns_input_object() -> None:
    slot = SeedSlot("r0c0", C, Topology.CNN)
    h = _features()
    assert slot(h) is h
    assert not slot.occupied and slot.seed_param_count == 0


@pytest.mark.parametrize(
    "stage", [SeedStage.GERMINATED, SeedStage.PRUNED, SeedStage.EMBARGOED, SeedStage.RESETTING, SeedStage.DORMANT]
)
def test_non_active_stages_are_exact_identity(stage: SeedStage) -> None:
    slot = _grown()
    slot.sync(_state(slot, stage, alpha=0.7))
    h = _features()
    assert slot(h) is h


def test_germination_sets_stage_and_default_seed_id() -> None:
    slot = _grown(B.BOTTLENECK)
    assert slot.stage is SeedStage.GERMINATED and slot.seed_id == "r0c0-bottleneck"
    assert slot.seed_param_count == sum(p.numel() for p in slot.seed_parameters()) > 0
    assert slot.gate is None


def test_germination_rejects_occupied_slot_until_dormant() -> None:
    slot = _grown()
    with pytest.raises(GerminationError, match="I2"):
        slot.germinate(B.NORM, BlendId.LINEAR, AlphaAlgorithm.ADD)
    assert slot.prune() and slot.seed is None and slot.stage is SeedStage.PRUNED
    for stage in (SeedStage.PRUNED, SeedStage.EMBARGOED, SeedStage.RESETTING):
        slot.sync(_state(slot, stage))
        with pytest.raises(GerminationError, match="I2"):
            slot.germinate(B.NORM, BlendId.LINEAR, AlphaAlgorithm.ADD)
    slot.sync(_state(slot, SeedStage.DORMANT))
    slot.germinate(B.NORM, BlendId.LINEAR, AlphaAlgorithm.ADD)


def test_germination_rejects_bad_pairings_and_blueprints() -> None:
    slot = SeedSlot("r0c0", C, Topology.CNN)
    with pytest.raises(GerminationError, match="gated"):
        slot.germinate(B.NORM, BlendId.GATED, AlphaAlgorithm.ADD)
    with pytest.raises(GerminationError, match="gated"):
        slot.germinate(B.NORM, BlendId.LINEAR, AlphaAlgorithm.GATE)
    with pytest.raises(GerminationError, match="lora"):
        slot.germinate(B.LORA, BlendId.LINEAR, AlphaAlgorithm.ADD)
    assert not slot.occupied


def test_germination_probe_rejects_shape_changing_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        "services.kasmina.mechanics.slot.build_seed", lambda topology, bp, c, dims=2: nn.Conv2d(c, c, 3)
    )
    slot = SeedSlot("r0c0", C, Topology.CNN)
    with pytest.raises(GerminationError, match="I11"):
        slot.germinate(B.CONV_LIGHT, BlendId.LINEAR, AlphaAlgorithm.ADD)
    assert slot.seed is None and not slot.occupied


def test_multiply_zero_inits_and_gate_builds_gate() -> None:
    slot = _grown(B.CONV_LIGHT, AlphaAlgorithm.MULTIPLY)
    h = _features()
    assert slot.seed is not None
    with torch.no_grad():
        assert torch.equal(slot.seed(h), h)
    gated = _grown(B.NORM, AlphaAlgorithm.GATE)
    assert gated.gate is not None
    assert len(gated.seed_parameters()) == 3 + 4


def _host_grads(slot: SeedSlot | None) -> tuple[Tensor, list[Tensor], Tensor]:
    torch.manual_seed(0)
    host = nn.Conv2d(C, C, 3, padding=1)
    x = _features(1)
    h = host(x)
    out = slot(h) if slot is not None else h
    upstream = _features(2)
    (out * upstream).sum().backward()
    return out.detach(), [p.grad.clone() for p in host.parameters() if p.grad is not None], h.detach()


def test_training_incubator_is_host_output_with_seed_gradients() -> None:
    slot = _grown(B.CONV_LIGHT)
    slot.sync(_state(slot, SeedStage.TRAINING))
    out, grads_with, h = _host_grads(slot)
    _, grads_without, _ = _host_grads(None)
    assert torch.equal(out, h)
    assert all(torch.equal(a, b) for a, b in zip(grads_with, grads_without, strict=True))
    assert all(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in slot.seed_parameters())


@pytest.mark.parametrize("algorithm", [AlphaAlgorithm.ADD, AlphaAlgorithm.GATE])
def test_cnn_blending_isolated_host_gets_one_minus_alpha(algorithm: AlphaAlgorithm) -> None:
    slot = _grown(B.CONV_LIGHT, algorithm)
    slot.sync(_state(slot, SeedStage.BLENDING, alpha=0.3, isolate=True))
    h = _features().requires_grad_()
    upstream = _features(3)
    (slot(h) * upstream).sum().backward()
    assert h.grad is not None
    if algorithm is AlphaAlgorithm.ADD:
        assert torch.allclose(h.grad, 0.7 * upstream, atol=1e-6)
    else:
        assert slot.gate is not None
        with torch.no_grad():
            a_eff = 0.3 * slot.gate(h.detach())
        assert torch.allclose(h.grad, (1 - a_eff) * upstream, atol=1e-6)


def test_transformer_blending_unisolated_feeds_back_to_host() -> None:
    slot = _grown(B.LORA, topology=Topology.TRANSFORMER)
    assert slot.seed is not None
    with torch.no_grad():
        for p in slot.seed.parameters():
            p.fill_(0.1)
    slot.sync(_state(slot, SeedStage.BLENDING, alpha=0.3, isolate=False))
    h = _features(topology=Topology.TRANSFORMER).requires_grad_()
    upstream = _features(3, Topology.TRANSFORMER)
    (slot(h) * upstream).sum().backward()
    assert h.grad is not None and not torch.allclose(h.grad, 0.7 * upstream, atol=1e-4)


def test_channels_last_input_is_blended_correctly() -> None:
    slot = _grown(B.CONV_SMALL)
    slot.sync(_state(slot, SeedStage.BLENDING, alpha=0.5))
    h = _features()
    out = slot(h.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(out, slot(h), atol=1e-6)


def test_isolated_seed_runs_on_a_contiguous_detached_copy_of_a_channels_last_input() -> None:
    slot = _grown(B.CONV_LIGHT)
    assert slot.seed is not None
    slot.sync(_state(slot, SeedStage.BLENDING, alpha=0.5))
    seen: list[torch.Tensor] = []
    slot.seed.register_forward_pre_hook(lambda _module, args: seen.append(args[0]))
    h = _features().contiguous(memory_format=torch.channels_last).requires_grad_()
    upstream = _features(3).contiguous(memory_format=torch.channels_last)
    (slot(h) * upstream).sum().backward()
    (seed_input,) = seen
    assert seed_input.is_contiguous() and not seed_input.requires_grad and seed_input.data_ptr() != h.data_ptr()
    # Isolation: only the direct (1 − a) path reaches h.
    assert h.grad is not None and torch.allclose(h.grad, 0.5 * upstream, atol=1e-6)


# GroupNorm's CPU backward on a channels_last input that needs no gradient dies with SIGSEGV (torch 2.13); an
# isolated seed's input is exactly that unless it is copied to NCHW (§5 item 97). A crash would take pytest with
# it, so every CNN blueprint trains, isolated, under a channels_last host in a child process.
_EVERY_ISOLATED_SEED_UNDER_CHANNELS_LAST = """
import torch
from torch import nn
from leyline_schemas.enums import AlphaAlgorithm, AlphaMode, BlendId, SeedStage, Topology
from leyline_schemas.lifecycle import AlphaControllerState, SlotState, internal_spec
from services.kasmina.mechanics.blueprints import blueprints_of
from services.kasmina.mechanics.slot import SeedSlot

conv = nn.Conv2d(1, 32, 3, padding=1).to(memory_format=torch.channels_last)
x = torch.randn(3, 1, 8, 8).contiguous(memory_format=torch.channels_last)
for blueprint in blueprints_of(Topology.CNN):
    for stage, alpha in ((SeedStage.TRAINING, 0.0), (SeedStage.BLENDING, 0.5)):
        slot = SeedSlot("r0c0", 32, Topology.CNN)
        slot.germinate(blueprint.action, BlendId.LINEAR, AlphaAlgorithm.ADD)
        controller = AlphaControllerState(alpha=alpha, alpha_target=alpha, mode=AlphaMode.HOLD)
        spec = internal_spec(blueprint.action)
        slot.sync(SlotState(slot_id="r0c0", stage=stage, seed_id=slot.seed_id, blueprint=blueprint.action,
                            blend=BlendId.LINEAR, alpha_algorithm=AlphaAlgorithm.ADD, controller=controller,
                            isolate_gradients=True, internal_kind=spec.kind, internal_level=spec.initial_level,
                            internal_max_level=spec.max_level))
        slot(conv(x)).sum().backward()
        print(blueprint.name, stage.name, flush=True)
"""


def test_every_isolated_cnn_seed_trains_under_a_channels_last_host_without_crashing() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _EVERY_ISOLATED_SEED_UNDER_CHANNELS_LAST], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"exit {result.returncode} after:\n{result.stdout}{result.stderr[-2000:]}"
    assert "norm TRAINING" in result.stdout and "conv_light BLENDING" in result.stdout
    assert "conv_ladder BLENDING" in result.stdout


def test_blend_out_freeze_and_exact_restore() -> None:
    slot = _grown(B.CONV_LIGHT, AlphaAlgorithm.GATE)
    slot.sync(_state(slot, SeedStage.BLENDING, alpha=0.6))
    params = slot.seed_parameters()
    params[0].requires_grad_(False)  # frozen by someone else: must stay frozen after the restore
    slot.sync(_state(slot, SeedStage.BLENDING, alpha=0.5, mode=AlphaMode.DOWN))
    assert slot.frozen_for_blend_out and not any(p.requires_grad for p in params)
    h = _features().requires_grad_()
    slot(h).sum().backward()
    assert h.grad is not None  # the (1 − a) path to the host survives the freeze
    slot.sync(_state(slot, SeedStage.BLENDING, alpha=0.5, mode=AlphaMode.HOLD))
    assert [p.requires_grad for p in params] == [False] + [True] * (len(params) - 1)
    assert not slot.frozen_for_blend_out


def test_algorithm_switch_creates_and_drops_gate() -> None:
    slot = _grown(B.NORM)
    slot.sync(_state(slot, SeedStage.BLENDING, alpha=0.5))
    assert slot.sync(_state(slot, SeedStage.BLENDING, alpha=0.5, algorithm=AlphaAlgorithm.GATE))
    assert slot.gate is not None
    assert not slot.sync(_state(slot, SeedStage.BLENDING, alpha=0.5))
    assert slot.sync(_state(slot, SeedStage.BLENDING, alpha=0.5, algorithm=AlphaAlgorithm.ADD))
    assert slot.gate is None


def test_sync_rejects_contradictions() -> None:
    slot = SeedSlot("r0c0", C, Topology.CNN)
    with pytest.raises(SlotSyncError, match="no seed"):
        slot.sync(SlotState(slot_id="r0c0", stage=SeedStage.TRAINING))
    with pytest.raises(SlotSyncError):
        slot.sync(SlotState(slot_id="r1c0"))
    slot.germinate(B.NORM, BlendId.LINEAR, AlphaAlgorithm.ADD)
    slot.sync(_state(slot, SeedStage.FOSSILIZED, alpha=1.0))
    assert not slot.prune()
    with pytest.raises(SlotSyncError, match="I1"):
        slot.sync(_state(slot, SeedStage.PRUNED))


def test_pruning_through_sync_frees_the_module() -> None:
    slot = _grown()
    slot.sync(_state(slot, SeedStage.BLENDING, alpha=0.5))
    assert slot.sync(_state(slot, SeedStage.PRUNED))
    assert slot.seed is None and slot.alpha == 0.0 and not slot.isolate_gradients


def test_alpha_override_skips_incubator_and_acts_per_sample() -> None:
    slot = _grown(B.CONV_LIGHT)
    slot.sync(_state(slot, SeedStage.TRAINING))
    h = _features()
    override = torch.tensor([0.0, 0.5, 1.0]).view(3, 1, 1, 1)
    assert slot.seed is not None
    with torch.no_grad():
        out = slot(h, override)
        s = slot.seed(h)
    assert torch.equal(out[0], h[0])
    assert torch.allclose(out[1], 0.5 * (h[1] + s[1]), atol=1e-6)
    assert torch.allclose(out[2], s[2], atol=1e-6)
    with pytest.raises(ValueError, match="shape"):
        slot(h, torch.zeros(3, 1, 1))


def _roundtrip(slot: SeedSlot) -> SeedSlot:
    buffer = io.BytesIO()
    torch.save(slot.state_dict(), buffer)
    buffer.seek(0)
    fresh = SeedSlot(slot.slot_id, slot.channels, slot.topology)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    return fresh


@pytest.mark.parametrize(
    ("stage", "mode", "algorithm"),
    [
        (SeedStage.GERMINATED, AlphaMode.HOLD, AlphaAlgorithm.ADD),
        (SeedStage.TRAINING, AlphaMode.HOLD, AlphaAlgorithm.MULTIPLY),
        (SeedStage.BLENDING, AlphaMode.UP, AlphaAlgorithm.GATE),
        (SeedStage.BLENDING, AlphaMode.DOWN, AlphaAlgorithm.ADD),
        (SeedStage.HOLDING, AlphaMode.HOLD, AlphaAlgorithm.GATE),
        (SeedStage.FOSSILIZED, AlphaMode.HOLD, AlphaAlgorithm.ADD),
        (SeedStage.EMBARGOED, AlphaMode.HOLD, AlphaAlgorithm.ADD),
    ],
)
def test_checkpoint_roundtrip(stage: SeedStage, mode: AlphaMode, algorithm: AlphaAlgorithm) -> None:
    slot = _grown(B.CONV_LIGHT, algorithm)
    slot.sync(_state(slot, stage, alpha=0.4 if stage is not SeedStage.TRAINING else 0.0, mode=mode))
    restored = _roundtrip(slot)
    assert restored.slot_checkpoint() == slot.slot_checkpoint()
    assert restored.frozen_for_blend_out == (mode is AlphaMode.DOWN)
    h = _features()
    with torch.no_grad():
        assert torch.equal(restored(h), slot(h))


def test_checkpoint_reload_keeps_parameter_identity() -> None:
    slot = _grown(B.CONV_LIGHT, AlphaAlgorithm.GATE)
    slot.sync(_state(slot, SeedStage.BLENDING, alpha=0.4))
    before = [id(p) for p in slot.seed_parameters()]
    slot.load_state_dict(slot.state_dict())
    assert [id(p) for p in slot.seed_parameters()] == before


def test_checkpoint_mismatch_is_loud() -> None:
    slot = _grown()
    good = slot.slot_checkpoint()
    fresh = SeedSlot("r0c0", C, Topology.CNN)
    for bad in (
        {**good, "version": 1},
        {**good, "version": 3},
        {k: v for k, v in good.items() if k != "alpha"},
        {**good, "extra": 1},
        {**good, "channels": 8},
        {**good, "has_gate": True},
    ):
        with pytest.raises(SlotCheckpointError, match="I14"):
            fresh.load_slot_checkpoint(bad)
    with pytest.raises(SlotCheckpointError, match="I14"):
        SeedSlot("r0c1", C, Topology.CNN).load_slot_checkpoint(good)
