"""Simic's reward and value normalisers (reference/tamiyo_simic.md §5.3, §5.5); both checkpoint as float64 tensors.

The observation normaliser lives with the policy weights (services.policy.normalization), since Tamiyo applies it.
"""

from __future__ import annotations

import math

import torch

from services.simic.reward_config import REWARD_CLIP

REWARD_STD_FLOOR = 1e-8
VALUE_WARMUP_SAMPLES = 32
VALUE_MOMENTUM = 0.99
VALUE_STD_FLOOR = 1e-6


class RewardNormalizer:
    """Welford over all history; divides by the running sample std (never subtracts the mean) and clips ±10."""

    def __init__(self) -> None:
        self.count = 0
        self.mean = 0.0
        self.m2 = 0.0

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / (self.count - 1)) if self.count > 1 else 1.0

    def __call__(self, reward: float) -> float:
        """Fold one raw reward in and return it normalised; the very first sample comes back clipped raw."""
        self.count += 1
        delta = reward - self.mean
        self.mean += delta / self.count
        self.m2 += delta * (reward - self.mean)
        scaled = reward if self.count < 2 else reward / max(self.std, REWARD_STD_FLOOR)
        return max(-REWARD_CLIP, min(REWARD_CLIP, scaled))

    def tensors(self, prefix: str = "reward_norm.") -> dict[str, torch.Tensor]:
        return {f"{prefix}state": torch.tensor([self.count, self.mean, self.m2], dtype=torch.float64)}

    @staticmethod
    def from_tensors(tensors: dict[str, torch.Tensor], prefix: str = "reward_norm.") -> RewardNormalizer:
        count, mean, m2 = tensors[f"{prefix}state"].tolist()
        normalizer = RewardNormalizer()
        normalizer.count, normalizer.mean, normalizer.m2 = int(count), float(mean), float(m2)
        return normalizer


class ValueNormalizer:
    """PopArt-lite: V lives in units of the return std σ; plain Welford for 32 samples, EMA 0.99 after.

    Until 32 samples have been seen it is the identity; there is no mean shift (normalize(R) = R/σ).
    """

    def __init__(self) -> None:
        self.count = 0
        self.mean = 0.0
        self.var = 1.0

    @property
    def active(self) -> bool:
        return self.count >= VALUE_WARMUP_SAMPLES

    @property
    def scale(self) -> float:
        return max(math.sqrt(self.var), VALUE_STD_FLOOR) if self.active else 1.0

    def normalize(self, returns: torch.Tensor) -> torch.Tensor:
        return returns / self.scale

    def denormalize(self, values: torch.Tensor) -> torch.Tensor:
        return values * self.scale

    def update(self, returns: torch.Tensor) -> None:
        """Fold a round's raw returns in."""
        batch = returns.detach().double().reshape(-1)
        n = int(batch.numel())
        if n == 0:
            return
        batch_mean = float(batch.mean())
        batch_var = float(batch.var(unbiased=False))
        if not self.active:
            # Chan's parallel Welford merge of (count, mean, var) with the batch.
            total = self.count + n
            delta = batch_mean - self.mean
            m2 = self.var * self.count + batch_var * n + delta * delta * self.count * n / total
            self.mean = self.mean + delta * n / total
            self.var = m2 / total
            self.count = total
            return
        m = VALUE_MOMENTUM
        delta = batch_mean - self.mean
        self.mean = m * self.mean + (1 - m) * batch_mean
        self.var = m * self.var + (1 - m) * batch_var + m * (1 - m) * delta * delta
        self.count += n

    def tensors(self, prefix: str = "value_norm.") -> dict[str, torch.Tensor]:
        return {f"{prefix}state": torch.tensor([self.count, self.mean, self.var], dtype=torch.float64)}

    @staticmethod
    def from_tensors(tensors: dict[str, torch.Tensor], prefix: str = "value_norm.") -> ValueNormalizer:
        count, mean, var = tensors[f"{prefix}state"].tolist()
        normalizer = ValueNormalizer()
        normalizer.count, normalizer.mean, normalizer.var = int(count), float(mean), float(var)
        return normalizer
