"""The observation normaliser that travels WITH the policy weights (reference/tamiyo_simic.md §1.18).

Tamiyo only applies it; Simic folds each round's raw observations into it once, right before the update, and
publishes the refreshed statistics with the new version, so stats are frozen during a round's rollout.
"""

from __future__ import annotations

import torch

OBS_MOMENTUM = 0.99
OBS_EPSILON = 1e-4
OBS_CLIP = 10.0


class ObservationNormalizer:
    """Running mean/variance with EMA momentum 0.99; output clip((x − μ)/√(σ² + ε), ±10) over the whole vector."""

    def __init__(self, size: int, momentum: float = OBS_MOMENTUM, eps: float = OBS_EPSILON, clip: float = OBS_CLIP):
        self.size = size
        self.momentum = momentum
        self.eps = eps
        self.clip = clip
        self.mean = torch.zeros(size)
        self.var = torch.ones(size)
        self.count = 0

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.size:
            raise ValueError(f"observation has {x.shape[-1]} features, the normalizer expects {self.size}")
        return ((x.float() - self.mean) / torch.sqrt(self.var + self.eps)).clamp(-self.clip, self.clip)

    def update(self, batch: torch.Tensor) -> None:
        """Fold raw observations [N, size] in: the first batch sets the stats, later ones move them by EMA."""
        batch = batch.reshape(-1, self.size).float()
        if batch.shape[0] == 0:
            return
        batch_mean = batch.mean(dim=0)
        batch_var = batch.var(dim=0, unbiased=False)
        if self.count == 0:
            self.mean, self.var = batch_mean, batch_var
        else:
            m = self.momentum
            delta = batch_mean - self.mean
            self.mean = m * self.mean + (1.0 - m) * batch_mean
            self.var = m * self.var + (1.0 - m) * batch_var + m * (1.0 - m) * delta * delta
        self.count += int(batch.shape[0])

    def tensors(self, prefix: str = "obs_norm.") -> dict[str, torch.Tensor]:
        return {
            f"{prefix}mean": self.mean.clone(),
            f"{prefix}var": self.var.clone(),
            f"{prefix}count": torch.tensor([self.count], dtype=torch.int64),
        }

    @staticmethod
    def from_tensors(tensors: dict[str, torch.Tensor], prefix: str = "obs_norm.") -> ObservationNormalizer:
        mean, var = tensors[f"{prefix}mean"].float(), tensors[f"{prefix}var"].float()
        if mean.shape != var.shape or mean.dim() != 1:
            raise ValueError(f"observation normalizer stats have shapes {tuple(mean.shape)} and {tuple(var.shape)}")
        if not (torch.isfinite(mean).all() and torch.isfinite(var).all() and (var >= 0).all()):
            raise ValueError("observation normalizer stats are not finite and non-negative")
        normalizer = ObservationNormalizer(int(mean.shape[0]))
        normalizer.mean, normalizer.var = mean.clone(), var.clone()
        normalizer.count = int(tensors[f"{prefix}count"].reshape(-1)[0].item())
        return normalizer
