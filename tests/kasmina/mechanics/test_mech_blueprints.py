"""Blueprint registry: catalog contents, exact sizes, identity at birth and shape preservation (I11)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from leyline_schemas.enums import CNN_BLUEPRINTS, TRANSFORMER_BLUEPRINTS, BlueprintAction, Topology
from services.kasmina.mechanics.blueprints import (
    blueprint_catalog,
    build_seed,
    get_blueprint,
    group_norm_groups,
    zero_init_final_layer,
)

B = BlueprintAction
CNN_IDENTITY = {B.NOOP, B.NORM, B.BOTTLENECK, B.CONV_SMALL, B.CONV_LADDER}
CNN_NOT_IDENTITY = {B.ATTENTION, B.DEPTHWISE, B.CONV_LIGHT, B.CONV_HEAVY}


def _probe(topology: Topology, channels: int, size: int = 5) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    shape = (2, channels, size, size + 1) if topology is Topology.CNN else (2, size, channels)
    return torch.randn(shape, generator=gen)


def test_catalog_covers_the_leyline_blueprint_sets() -> None:
    for topology, expected in ((Topology.CNN, CNN_BLUEPRINTS), (Topology.TRANSFORMER, TRANSFORMER_BLUEPRINTS)):
        catalog = blueprint_catalog(topology, 16)
        assert sorted(info.index for info in catalog) == sorted(int(b) for b in expected)
        assert all(info.name == B(info.index).name.lower() for info in catalog)
        estimates = [(info.param_estimate, info.name) for info in catalog]
        assert estimates == sorted(estimates)


def test_catalog_param_counts_are_exact() -> None:
    c = 16
    b = max(8, c // 4)
    r = max(1, c // 4)
    cnn = {info.name: info.param_count for info in blueprint_catalog(Topology.CNN, c)}
    assert cnn == {
        "noop": 0,
        "norm": 2 * c + 1,
        "attention": c * r + r * c + c,
        "depthwise": c * c + 11 * c,
        "bottleneck": 2 * c * b + 9 * b * b + 2 * c,
        "conv_small": c * c + 2 * c,
        "conv_light": 9 * c * c + 2 * c,
        "conv_heavy": 18 * c * c + 4 * c,
        "conv_ladder": 4 * (9 * c * c + 3 * c),
    }
    d = 16
    tf = {info.name: info.param_count for info in blueprint_catalog(Topology.TRANSFORMER, d)}
    assert tf == {
        "noop": 0,
        "norm": 2 * d + 1,
        "lora": 16 * d,
        "lora_large": 64 * d,
        "attention": 4 * d * d + 4 * d,
        "flex_attention": 4 * d * d + 4 * d,
        "mlp_small": 4 * d * d + 3 * d,
        "mlp": 8 * d * d + 5 * d,
    }


def test_catalog_identity_flags_match_the_reference() -> None:
    cnn = {B(info.index): info.identity_at_birth for info in blueprint_catalog(Topology.CNN, 8)}
    assert {b for b, ident in cnn.items() if ident} == CNN_IDENTITY
    tf = blueprint_catalog(Topology.TRANSFORMER, 8)
    assert all(info.identity_at_birth for info in tf)


@pytest.mark.parametrize("blueprint", CNN_BLUEPRINTS)
def test_cnn_identity_at_birth(blueprint: BlueprintAction) -> None:
    seed = build_seed(Topology.CNN, blueprint, 8)
    x = _probe(Topology.CNN, 8)
    with torch.no_grad():
        out = seed(x)
    assert torch.equal(out, x) == (blueprint in CNN_IDENTITY)


def test_squeeze_excite_starts_near_095() -> None:
    seed = build_seed(Topology.CNN, B.ATTENTION, 8)
    x = _probe(Topology.CNN, 8)
    with torch.no_grad():
        ratio = seed(x) / x
    assert torch.allclose(ratio, torch.full_like(ratio, torch.sigmoid(torch.tensor(3.0)).item()), atol=1e-5)


@pytest.mark.parametrize("blueprint", TRANSFORMER_BLUEPRINTS)
def test_transformer_identity_at_birth(blueprint: BlueprintAction) -> None:
    seed = build_seed(Topology.TRANSFORMER, blueprint, 8)
    x = _probe(Topology.TRANSFORMER, 8)
    with torch.no_grad():
        assert torch.equal(seed(x), x)


@settings(max_examples=12, deadline=None)
@given(
    blueprint=st.sampled_from(CNN_BLUEPRINTS),
    h=st.integers(1, 9),
    w=st.integers(1, 9),
    channels=st.sampled_from([4, 8, 12]),
)
def test_cnn_seeds_preserve_shape(blueprint: BlueprintAction, h: int, w: int, channels: int) -> None:
    seed = build_seed(Topology.CNN, blueprint, channels)
    x = torch.randn(2, channels, h, w)
    assert seed(x).shape == x.shape


@settings(max_examples=12, deadline=None)
@given(blueprint=st.sampled_from(TRANSFORMER_BLUEPRINTS), t=st.integers(1, 9), dim=st.sampled_from([8, 16]))
def test_transformer_seeds_preserve_shape(blueprint: BlueprintAction, t: int, dim: int) -> None:
    seed = build_seed(Topology.TRANSFORMER, blueprint, dim)
    x = torch.randn(2, t, dim)
    assert seed(x).shape == x.shape


def test_group_norm_group_rule() -> None:
    assert group_norm_groups(512) == 32
    assert group_norm_groups(64) == 4
    assert group_norm_groups(16) == 1
    assert group_norm_groups(8) == 8
    assert group_norm_groups(12) == 4
    assert group_norm_groups(7) == 1


@pytest.mark.parametrize("blueprint", [B.DEPTHWISE, B.CONV_LIGHT, B.CONV_HEAVY, B.BOTTLENECK])
def test_zero_init_final_layer_makes_residual_seeds_identity(blueprint: BlueprintAction) -> None:
    seed = build_seed(Topology.CNN, blueprint, 8)
    assert zero_init_final_layer(seed)
    x = _probe(Topology.CNN, 8)
    with torch.no_grad():
        assert torch.equal(seed(x), x)


def test_zero_init_final_layer_leaves_layerless_seeds_alone() -> None:
    seed = build_seed(Topology.CNN, B.NORM, 8)
    before = [p.clone() for p in seed.parameters()]
    assert not zero_init_final_layer(seed)
    assert all(torch.equal(a, b) for a, b in zip(before, seed.parameters(), strict=True))


def test_flex_attention_matches_sdpa_attention() -> None:
    sdpa = build_seed(Topology.TRANSFORMER, B.ATTENTION, 16)
    flex = build_seed(Topology.TRANSFORMER, B.FLEX_ATTENTION, 16)
    for module in (sdpa, flex):
        with torch.no_grad():
            for p in module.parameters():
                p.copy_(torch.linspace(-0.5, 0.5, p.numel()).view_as(p))
    x = _probe(Topology.TRANSFORMER, 16, size=6)
    with torch.no_grad():
        assert torch.allclose(flex(x), sdpa(x), atol=1e-5)
    # With grad on CPU the flex seed falls back to SDPA and still trains.
    out = flex(x.requires_grad_())
    out.sum().backward()
    assert all(p.grad is not None for p in flex.parameters())


def test_unknown_blueprint_for_topology_raises() -> None:
    with pytest.raises(KeyError, match="lora"):
        get_blueprint(Topology.CNN, B.LORA)
    with pytest.raises(ValueError):
        build_seed(Topology.TRANSFORMER, B.ATTENTION, 6)
    catalog = {info.name: info for info in blueprint_catalog(Topology.TRANSFORMER, 6)}
    assert not catalog["attention"].buildable and catalog["lora"].buildable
