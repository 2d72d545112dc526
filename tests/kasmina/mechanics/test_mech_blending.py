"""Blend operators: identity at a = 0, MULTIPLY bounds, GATE amplitude range, dtype alignment (I5)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from leyline_schemas.enums import AlphaAlgorithm, Topology
from services.kasmina.mechanics.blending import (
    GatedBlend,
    blend,
    blend_add,
    blend_gate,
    blend_multiply,
    gate_alpha,
)

seeds = st.integers(0, 2**16)


def _pair(seed: int, shape: tuple[int, ...] = (3, 4, 5, 5)) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen), torch.randn(shape, generator=gen) * 3


@settings(max_examples=25, deadline=None)
@given(seed=seeds)
def test_every_operator_is_identity_at_zero(seed: int) -> None:
    h, s = _pair(seed)
    zero = torch.tensor(0.0)
    gate = torch.rand(3, 1, 1, 1)
    assert torch.equal(blend_add(h, s, zero), h)
    assert torch.equal(blend_multiply(h, s, h, zero), h)
    assert torch.equal(blend_gate(h, s, zero, gate), h)


@settings(max_examples=25, deadline=None)
@given(seed=seeds, a=st.floats(0.0, 1.0))
def test_add_is_lerp(seed: int, a: float) -> None:
    h, s = _pair(seed)
    assert torch.allclose(blend_add(h, s, torch.tensor(a)), h + a * (s - h), atol=1e-5)


@settings(max_examples=25, deadline=None)
@given(seed=seeds, a=st.floats(0.0, 1.0))
def test_multiply_stays_within_one_plus_minus_alpha(seed: int, a: float) -> None:
    h, s = _pair(seed)
    seed_input = h + 0.1
    y = blend_multiply(h, s, seed_input, torch.tensor(a))
    mask = h.abs() > 1e-3
    multiplier = (y / h)[mask]
    assert multiplier.min() >= 1 - a - 1e-5
    assert multiplier.max() <= 1 + a + 1e-5


@settings(max_examples=25, deadline=None)
@given(alpha=st.floats(-2.0, 3.0), gate=st.floats(-5.0, 5.0))
def test_gate_effective_alpha_stays_in_unit_interval(alpha: float, gate: float) -> None:
    like = torch.zeros(1)
    a_eff = gate_alpha(torch.tensor(alpha), torch.tensor([gate]), like)
    assert 0.0 <= float(a_eff) <= 1.0


def test_multiply_gives_no_gradient_through_the_seed_input() -> None:
    h, s = _pair(0)
    seed_input = h.clone().requires_grad_()
    s = s.requires_grad_()
    blend_multiply(h, s, seed_input, torch.tensor(0.5)).sum().backward()
    assert seed_input.grad is None
    assert s.grad is not None and bool(s.grad.abs().sum() > 0)


def test_operators_align_dtype_to_host() -> None:
    h, s = _pair(1)
    h16 = h.to(torch.bfloat16)
    alpha = torch.full((3, 1, 1, 1), 0.4)
    assert blend_add(h16, s, alpha).dtype == torch.bfloat16
    assert blend_multiply(h16, s, h, alpha).dtype == torch.bfloat16
    assert blend_gate(h16, s, alpha, torch.rand(3, 1, 1, 1)).dtype == torch.bfloat16


def test_gated_blend_shapes_and_range() -> None:
    cnn = GatedBlend(16, Topology.CNN)
    assert sum(p.numel() for p in cnn.fc1.parameters()) == 16 * 8 + 8
    g = cnn(torch.randn(5, 16, 3, 3))
    assert g.shape == (5, 1, 1, 1) and bool(((g >= 0) & (g <= 1)).all())
    tf = GatedBlend(64, Topology.TRANSFORMER)
    assert tf.fc1.out_features == 16
    assert tf(torch.randn(2, 7, 64)).shape == (2, 1, 1)


def test_gate_network_presence_must_match_algorithm() -> None:
    h, s = _pair(2)
    gate = GatedBlend(4, Topology.CNN)
    alpha = torch.tensor(0.5)
    with pytest.raises(RuntimeError, match="I5"):
        blend(AlphaAlgorithm.GATE, h, s, h, alpha, None)
    for algorithm in (AlphaAlgorithm.ADD, AlphaAlgorithm.MULTIPLY):
        with pytest.raises(RuntimeError, match="I5"):
            blend(algorithm, h, s, h, alpha, gate)
    assert torch.equal(blend(AlphaAlgorithm.GATE, h, s, h, torch.tensor(0.0), gate), h)
