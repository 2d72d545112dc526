"""GAE against a hand computation (12.7) and the normaliser properties (12.8–12.9)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from services.policy.normalization import ObservationNormalizer
from services.simic.advantages import compute_gae, explained_variance, normalize_advantages
from services.simic.normalizers import RewardNormalizer, ValueNormalizer

finite = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False)


def test_gae_matches_a_hand_computed_truncated_episode() -> None:
    rewards = torch.tensor([[1.0, 0.0, 2.0]])
    values = torch.tensor([[0.5, 0.4, 0.3]])
    gamma, lam = 0.9, 0.8
    advantages, returns = compute_gae(
        rewards, values, torch.tensor([0.6]), torch.zeros(1, 3, dtype=torch.bool), gamma, lam
    )
    # δ2 = 2 + 0.9·0.6 − 0.3 (the truncated last step bootstraps, m = 1); δ1 = 0 + 0.9·0.3 − 0.4; δ0 = 1 + 0.9·0.4 − 0.5
    a2 = 2.24
    a1 = -0.13 + gamma * lam * a2
    a0 = 0.86 + gamma * lam * a1
    assert torch.allclose(advantages, torch.tensor([[a0, a1, a2]]), atol=1e-6)
    assert torch.allclose(returns, advantages + values)


def test_a_true_terminal_neither_bootstraps_nor_passes_advantage_back() -> None:
    rewards = torch.tensor([[1.0, -10.0, 0.5]])
    values = torch.tensor([[0.2, 0.1, 0.3]])
    terminal = torch.tensor([[False, True, False]])  # a rollback made step 1 the last executed transition
    advantages, _ = compute_gae(rewards, values, torch.tensor([0.7]), terminal, 0.99, 0.95)
    assert math.isclose(float(advantages[0, 1]), -10.0 - 0.1, abs_tol=1e-6)
    assert math.isclose(float(advantages[0, 2]), 0.5 + 0.99 * 0.7 - 0.3, abs_tol=1e-6)
    assert math.isclose(
        float(advantages[0, 0]), 1.0 + 0.99 * 0.1 - 0.2 + 0.99 * 0.95 * float(advantages[0, 1]), abs_tol=1e-5
    )


@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_gae_is_computed_per_env_without_cross_env_mixing(data: st.DataObject) -> None:
    n_envs, length = data.draw(st.integers(2, 4)), data.draw(st.integers(1, 6))

    def draw(shape: tuple[int, ...]) -> torch.Tensor:
        size = math.prod(shape)
        return torch.tensor(data.draw(st.lists(finite, min_size=size, max_size=size))).view(shape)

    rewards, values, boot = draw((n_envs, length)), draw((n_envs, length)), draw((n_envs,))
    terminal = torch.zeros(n_envs, length, dtype=torch.bool)
    together, _ = compute_gae(rewards, values, boot, terminal, 0.995, 0.98)
    for env in range(n_envs):
        alone, _ = compute_gae(
            rewards[env : env + 1], values[env : env + 1], boot[env : env + 1], terminal[:1], 0.995, 0.98
        )
        assert torch.allclose(together[env], alone[0], rtol=1e-5, atol=1e-3)


def test_advantage_normalisation_floors_the_std_at_a_tenth() -> None:
    tiny = torch.tensor([1.0, 1.01, 0.99, 1.0])
    normalized = normalize_advantages(tiny)
    assert torch.allclose(normalized, (tiny - tiny.mean()) / (0.1 + 1e-8))
    wide = torch.tensor([3.0, -1.0, 0.5, 2.0])
    once = normalize_advantages(wide)
    assert math.isclose(float(once.std(unbiased=False)), 1.0, rel_tol=1e-6) and abs(float(once.mean())) < 1e-6
    assert torch.allclose(normalize_advantages(once), once, atol=1e-6)  # idempotent once the std is ≥ 0.1


def test_explained_variance_floors_the_return_variance() -> None:
    returns = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert explained_variance(returns, returns) == 1.0
    assert math.isclose(explained_variance(torch.zeros(4), torch.full((4,), 0.2)), 1.0, abs_tol=1e-6)


@settings(max_examples=50, deadline=None)
@given(returns=st.lists(finite, min_size=1, max_size=80), probe=finite)
def test_value_normalizer_is_identity_until_32_samples_and_round_trips(returns: list[float], probe: float) -> None:
    normalizer = ValueNormalizer()
    normalizer.update(torch.tensor(returns))
    value = torch.tensor([probe])
    if len(returns) < 32:
        assert torch.equal(normalizer.normalize(value), value) and normalizer.scale == 1.0
    assert torch.allclose(normalizer.denormalize(normalizer.normalize(value)), value, rtol=1e-5, atol=1e-6)
    assert float(normalizer.normalize(torch.zeros(1))) == 0.0  # no mean shift
    assert ValueNormalizer.from_tensors(normalizer.tensors()).scale == normalizer.scale


def test_value_normalizer_switches_to_ema_after_warmup() -> None:
    normalizer = ValueNormalizer()
    normalizer.update(torch.full((40,), 2.0) + torch.linspace(-1, 1, 40))
    warm_var = normalizer.var
    normalizer.update(torch.full((40,), 100.0))
    # EMA with momentum 0.99 moves the variance only part of the way toward the new batch's spread.
    assert warm_var < normalizer.var < 0.02 * (100.0 - 2.0) ** 2


@settings(max_examples=50, deadline=None)
@given(rewards=st.lists(finite, min_size=1, max_size=60))
def test_reward_normalizer_scales_without_shifting_and_clips(rewards: list[float]) -> None:
    normalizer = RewardNormalizer()
    outputs = [normalizer(r) for r in rewards]
    assert outputs[0] == max(-10.0, min(10.0, rewards[0]))  # the first sample comes back clipped raw
    for raw, out in zip(rewards, outputs, strict=True):
        assert -10.0 <= out <= 10.0
        assert (raw == 0.0 and out == 0.0) or math.copysign(1.0, raw) == math.copysign(1.0, out)  # never mean-shifted
    restored = RewardNormalizer.from_tensors(normalizer.tensors())
    assert restored(1.5) == normalizer(1.5)


def test_observation_normalizer_is_frozen_between_folds_and_clipped() -> None:
    normalizer = ObservationNormalizer(3)
    batch = torch.tensor([[0.0, 10.0, -5.0], [2.0, 30.0, -5.0]])
    normalizer.update(batch)
    assert torch.allclose(normalizer.mean, torch.tensor([1.0, 20.0, -5.0]))
    before = normalizer.normalize(torch.tensor([1.0, 20.0, 1e6]))
    assert torch.equal(before, normalizer.normalize(torch.tensor([1.0, 20.0, 1e6])))
    assert float(before[2]) == 10.0 and float(before[0]) == 0.0
    normalizer.update(torch.tensor([[101.0, 20.0, -5.0]]))
    assert math.isclose(float(normalizer.mean[0]), 0.99 * 1.0 + 0.01 * 101.0, rel_tol=1e-6)
    with pytest.raises(ValueError, match="features"):
        normalizer.normalize(torch.zeros(4))
