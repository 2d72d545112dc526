"""The 1-D host (mnist1d): seeds are real 1-D modules, and identity at birth, gradient isolation and the fused
counterfactual pass hold exactly as on 2-D maps."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn

from leyline_schemas import AlphaAlgorithm, AlphaControllerState, BlendId, BlueprintAction, SeedStage, SlotState
from leyline_schemas.enums import Topology
from services.kasmina.mechanics.blueprints import blueprint_catalog, blueprints_of, build_seed
from services.kasmina.mechanics.model import MorphogeneticModel
from services.tolaria import mnist1d
from services.tolaria.hosts import CNNHost
from services.tolaria.tasks import get_task
from services.tolaria.validation import fused_validate
from tests.tolaria.test_tolaria_validation import _separate_accuracy

B = BlueprintAction
CNN_SEEDS = [bp.action for bp in blueprints_of(Topology.CNN)]


def _host() -> CNNHost:
    host = get_task("mnist1d").build_host()
    assert isinstance(host, CNNHost)
    return host


def test_the_mnist1d_host_runs_on_signals_and_its_slots_say_so() -> None:
    host = _host()
    assert host(torch.randn(3, 1, 40)).shape == (3, 10)
    assert {spec.spatial_dims for spec in host.injection_specs()} == {1}
    assert not any(isinstance(m, nn.Conv2d) for m in host.modules())


@pytest.mark.parametrize("blueprint", CNN_SEEDS)
def test_every_cnn_blueprint_builds_as_a_1d_module_that_keeps_shape(blueprint: BlueprintAction) -> None:
    seed = build_seed(Topology.CNN, blueprint, 16, spatial_dims=1).eval()
    assert not any(isinstance(m, nn.Conv2d) for m in seed.modules())
    x = torch.randn(2, 16, 11)
    with torch.no_grad():
        assert seed(x).shape == x.shape


def test_1d_seeds_have_exactly_the_parameters_they_use_and_the_same_birth_identity() -> None:
    one = {i.name: i for i in blueprint_catalog(Topology.CNN, 16, spatial_dims=1)}
    two = {i.name: i for i in blueprint_catalog(Topology.CNN, 16)}
    # conv_light: one width-3 conv (16·16·3) and a GroupNorm (2·16), against 16·16·9 + 2·16 on images.
    assert one["conv_light"].param_count == 16 * 16 * 3 + 32
    assert two["conv_light"].param_count == 16 * 16 * 9 + 32
    assert {n: i.identity_at_birth for n, i in one.items()} == {n: i.identity_at_birth for n, i in two.items()}


def _blending(model: MorphogeneticModel, alpha: float) -> MorphogeneticModel:
    for slot in model.seed_slots():
        model.germinate(slot.slot_id, B.CONV_LIGHT, BlendId.SIGMOID, AlphaAlgorithm.ADD, seed_id=f"s-{slot.slot_id}")
        slot.sync(
            SlotState(
                slot_id=slot.slot_id,
                stage=SeedStage.BLENDING,
                seed_id=f"s-{slot.slot_id}",
                blueprint=B.CONV_LIGHT,
                controller=AlphaControllerState(alpha=alpha, alpha_target=1.0),
                isolate_gradients=True,
            )
        )
    return model


def test_identity_at_birth_a_germinated_seed_leaves_the_output_bit_for_bit() -> None:
    torch.manual_seed(0)
    model = MorphogeneticModel(_host(), ["r0c0", "r0c1", "r0c2"]).eval()
    x = torch.randn(8, 1, 40)
    with torch.no_grad():
        before = model(x)
        for slot in model.seed_slots():
            model.germinate(slot.slot_id, B.CONV_HEAVY, BlendId.SIGMOID, AlphaAlgorithm.ADD, seed_id="s")
        assert torch.equal(model(x), before)


def test_gradient_isolation_the_host_sees_one_minus_alpha_of_the_upstream_gradient() -> None:
    torch.manual_seed(0)
    model = _blending(MorphogeneticModel(_host(), ["r0c1"]), alpha=0.3)
    slot = model.slot("r0c1")
    h = torch.randn(4, 8, 20, requires_grad=True)
    upstream = torch.randn(4, 8, 20)
    (slot(h) * upstream).sum().backward()
    assert h.grad is not None and torch.allclose(h.grad, 0.7 * upstream, atol=1e-6)


def test_fused_validation_on_signals_matches_separate_forwards() -> None:
    slots = ["r0c0", "r0c1", "r0c2"]
    torch.manual_seed(0)
    model = _blending(MorphogeneticModel(_host(), slots), alpha=0.6).eval()
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(48, 1, 40, generator=g), torch.randint(0, 10, (48,), generator=g)
    result = fused_validate(model, [(x[:32], y[:32]), (x[32:], y[32:])], torch.device("cpu"))
    main = _separate_accuracy(model, x, y, {})
    assert abs(result.val_accuracy - main) < 1e-6
    for sid in slots:
        assert abs(result.contributions[sid] - (main - _separate_accuracy(model, x, y, {sid: 0.0}))) < 1e-6


def test_mnist1d_loads_offline_caches_and_leaves_the_global_rngs_alone(tmp_path: object) -> None:
    random.seed(7)
    np.random.seed(7)
    expected_py, expected_np = random.random(), np.random.rand()
    random.seed(7)
    np.random.seed(7)
    split = mnist1d.load_mnist1d_split(200, data_dir=tmp_path)  # type: ignore[arg-type]
    assert (random.random(), np.random.rand()) == (expected_py, expected_np)
    assert split.x_train.shape == (160, 1, mnist1d.SIGNAL_LENGTH) and split.x_val.shape == (40, 1, 40)
    assert abs(float(split.x_train.mean())) < 1e-5 and set(split.y_train.tolist()) <= set(range(10))
    again = mnist1d.load_mnist1d_split(200, data_dir=tmp_path)  # type: ignore[arg-type]
    assert torch.equal(again.x_val, split.x_val)
    assert len(list((tmp_path / "mnist1d").glob("*.npz"))) == 1  # type: ignore[operator]
    with pytest.raises(ValueError, match="at least 20"):
        mnist1d.load_mnist1d_split(10, data_dir=tmp_path)  # type: ignore[arg-type]
