"""The contribution probe's head, loss and target normaliser (plans/counterfactual-oracle.md §6; O4, O5, O8)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from services.policy.probe import (
    RHO_INIT,
    SCALE_MIN_SAMPLES,
    TARGET_CLIP,
    VARIANCE_MAX,
    VARIANCE_MIN,
    ProbeHead,
    ProbeOutput,
    StandaloneProbe,
    TargetNormalizer,
    probe_loss,
    probe_variance,
)


def _output(mu: list[float], rho: list[float], harm: list[float]) -> ProbeOutput:
    return ProbeOutput(
        mu=torch.tensor(mu, requires_grad=True),
        rho=torch.tensor(rho, requires_grad=True),
        harm_logit=torch.tensor(harm, requires_grad=True),
    )


def test_the_head_starts_at_mu_zero_unit_variance_and_even_harm() -> None:
    torch.manual_seed(0)
    head = ProbeHead(16, 5, hidden=64).eval()
    last = head.layers[-1]
    assert isinstance(last, torch.nn.Linear) and last.weight.shape == (15, 32)
    expected_bias = [0.0] * 5 + [RHO_INIT] * 5 + [0.0] * 5
    assert last.bias.tolist() == pytest.approx(expected_bias)
    gram = last.weight @ last.weight.T  # orthogonal rows with gain 0.1
    assert torch.allclose(gram, 0.01 * torch.eye(15), atol=1e-6)
    with torch.no_grad():
        last.weight.zero_()  # the outputs are then exactly the starting biases
    out = head(torch.randn(2, 16))
    assert out.mu.shape == out.rho.shape == out.harm_logit.shape == (2, 5)
    assert torch.equal(out.mu, torch.zeros(2, 5))
    assert math.log(math.e - 1) == RHO_INIT
    assert torch.allclose(out.variance, torch.ones(2, 5), atol=1e-6)
    assert torch.equal(out.p_harm, torch.full((2, 5), 0.5))
    with pytest.raises(ValueError):
        ProbeHead(16, 0)


def test_the_nll_is_the_gaussian_formula_on_labelled_entries_only() -> None:  # O4
    out = _output([0.5, 2.0, -1.0], [0.3, 1.2, -0.7], [0.0, 0.0, 0.0])
    target = torch.tensor([1.0, float("nan"), -0.5])  # the middle entry is unlabelled, and NaN there is harmless
    mask = torch.tensor([True, False, True])
    loss = probe_loss(out, target, mask, torch.zeros(3), torch.zeros(3, dtype=torch.bool))
    var = torch.clamp(F.softplus(torch.tensor([0.3, -0.7])), VARIANCE_MIN, VARIANCE_MAX)
    expected = 0.5 * (((torch.tensor([1.0, -0.5]) - torch.tensor([0.5, -1.0])) ** 2) / var + torch.log(var))
    assert loss.nll.item() == pytest.approx(expected.mean().item(), rel=1e-6)
    assert loss.labelled == 2 and loss.bce.item() == 0.0 and loss.harm_labelled == 0
    loss.total.backward()
    assert out.mu.grad is not None and out.rho.grad is not None
    assert out.mu.grad[1].item() == 0.0 and out.rho.grad[1].item() == 0.0, "an unlabelled entry gets no gradient"
    assert torch.isfinite(out.mu.grad).all() and torch.isfinite(out.rho.grad).all()


def test_the_variance_clamp_cuts_rho_off_from_its_gradient_outside_the_range() -> None:  # O4
    rho = torch.tensor([-20.0, 0.0, 20.0], requires_grad=True)
    variance = probe_variance(rho)
    assert variance[0].item() == pytest.approx(VARIANCE_MIN) and variance[2].item() == pytest.approx(VARIANCE_MAX)
    variance.sum().backward()
    assert rho.grad is not None
    assert rho.grad[0].item() == 0.0 and rho.grad[2].item() == 0.0 and rho.grad[1].item() > 0.0


def test_an_all_unlabelled_batch_adds_exactly_zero() -> None:  # O4, O5
    out = _output([1.0, 2.0], [0.0, 0.0], [3.0, -3.0])
    none = torch.zeros(2, dtype=torch.bool)
    loss = probe_loss(out, torch.full((2,), float("nan")), none, torch.full((2,), float("nan")), none)
    assert loss.total.item() == 0.0 and loss.labelled == 0
    loss.total.backward()
    for grad in (out.mu.grad, out.rho.grad, out.harm_logit.grad):
        assert grad is not None and torch.count_nonzero(grad) == 0


def test_the_harm_term_is_bce_where_a_label_exists_and_ignores_the_rest() -> None:  # O5
    out = _output([0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [2.0, -1.0, 5.0])
    harm = torch.tensor([1.0, 0.0, 1.0])
    harm_mask = torch.tensor([True, True, False])  # the third seed was never audited: its label is not used
    loss = probe_loss(out, torch.zeros(3), torch.zeros(3, dtype=torch.bool), harm, harm_mask)
    expected = F.binary_cross_entropy_with_logits(torch.tensor([2.0, -1.0]), torch.tensor([1.0, 0.0]))
    assert loss.bce.item() == pytest.approx(expected.item(), rel=1e-6) and loss.harm_labelled == 2
    loss.total.backward()
    assert out.harm_logit.grad is not None and out.harm_logit.grad[2].item() == 0.0


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-3, 3), min_size=1, max_size=6), st.data())
def test_masked_entries_never_change_the_loss(values: list[float], data: st.DataObject) -> None:  # O4, O5
    n = len(values)
    mask = torch.tensor(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    out = _output(values, [0.1] * n, values)
    target = torch.tensor(values) * 0.5
    noise = torch.tensor(data.draw(st.lists(st.floats(-1e6, 1e6), min_size=n, max_size=n)))
    garbled = torch.where(mask, target, noise)  # what an unlabelled entry holds must not matter
    a = probe_loss(out, target, mask, target.sigmoid(), mask)
    b = probe_loss(out, garbled, mask, torch.where(mask, target.sigmoid(), noise), mask)
    assert a.total.item() == b.total.item()


def test_the_target_normaliser_is_identity_then_a_scale_without_centring() -> None:  # O8
    norm = TargetNormalizer()
    norm.update(torch.full((SCALE_MIN_SAMPLES - 1,), 10.0))
    assert norm.scale == 1.0
    assert norm.normalise(torch.tensor([3.0, 7.0])).tolist() == [3.0, TARGET_CLIP], "identity, then the ±5 clip"
    norm.update(torch.tensor([14.0, float("nan")]))  # a non-finite label is not counted
    assert norm.count == SCALE_MIN_SAMPLES
    values = [10.0] * (SCALE_MIN_SAMPLES - 1) + [14.0]
    std = math.sqrt(sum((v - sum(values) / len(values)) ** 2 for v in values) / (len(values) - 1))
    assert norm.scale == pytest.approx(std)
    # No mean subtraction: a positive Δℓ stays positive however large the mean is.
    assert norm.normalise(torch.tensor([0.1])).item() == pytest.approx(0.1 / std)
    assert norm.normalise(torch.tensor([-1e9])).item() == -TARGET_CLIP
    again = TargetNormalizer.from_state_dict(norm.state_dict())
    assert (again.count, again.mean, again.m2, again.scale) == (norm.count, norm.mean, norm.m2, norm.scale)


def test_the_standalone_probe_reads_an_episode_and_trains() -> None:
    torch.manual_seed(0)
    probe = StandaloneProbe(obs_size=7, num_slots=3, hidden=16, head_hidden=32)
    observations = torch.randn(4, 10, 7)
    # A learnable target: slot k's contribution is observation feature k.
    target = observations[..., :3].clamp(-2, 2)
    mask = torch.ones(4, 10, 3, dtype=torch.bool)
    harm = (target < 0).float()
    optimizer = torch.optim.Adam(probe.parameters(), lr=1e-2)
    first = None
    for _ in range(150):
        loss = probe_loss(probe(observations), target, mask, harm, mask).total
        first = loss.item() if first is None else first
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < first - 1.0, (first, loss.item())
