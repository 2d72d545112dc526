"""The conv ladder (plans/kasmina2-phase0.md §6, invariants 21–25, 27, 28, 30, 31): shape and identity at every
level, active parameters counted from the structure, gradients only on active rungs, inactive rungs frozen by
construction, the slot's level checks and its version-2 checkpoint."""

from __future__ import annotations

import msgspec
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from leyline_schemas.enums import (
    AlphaAlgorithm,
    AlphaMode,
    BlendId,
    BlueprintAction,
    SeedInternalKind,
    SeedStage,
    Topology,
)
from leyline_schemas.lifecycle import SEED_INTERNALS, AlphaControllerState, SeedMetrics, SlotState
from services.kasmina.gates import QualityGates
from services.kasmina.mechanics.blueprints import blueprint_catalog, build_seed, get_blueprint
from services.kasmina.mechanics.gradients import GradientMonitor, gradient_ratio
from services.kasmina.mechanics.ladder import ConvLadderSeed, MicrostructuredSeed
from services.kasmina.mechanics.model import MorphogeneticModel
from services.kasmina.mechanics.slot import SLOT_CHECKPOINT_VERSION, SeedSlot, SlotCheckpointError, SlotSyncError
from services.tolaria.hosts import CNNHost
from tests.kasmina.mechanics.test_mech_slot import _roundtrip as checkpoint_roundtrip

B = BlueprintAction
SPEC = SEED_INTERNALS[B.CONV_LADDER]
LEVELS = st.integers(0, SPEC.max_level)
C = 8


def rung_size(channels: int, spatial_dims: int = 2) -> int:
    """9C² + 3C on images (3C² + 3C on signals): the conv, GroupNorm's affine pair and γ (§6.4)."""
    return (9 if spatial_dims == 2 else 3) * channels * channels + 3 * channels


def ladder(channels: int = C, level: int | None = None, spatial_dims: int = 2, seed: int = 0) -> ConvLadderSeed:
    torch.manual_seed(seed)
    built = ConvLadderSeed.from_spec(channels, SPEC, spatial_dims)
    if level is not None:
        built.set_internal_level(level)
    return built


def trained(seed: ConvLadderSeed, rungs: range | None = None, scale: float = 0.5) -> ConvLadderSeed:
    """Give rungs a non-zero γ, as training would, so that each one changes the output."""
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for i in rungs if rungs is not None else range(seed.internal_max_level):
            gamma = seed.rungs[i].scale
            gamma.copy_(torch.randn(gamma.shape, generator=gen) * scale)
    return seed


def features(shape: tuple[int, ...], seed: int = 0) -> Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def grown_slot(algorithm: AlphaAlgorithm = AlphaAlgorithm.ADD, channels: int = C) -> SeedSlot:
    torch.manual_seed(0)
    slot = SeedSlot("r0c0", channels, Topology.CNN)
    slot.germinate(B.CONV_LADDER, BlendId.GATED if algorithm is AlphaAlgorithm.GATE else BlendId.LINEAR, algorithm)
    return slot


def slot_state(
    slot: SeedSlot, stage: SeedStage, alpha: float = 0.0, mode: AlphaMode = AlphaMode.HOLD, **internal: object
) -> SlotState:
    """The state Kasmina would hand this slot; the internal fields follow the slot unless given."""
    state = SlotState(
        slot_id=slot.slot_id,
        stage=stage,
        seed_id=slot.seed_id,
        blueprint=slot.blueprint if slot.blueprint is not None else B.NOOP,
        blend=slot.blend_id,
        alpha_algorithm=slot.alpha_algorithm,
        controller=AlphaControllerState(alpha=alpha, alpha_target=alpha, mode=mode),
        isolate_gradients=True,
        internal_kind=slot.internal_kind,
        internal_level=slot.internal_level,
        internal_max_level=slot.internal_max_level,
    )
    return msgspec.structs.replace(state, **internal)


def seed_of(slot: SeedSlot) -> ConvLadderSeed:
    assert isinstance(slot.seed, ConvLadderSeed)
    return slot.seed


# --------------------------------------------------------------------------- invariant 21: shape and identity


@settings(max_examples=25, deadline=None)
@given(level=LEVELS, shape=st.sampled_from([(1, C, 32, 32), (2, C, 7, 5), (2, C, 11)]))
def test_the_ladder_preserves_shape_at_every_level(level: int, shape: tuple[int, ...]) -> None:
    seed = trained(ladder(level=level, spatial_dims=len(shape) - 2))
    x = features(shape)
    with torch.no_grad():
        out = seed(x)
    assert out.shape == x.shape
    assert torch.equal(out, x) == (level == 0), "every trained rung must change the output, level 0 none"


def test_level_zero_is_the_input_itself_and_a_fresh_ladder_is_the_identity() -> None:
    x = features((2, C, 7, 5))
    assert trained(ladder(level=0))(x) is x
    fresh = build_seed(Topology.CNN, B.CONV_LADDER, C)
    assert isinstance(fresh, ConvLadderSeed) and fresh.internal_level == SPEC.initial_level == 1
    with torch.no_grad():
        assert torch.equal(fresh(x), x)
        for level in range(SPEC.max_level + 1):
            fresh.set_internal_level(level)
            assert torch.equal(fresh(x), x), "every rung is born with γ = 0"


def test_a_multiply_germination_leaves_every_rung_alive_and_the_seed_the_identity() -> None:
    slot = grown_slot(AlphaAlgorithm.MULTIPLY)
    seed = seed_of(slot)
    for i in range(SPEC.max_level):
        assert bool(seed.rungs[i].conv.weight.abs().sum() > 0), f"rung {i}'s conv was zeroed (Choice 15)"
    h = features((2, C, 7, 5))
    slot.sync(slot_state(slot, SeedStage.BLENDING, alpha=0.7))
    with torch.no_grad():
        assert torch.equal(seed(h), h)
        assert torch.equal(slot(h), h)


def test_the_ladder_is_the_only_microstructured_cnn_seed() -> None:
    for bp in (B.CONV_LIGHT, B.CONV_HEAVY, B.NORM, B.NOOP):
        assert not isinstance(build_seed(Topology.CNN, bp, C), MicrostructuredSeed)
    assert isinstance(build_seed(Topology.CNN, B.CONV_LADDER, C), MicrostructuredSeed)


def test_the_registry_builds_the_ladder_leyline_describes() -> None:
    seed = build_seed(Topology.CNN, B.CONV_LADDER, C)
    assert isinstance(seed, ConvLadderSeed)
    assert (seed.internal_kind, seed.internal_max_level, seed.internal_level) == (
        SPEC.kind,
        SPEC.max_level,
        SPEC.initial_level,
    )
    assert len(seed.rungs) == SPEC.max_level


# --------------------------------------------------------------------------- invariant 22: parameter accounting


@pytest.mark.parametrize("channels", [16, 32, 64])
def test_active_params_are_the_level_times_one_rung(channels: int) -> None:
    seed = ladder(channels)
    counts = []
    for level in range(SPEC.max_level + 1):
        seed.set_internal_level(level)
        counts.append(seed.active_param_count())
    assert counts == [level * (9 * channels**2 + 3 * channels) for level in range(SPEC.max_level + 1)]
    assert sum(p.numel() for p in seed.parameters()) == counts[-1], "every rung exists at every level"
    one_dim = ladder(channels, level=3, spatial_dims=1)
    assert one_dim.active_param_count() == 3 * rung_size(channels, spatial_dims=1)


@settings(max_examples=10, deadline=None)
@given(level=LEVELS)
def test_the_slot_counts_active_seed_and_gate_params_whatever_the_blend_out_freeze_does(level: int) -> None:
    slot = grown_slot(AlphaAlgorithm.GATE)
    assert slot.gate is not None
    gate = sum(p.numel() for p in slot.gate.parameters())
    slot.set_internal_level(level)
    slot.sync(slot_state(slot, SeedStage.BLENDING, alpha=0.5))
    expected = level * rung_size(C) + gate
    assert slot.seed_param_count == expected
    slot.sync(slot_state(slot, SeedStage.BLENDING, alpha=0.5, mode=AlphaMode.DOWN))
    assert slot.frozen_for_blend_out and slot.seed_param_count == expected
    slot.sync(slot_state(slot, SeedStage.BLENDING, alpha=0.5))
    assert not slot.frozen_for_blend_out and slot.seed_param_count == expected


def test_levels_never_touch_requires_grad() -> None:
    slot = grown_slot()
    slot.sync(slot_state(slot, SeedStage.BLENDING, alpha=0.5, mode=AlphaMode.DOWN))
    for level in (0, 4, 2):
        slot.set_internal_level(level)
        assert not any(p.requires_grad for p in slot.seed_parameters()), "the freeze holds every rung"
    slot.sync(slot_state(slot, SeedStage.BLENDING, alpha=0.5))
    for level in (0, 3):
        slot.set_internal_level(level)
        assert all(p.requires_grad for p in slot.seed_parameters())


# --------------------------------------------------------------------------- invariant 23: gradients


def backward(seed: nn.Module, x: Tensor, seed_value: int = 3) -> None:
    (seed(x) * features(x.shape, seed_value)).sum().backward()


@settings(max_examples=10, deadline=None)
@given(level=LEVELS)
def test_backward_reaches_exactly_the_active_rungs(level: int) -> None:
    seed = ladder(level=level)
    backward(seed, features((2, C, 7, 5)).requires_grad_())
    for i in range(SPEC.max_level):
        grads = [p.grad for p in seed.rung_parameters(i)]
        if i < level:
            assert all(g is not None for g in grads), f"active rung {i} must be in the graph"
            gamma = seed.rungs[i].scale.grad
            assert gamma is not None and bool(gamma.abs().sum() > 0), f"rung {i}: ∂L/∂γ is non-zero at birth"
        else:
            assert all(g is None for g in grads), f"inactive rung {i} must stay outside the graph"


def test_a_grown_rung_learns_gamma_first_and_its_conv_one_step_later() -> None:
    seed = trained(ladder(level=1), range(1))
    optimizer = torch.optim.SGD(seed.parameters(), lr=0.1, momentum=0.9)
    x = features((2, C, 7, 5))
    assert seed.set_internal_level(2) == seed.rung_parameters(1)
    backward(seed, x)
    conv, gamma = seed.rungs[1].conv.weight.grad, seed.rungs[1].scale.grad
    assert gamma is not None and bool(gamma.abs().sum() > 0)
    assert conv is not None and not bool(conv.abs().sum() > 0), "γ = 0 blocks the conv's gradient at first"
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    backward(seed, x)
    conv = seed.rungs[1].conv.weight.grad
    assert conv is not None and bool(conv.abs().sum() > 0)


def test_shrinking_drops_the_gradient_of_the_rung_that_left_the_graph() -> None:
    seed = ladder(level=2)
    backward(seed, features((2, C, 7, 5)))
    assert all(p.grad is not None for p in seed.rung_parameters(1))
    assert seed.set_internal_level(1) == seed.rung_parameters(1)
    assert all(p.grad is None for p in seed.rung_parameters(1))
    assert all(p.grad is not None for p in seed.rung_parameters(0))


# --------------------------------------------------------------------------- invariant 24: inactive rungs are frozen


def train(seed: ConvLadderSeed, optimizer: torch.optim.Optimizer, steps: int, seed_value: int = 0) -> None:
    """Steps as Tolaria takes them: zero to None, backward, clip, step."""
    for step in range(steps):
        optimizer.zero_grad(set_to_none=True)
        backward(seed, features((4, C, 6, 6), seed_value + step), seed_value + 100 + step)
        nn.utils.clip_grad_norm_(list(seed.parameters()), 1.0)
        optimizer.step()


def snapshot(seed: ConvLadderSeed, rung: int) -> list[Tensor]:
    return [p.detach().clone() for p in seed.rung_parameters(rung)]


def same(a: list[Tensor], b: list[Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_inactive_rungs_stay_bit_identical_over_training_steps() -> None:
    seed = trained(ladder(level=3))
    optimizer = torch.optim.SGD(seed.parameters(), lr=0.05, momentum=0.9)
    train(seed, optimizer, 3)  # rung 2 gathers momentum
    seed.set_internal_level(2)
    before = [snapshot(seed, i) for i in range(SPEC.max_level)]
    train(seed, optimizer, 6, seed_value=50)
    for i in range(SPEC.max_level):
        assert same(snapshot(seed, i), before[i]) == (i >= 2), f"rung {i}"


def test_shrink_then_grow_at_learning_rate_zero_restores_the_output_exactly() -> None:
    seed = trained(ladder(level=2))
    optimizer = torch.optim.SGD(seed.parameters(), lr=0.05, momentum=0.9)
    train(seed, optimizer, 3)
    x = features((2, C, 7, 5), 9)
    with torch.no_grad():
        at_two = seed(x)
    rung = snapshot(seed, 1)
    seed.set_internal_level(1)
    with torch.no_grad():
        assert not torch.equal(seed(x), at_two)
    for group in optimizer.param_groups:
        group["lr"] = 0.0
    train(seed, optimizer, 3, seed_value=20)
    seed.set_internal_level(2)
    assert same(snapshot(seed, 1), rung)
    with torch.no_grad():
        assert torch.equal(seed(x), at_two)


# --------------------------------------------------------------------------- invariant 25: a GROW changes nothing


def cnn_model() -> MorphogeneticModel:
    torch.manual_seed(0)
    return MorphogeneticModel(CNNHost(base_channels=C, n_blocks=2), ["r0c0", "r0c1"]).eval()


@settings(max_examples=8, deadline=None)
@given(level=st.integers(0, SPEC.max_level - 1), alpha=st.sampled_from([0.3, 1.0]))
def test_a_grow_onto_a_fresh_rung_leaves_the_model_output_bit_identical(level: int, alpha: float) -> None:
    model = cnn_model()
    model.germinate("r0c1", B.CONV_LADDER, BlendId.LINEAR, AlphaAlgorithm.ADD, seed_id="ladder")
    slot = model.slot("r0c1")
    trained(seed_of(slot), range(level))
    slot.set_internal_level(level)
    model.apply_states([slot_state(slot, SeedStage.BLENDING, alpha=alpha)])
    x = features((3, 3, 16, 16))
    with torch.no_grad():
        before = model(x)
        slot.set_internal_level(level + 1)
        model.apply_states([slot_state(slot, SeedStage.BLENDING, alpha=alpha)])
        assert torch.equal(model(x), before)
    if level > 0:
        slot.set_internal_level(level - 1)
        with torch.no_grad():
            assert not torch.equal(model(x), before), "a SHRINK off a trained rung does change the output"


# --------------------------------------------------------------------------- invariant 27: the level is checked


def test_sync_refuses_a_state_whose_level_or_kind_is_not_the_slots() -> None:
    slot = grown_slot()
    slot.sync(slot_state(slot, SeedStage.TRAINING))
    for wrong in (
        {"internal_level": 2},
        {"internal_level": 0},
        {"internal_kind": SeedInternalKind.NONE, "internal_level": 0, "internal_max_level": 1},
        {"internal_kind": SeedInternalKind.NONE},
    ):
        with pytest.raises(SlotSyncError, match="level"):
            slot.sync(slot_state(slot, SeedStage.BLENDING, alpha=0.5, **wrong))
    assert slot.internal_level == 1, "sync never moves the level"
    plain = SeedSlot("r0c1", C, Topology.CNN)
    plain.germinate(B.CONV_LIGHT, BlendId.LINEAR, AlphaAlgorithm.ADD)
    with pytest.raises(SlotSyncError, match="CONV_LADDER"):
        plain.sync(slot_state(plain, SeedStage.TRAINING, internal_kind=SeedInternalKind.CONV_LADDER))
    plain.sync(slot_state(plain, SeedStage.TRAINING))


def test_only_a_live_microstructured_seed_changes_level() -> None:
    empty = SeedSlot("r0c0", C, Topology.CNN)
    with pytest.raises(SlotSyncError, match="no internal level"):
        empty.set_internal_level(1)
    plain = SeedSlot("r0c0", C, Topology.CNN)
    plain.germinate(B.CONV_HEAVY, BlendId.LINEAR, AlphaAlgorithm.ADD)
    with pytest.raises(SlotSyncError, match="no internal level"):
        plain.set_internal_level(1)
    slot = grown_slot()
    slot.sync(slot_state(slot, SeedStage.TRAINING))
    for bad in (-1, SPEC.max_level + 1):
        with pytest.raises(ValueError, match="level"):
            slot.set_internal_level(bad)
    seed = seed_of(slot)
    assert slot.set_internal_level(2) == seed.rung_parameters(1)
    assert slot.set_internal_level(1) == seed.rung_parameters(1)
    slot.sync(slot_state(slot, SeedStage.FOSSILIZED, alpha=1.0))
    with pytest.raises(SlotSyncError, match="FOSSILIZED"):
        slot.set_internal_level(2)
    assert slot.internal_level == 1


# --------------------------------------------------------------------------- invariant 28: checkpoint version 2


SEEDED_STAGES = [
    (SeedStage.GERMINATED, 0.0),
    (SeedStage.TRAINING, 0.0),
    (SeedStage.BLENDING, 0.4),
    (SeedStage.HOLDING, 1.0),
    (SeedStage.FOSSILIZED, 1.0),
]


@pytest.mark.parametrize("level", range(SPEC.max_level + 1))
@pytest.mark.parametrize(("stage", "alpha"), SEEDED_STAGES)
def test_a_checkpoint_round_trip_restores_the_level_and_the_outputs(stage: SeedStage, alpha: float, level: int) -> None:
    slot = grown_slot()
    trained(seed_of(slot))
    slot.set_internal_level(level)
    slot.sync(slot_state(slot, stage, alpha=alpha))
    restored = checkpoint_roundtrip(slot)
    assert restored.internal_level == level and restored.internal_kind is SeedInternalKind.CONV_LADDER
    assert restored.slot_checkpoint() == slot.slot_checkpoint()
    assert restored.slot_checkpoint()["version"] == SLOT_CHECKPOINT_VERSION == 2
    h = features((2, C, 7, 5))
    with torch.no_grad():
        assert torch.equal(seed_of(restored)(h), seed_of(slot)(h))
        assert torch.equal(restored(h), slot(h))
    restored.sync(slot_state(slot, stage, alpha=alpha))  # the state Kasmina holds still fits


@pytest.mark.parametrize("stage", [SeedStage.PRUNED, SeedStage.EMBARGOED, SeedStage.RESETTING])
def test_a_checkpoint_of_a_released_ladder_has_no_level(stage: SeedStage) -> None:
    slot = grown_slot()
    slot.set_internal_level(3)
    slot.sync(slot_state(slot, stage))
    restored = checkpoint_roundtrip(slot)
    assert (restored.internal_kind, restored.internal_level, restored.seed) == (SeedInternalKind.NONE, 0, None)
    assert restored.slot_checkpoint() == slot.slot_checkpoint()


def test_reloading_into_the_same_ladder_sets_its_level_and_keeps_its_parameters() -> None:
    slot = grown_slot()
    slot.set_internal_level(3)
    state = slot.state_dict()
    ids = [id(p) for p in slot.seed_parameters()]
    slot.set_internal_level(1)
    slot.load_state_dict(state)
    assert slot.internal_level == 3 and [id(p) for p in slot.seed_parameters()] == ids


def test_a_checkpoint_that_does_not_fit_fails_loudly() -> None:
    slot = grown_slot()
    slot.set_internal_level(2)
    good = slot.slot_checkpoint()
    version_one = {k: v for k, v in good.items() if k not in ("internal_kind", "internal_level")} | {"version": 1}
    plain = SeedSlot("r0c0", C, Topology.CNN)
    plain.germinate(B.CONV_LIGHT, BlendId.LINEAR, AlphaAlgorithm.ADD)
    for bad, message in (
        (version_one, "version"),
        ({**good, "version": 1}, "version"),
        ({**good, "internal_rungs": 4}, "unexpected"),
        ({k: v for k, v in good.items() if k != "internal_level"}, "missing"),
        ({**good, "internal_level": SPEC.max_level + 1}, "level 5"),
        ({**good, "internal_level": -1}, "level -1"),
        ({**good, "internal_level": 1.0}, "level 1.0"),
        ({**good, "internal_kind": int(SeedInternalKind.NONE)}, "kind NONE"),
        ({**good, "internal_kind": 9}, "unknown internal kind"),
        ({**plain.slot_checkpoint(), "internal_level": 1}, "level 1"),
        ({**plain.slot_checkpoint(), "internal_kind": int(SeedInternalKind.CONV_LADDER)}, "kind CONV_LADDER"),
    ):
        with pytest.raises(SlotCheckpointError, match=message):
            SeedSlot("r0c0", C, Topology.CNN).load_slot_checkpoint(bad)


# --------------------------------------------------------------------------- invariant 30: gradient health


def training_model(level: int) -> tuple[MorphogeneticModel, SeedSlot]:
    model = cnn_model().train()
    model.germinate("r0c0", B.CONV_LADDER, BlendId.LINEAR, AlphaAlgorithm.ADD, seed_id="ladder")
    slot = model.slot("r0c0")
    trained(seed_of(slot))
    slot.set_internal_level(level)
    model.apply_states([slot_state(slot, SeedStage.TRAINING)])
    model.zero_grad(set_to_none=True)
    logits = model(features((4, 3, 16, 16)))
    nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 3])).backward()
    return model, slot


def test_gradient_health_of_a_level_one_ladder_carries_no_flags_from_its_inactive_rungs() -> None:
    model, slot = training_model(1)
    monitor = GradientMonitor()
    assert monitor.observe(model) == ["r0c0"]
    report = monitor.report("r0c0")
    assert report is not None
    assert (report.has_vanishing, report.has_exploding, report.gradient_health) == (False, False, 1.0)
    seed_grads = [p.grad for p in slot.seed_parameters() if p.grad is not None]
    host_grads = [p.grad for p in model.host_parameters() if p.grad is not None]
    assert sum(g.numel() for g in seed_grads) == slot.seed_param_count == rung_size(C)
    seed_norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in seed_grads])))
    host_norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in host_grads])))
    host_count = sum(g.numel() for g in host_grads)
    expected = gradient_ratio(seed_norm, host_norm, host_count, rung_size(C))
    assert report.ratio == pytest.approx(expected, rel=1e-5), "the ratio counts the active rung's numel only"


def test_a_level_zero_ladder_in_training_is_unmeasured_and_fails_permissive_g2() -> None:
    model, _ = training_model(0)
    monitor = GradientMonitor()
    assert monitor.observe(model) == [] and monitor.report("r0c0") is None
    state = SlotState(
        slot_id="r0c0",
        stage=SeedStage.TRAINING,
        seed_id="ladder",
        blueprint=B.CONV_LADDER,
        metrics=SeedMetrics(epochs_in_current_stage=20, gradient_health=None),
        internal_kind=SeedInternalKind.CONV_LADDER,
        internal_level=0,
        internal_max_level=SPEC.max_level,
    )
    gate = QualityGates(permissive=True).check_transition(state, SeedStage.BLENDING)
    assert not gate.passed and "gradient_health_unmeasured" in gate.checks_failed
    measured = msgspec.structs.replace(state, metrics=msgspec.structs.replace(state.metrics, gradient_health=1.0))
    assert QualityGates(permissive=True).check_transition(measured, SeedStage.BLENDING).passed


# --------------------------------------------------------------------------- invariant 31: the catalog


@pytest.mark.parametrize(("channels", "spatial_dims"), [(16, 2), (32, 2), (64, 2), (16, 1)])
def test_the_catalog_reports_the_whole_ladder_and_what_runs_at_birth(channels: int, spatial_dims: int) -> None:
    info = {i.name: i for i in blueprint_catalog(Topology.CNN, channels, spatial_dims)}["conv_ladder"]
    rung = rung_size(channels, spatial_dims)
    assert info.param_count == 4 * rung
    assert info.active_param_count == SPEC.initial_level * rung == rung
    assert info.level_param_counts == tuple(level * rung for level in range(SPEC.max_level + 1))
    assert info.identity_at_birth and info.buildable
    assert info.param_estimate == 148_000 == get_blueprint(Topology.CNN, B.CONV_LADDER).param_estimate
    assert info.description == "up to 4 residual 3×3 conv rungs; level = active rungs"
    light = {i.name: i for i in blueprint_catalog(Topology.CNN, channels, spatial_dims)}["conv_light"]
    assert (light.active_param_count, light.level_param_counts) == (light.param_count, ())


# --------------------------------------------------------------------------- §6.6: torch.compile


def test_a_compiled_model_recompiles_once_per_newly_seen_level_and_never_for_a_revisit() -> None:
    """Dynamo specialises on the level, a Python int: at most L + 1 variants per ladder slot (§6.6 items 1–2).

    A counting backend stands in for inductor; what is measured is Dynamo's guards, which are the same for both.
    """
    import torch._dynamo

    graphs: list[int] = []

    def counting(gm: torch.fx.GraphModule, inputs: list[Tensor]) -> object:
        graphs.append(len(gm.graph.nodes))
        return gm.forward

    torch._dynamo.reset()
    model = cnn_model()
    model.germinate("r0c1", B.CONV_LADDER, BlendId.LINEAR, AlphaAlgorithm.ADD, seed_id="ladder")
    slot = model.slot("r0c1")
    trained(seed_of(slot))
    compiled = torch.compile(model, backend=counting, dynamic=False)
    x = features((4, 3, 16, 16))
    seen: set[int] = set()
    base = 0
    try:
        for level in (1, 2, 3, 2, 1, 0, 1, 4, 3, 4):
            slot.set_internal_level(level)
            model.apply_states([slot_state(slot, SeedStage.BLENDING, alpha=0.5)])
            with torch.no_grad():
                # Twice: the slot's cached alpha tensor appears after the first call, a guard of its own.
                for _ in range(2):
                    assert torch.equal(compiled(x), model(x)), "the compiled forward runs the same rungs"
            if not seen:
                base = len(graphs)
            seen.add(level)
            assert len(graphs) == base + len(seen) - 1, f"level {level}: {len(graphs) - base} recompiles"
    finally:
        torch._dynamo.reset()
