"""CNN feature maps of either rank, (N,C,L) signals or (N,C,H,W) images: the norm, conv and pooling rules every CNN
seed shares (reference/kasmina.md §3.2)."""

from __future__ import annotations

from torch import Tensor, nn

# Candidate GroupNorm group counts, largest first (§3.2).
_GROUP_CHOICES = (32, 16, 8, 4, 2, 1)
_MIN_CHANNELS_PER_GROUP = 16
#: The feature-map ranks CNN seeds are built for: 1-D signals (N,C,L) and 2-D images (N,C,H,W).
SPATIAL_DIMS = (1, 2)


def group_norm_groups(channels: int) -> int:
    """The largest group count dividing C with ≥16 channels per group, else the largest divisor (§3.2)."""
    for groups in _GROUP_CHOICES:
        if channels % groups == 0 and channels // groups >= _MIN_CHANNELS_PER_GROUP:
            return groups
    for groups in _GROUP_CHOICES:
        if channels % groups == 0:
            return groups
    return 1


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(group_norm_groups(channels), channels)


def conv_class(spatial_dims: int) -> type[nn.Conv1d] | type[nn.Conv2d]:
    """The conv class of a CNN host's feature maps: 2-D images (N,C,H,W) or 1-D signals (N,C,L)."""
    if spatial_dims not in SPATIAL_DIMS:
        raise ValueError(f"CNN seeds support spatial_dims in {SPATIAL_DIMS}, got {spatial_dims}")
    return nn.Conv1d if spatial_dims == 1 else nn.Conv2d


def spatial_mean(x: Tensor) -> Tensor:
    """(N, C, *spatial) → (N, C): the mean over every spatial axis, whatever the feature map's rank."""
    return x.flatten(2).mean(dim=2)


def per_channel(scale: Tensor, like: Tensor) -> Tensor:
    """(N, C) → (N, C, 1, …) broadcastable against `like`'s spatial axes."""
    return scale.reshape(*scale.shape, *([1] * (like.dim() - 2)))
