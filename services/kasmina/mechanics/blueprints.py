"""Blueprint registry: the 17 seed modules a slot can grow, keyed by (topology, name) (reference/kasmina.md §3)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from leyline_schemas.enums import BlueprintAction, Topology, blueprint_name
from leyline_schemas.lifecycle import SEED_INTERNALS
from services.kasmina.mechanics.feature_maps import conv_class as _conv
from services.kasmina.mechanics.feature_maps import group_norm as _group_norm
from services.kasmina.mechanics.feature_maps import group_norm_groups as group_norm_groups
from services.kasmina.mechanics.feature_maps import per_channel, spatial_mean
from services.kasmina.mechanics.ladder import ConvLadderSeed, MicrostructuredSeed

_ATTENTION_HEADS = 4
_LORA_RANK = 8
_LORA_LARGE_RANK = 32
_FLEX_MASK_CACHE_SIZE = 8


# --------------------------------------------------------------------------- CNN seeds (§3.2)
#
# Every CNN seed works on 2-D image maps and on 1-D signal maps (the mnist1d host): `spatial_dims` picks Conv2d or
# Conv1d with the same kernel widths, so a 1-D seed has exactly the parameters it uses (a 3-wide kernel, not 3×3).


class IdentitySeed(nn.Module):
    """The `noop` blueprint: no parameters, returns its input."""

    def forward(self, x: Tensor) -> Tensor:
        return x


class ScaledNormSeed(nn.Module):
    """`x + tanh(s)·(norm(x) − x)` with s = 0 at birth, so the identity at birth (§3.2 item 56, §3.3 item 64)."""

    def __init__(self, norm: nn.Module) -> None:
        super().__init__()
        self.norm = norm
        self.scale = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor) -> Tensor:
        result: torch.Tensor = x + torch.tanh(self.scale) * (self.norm(x) - x)
        return result


class SqueezeExciteSeed(nn.Module):
    """Channel attention: x scaled by sigmoid(MLP(mean_hw x)); last layer weight 0, bias 3 gives ≈0.95·x at birth."""

    def __init__(self, channels: int, spatial_dims: int = 2) -> None:
        super().__init__()
        reduced = max(1, channels // 4)
        self.squeeze = nn.Linear(channels, reduced, bias=False)
        self.excite = nn.Linear(reduced, channels)
        nn.init.zeros_(self.excite.weight)
        nn.init.constant_(self.excite.bias, 3.0)

    def forward(self, x: Tensor) -> Tensor:
        scale = torch.sigmoid(self.excite(F.relu(self.squeeze(spatial_mean(x)))))
        return x * per_channel(scale, x)


class DepthwiseSeed(nn.Module):
    """`x + ReLU(GN(pointwise(depthwise3×3 x)))`; no zero-init, so not the identity at birth (§3.2 item 58)."""

    def __init__(self, channels: int, spatial_dims: int = 2) -> None:
        super().__init__()
        conv = _conv(spatial_dims)
        self.depthwise = conv(channels, channels, 3, padding=1, groups=channels, bias=False)
        self.pointwise = conv(channels, channels, 1, bias=False)
        self.norm = _group_norm(channels)

    def forward(self, x: Tensor) -> Tensor:
        return x + F.relu(self.norm(self.pointwise(self.depthwise(x))))


class BottleneckSeed(nn.Module):
    """`x + GN(up(ReLU(conv3×3(ReLU(down x)))))` with b = max(8, C//4) and `up` zeroed (§3.2 item 59)."""

    def __init__(self, channels: int, spatial_dims: int = 2) -> None:
        super().__init__()
        width = max(8, channels // 4)
        conv = _conv(spatial_dims)
        self.down = conv(channels, width, 1, bias=False)
        self.conv = conv(width, width, 3, padding=1, bias=False)
        self.up = conv(width, channels, 1, bias=False)
        self.norm = _group_norm(channels)
        nn.init.zeros_(self.up.weight)

    def forward(self, x: Tensor) -> Tensor:
        result: torch.Tensor = x + self.norm(self.up(F.relu(self.conv(F.relu(self.down(x))))))
        return result


class ConvSmallSeed(nn.Module):
    """`x + ReLU(GN(conv1×1 x))` with the conv zeroed, so the identity at birth (§3.2 item 60)."""

    def __init__(self, channels: int, spatial_dims: int = 2) -> None:
        super().__init__()
        self.conv = _conv(spatial_dims)(channels, channels, 1, bias=False)
        self.norm = _group_norm(channels)
        nn.init.zeros_(self.conv.weight)

    def forward(self, x: Tensor) -> Tensor:
        return x + F.relu(self.norm(self.conv(x)))


class SeedConvBlock(nn.Module):
    """conv3×3 (no bias) → GroupNorm → ReLU; GroupNorm keeps no running statistics that could drift (§3.2 item 62)."""

    def __init__(self, channels: int, spatial_dims: int = 2) -> None:
        super().__init__()
        self.conv = _conv(spatial_dims)(channels, channels, 3, padding=1, bias=False)
        self.norm = _group_norm(channels)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.norm(self.conv(x)))


class ConvResidualSeed(nn.Module):
    """`x + blocks(x)` over one (`conv_light`) or two (`conv_heavy`) seed conv blocks (§3.2 items 61-62)."""

    def __init__(self, channels: int, depth: int, spatial_dims: int = 2) -> None:
        super().__init__()
        self.enhance = nn.Sequential(*(SeedConvBlock(channels, spatial_dims) for _ in range(depth)))

    def forward(self, x: Tensor) -> Tensor:
        result: torch.Tensor = x + self.enhance(x)
        return result


# --------------------------------------------------------------------------- transformer seeds (§3.3)


class LowRankSeed(nn.Module):
    """LoRA-style `x + up(down x)` without biases, `up` zeroed (§3.3 items 65-66)."""

    def __init__(self, dim: int, rank: int) -> None:
        super().__init__()
        self.down = nn.Linear(dim, rank, bias=False)
        self.up = nn.Linear(rank, dim, bias=False)
        nn.init.zeros_(self.up.weight)

    def forward(self, x: Tensor) -> Tensor:
        result: torch.Tensor = x + self.up(self.down(x))
        return result


class CausalAttentionSeed(nn.Module):
    """`x + proj(causal_attention(qkv x))` with 4 heads and a zeroed projection (§3.3 item 67)."""

    def __init__(self, dim: int, n_head: int = _ATTENTION_HEADS) -> None:
        super().__init__()
        if dim % n_head != 0:
            raise ValueError(f"attention seed needs dim % n_head == 0, got dim={dim}, n_head={n_head}")
        self.n_head = n_head
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def _heads(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        b, t, d = x.shape
        qkv = self.qkv(x).reshape(b, t, 3, self.n_head, d // self.n_head).permute(2, 0, 3, 1, 4)
        return qkv[0], qkv[1], qkv[2]

    def _attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)

    def forward(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        out = self._attend(*self._heads(x))
        result: torch.Tensor = x + self.proj(out.transpose(1, 2).reshape(b, t, d))
        return result


def _causal(b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
    return q_idx >= kv_idx


class FlexAttentionSeed(CausalAttentionSeed):
    """The attention seed computed with FlexAttention and a cached causal block mask (§3.3 item 68).

    FlexAttention has no CPU backward, so on CPU with grad enabled (or when torch lacks it) the same maths runs
    through SDPA; so it does inside `attention_through_sdpa`.
    """

    #: Set by `attention_through_sdpa`: every FlexAttention seed computes through SDPA while it is True.
    sdpa_only: ClassVar[bool] = False

    def __init__(self, dim: int, n_head: int = _ATTENTION_HEADS) -> None:
        super().__init__(dim, n_head)
        self._masks: OrderedDict[tuple[int, str], Any] = OrderedDict()

    def _attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        if FlexAttentionSeed.sdpa_only or (q.device.type == "cpu" and torch.is_grad_enabled()):
            return super()._attend(q, k, v)
        try:
            from torch.nn.attention.flex_attention import create_block_mask, flex_attention
        except ImportError:
            return super()._attend(q, k, v)
        seq = q.shape[-2]
        key = (seq, str(q.device))
        if key in self._masks:
            self._masks.move_to_end(key)
        else:
            if len(self._masks) >= _FLEX_MASK_CACHE_SIZE:
                self._masks.popitem(last=False)
            self._masks[key] = create_block_mask(_causal, B=None, H=None, Q_LEN=seq, KV_LEN=seq, device=q.device)
        out = flex_attention(q, k, v, block_mask=self._masks[key])
        return out[0] if isinstance(out, tuple) else out

    def _apply(self, fn: Any, recurse: bool = True) -> Any:
        # A device move invalidates every cached mask.
        self._masks.clear()
        return super()._apply(fn, recurse)  # type: ignore[no-untyped-call]


@contextmanager
def attention_through_sdpa() -> Iterator[None]:
    """Run every FlexAttention seed through SDPA, the same maths, while inside.

    torch's `FlopCounterMode` has no rule for the flex_attention higher-order op and raises on it; FLOP counting
    runs here, and SDPA's attention FLOPs are what the flex kernel computes.
    """
    previous = FlexAttentionSeed.sdpa_only
    FlexAttentionSeed.sdpa_only = True
    try:
        yield
    finally:
        FlexAttentionSeed.sdpa_only = previous


class ResidualMLPSeed(nn.Module):
    """`x + fc2(GELU(fc1 x))` with fc2 zeroed (§3.3 items 69-70)."""

    def __init__(self, dim: int, expansion: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, dim * expansion)
        self.fc2 = nn.Linear(dim * expansion, dim)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, x: Tensor) -> Tensor:
        result: torch.Tensor = x + self.fc2(F.gelu(self.fc1(x)))
        return result


# --------------------------------------------------------------------------- registry (§3.1)


@dataclass(frozen=True)
class Blueprint:
    """One registered blueprint: its factory `(channels, spatial_dims) -> nn.Module` and the size estimate the policy
    sees. Transformer factories ignore `spatial_dims`."""

    topology: Topology
    action: BlueprintAction
    factory: Callable[[int, int], nn.Module]
    param_estimate: int
    description: str

    @property
    def name(self) -> str:
        return blueprint_name(self.action)


@dataclass(frozen=True)
class BlueprintInfo:
    """A blueprint as measured at a given channel count; `param_count` is 0 when it cannot be built there.

    `param_count` counts every parameter the seed allocates; `active_param_count` those it runs at birth, which
    differ only for a microstructured seed, whose `level_param_counts[k]` are its active parameters at level k.
    """

    name: str
    index: int
    topology: Topology
    param_count: int
    param_estimate: int
    identity_at_birth: bool
    buildable: bool
    description: str
    active_param_count: int = 0
    level_param_counts: tuple[int, ...] = ()


_REGISTRY: dict[tuple[Topology, str], Blueprint] = {}


def _register(
    topology: Topology,
    action: BlueprintAction,
    estimate: int,
    description: str,
    factory: Callable[[int, int], nn.Module],
) -> None:
    key = (topology, blueprint_name(action))
    if key in _REGISTRY:
        raise ValueError(f"blueprint {key} registered twice")
    _REGISTRY[key] = Blueprint(topology, action, factory, estimate, description)


_CNN, _TF, _B = Topology.CNN, Topology.TRANSFORMER, BlueprintAction
_register(_CNN, _B.NOOP, 0, "identity placeholder", lambda c, d: IdentitySeed())
_register(_CNN, _B.NORM, 130, "GroupNorm blended in by tanh(s)", lambda c, d: ScaledNormSeed(_group_norm(c)))
_register(_CNN, _B.ATTENTION, 2000, "squeeze-and-excitation channel attention", SqueezeExciteSeed)
_register(_CNN, _B.DEPTHWISE, 4800, "depthwise-separable conv", DepthwiseSeed)
_register(_CNN, _B.BOTTLENECK, 4500, "1x1 → 3x3 → 1x1 bottleneck", BottleneckSeed)
_register(_CNN, _B.CONV_SMALL, 4200, "1x1 conv channel mixing", ConvSmallSeed)
_register(_CNN, _B.CONV_LIGHT, 37000, "one 3x3 seed conv block", lambda c, d: ConvResidualSeed(c, 1, d))
_register(_CNN, _B.CONV_HEAVY, 74000, "two 3x3 seed conv blocks", lambda c, d: ConvResidualSeed(c, 2, d))
_register(
    _CNN,
    _B.CONV_LADDER,
    148000,
    "up to 4 residual 3×3 conv rungs; level = active rungs",
    lambda c, d: ConvLadderSeed.from_spec(c, SEED_INTERNALS[BlueprintAction.CONV_LADDER], d),
)
_register(_TF, _B.NOOP, 0, "identity placeholder", lambda d, _: IdentitySeed())
_register(_TF, _B.NORM, 800, "LayerNorm blended in by tanh(s)", lambda d, _: ScaledNormSeed(nn.LayerNorm(d)))
_register(_TF, _B.LORA, 6000, "low-rank adapter, rank 8", lambda d, _: LowRankSeed(d, _LORA_RANK))
_register(_TF, _B.LORA_LARGE, 25000, "low-rank adapter, rank 32", lambda d, _: LowRankSeed(d, _LORA_LARGE_RANK))
_register(_TF, _B.ATTENTION, 591000, "extra causal self-attention (SDPA)", lambda d, _: CausalAttentionSeed(d))
_register(_TF, _B.FLEX_ATTENTION, 591000, "extra causal attention (FlexAttention)", lambda d, _: FlexAttentionSeed(d))
_register(_TF, _B.MLP_SMALL, 591000, "residual MLP, 2x expansion", lambda d, _: ResidualMLPSeed(d, 2))
_register(_TF, _B.MLP, 1200000, "residual MLP, 4x expansion", lambda d, _: ResidualMLPSeed(d, 4))


def get_blueprint(topology: Topology, blueprint: BlueprintAction) -> Blueprint:
    """The registered blueprint, or KeyError naming the topology's valid choices."""
    key = (Topology(topology), blueprint_name(BlueprintAction(blueprint)))
    if key not in _REGISTRY:
        valid = sorted(name for topo, name in _REGISTRY if topo is key[0])
        raise KeyError(f"no blueprint {key[1]!r} for topology {key[0].value!r}; valid: {valid}")
    return _REGISTRY[key]


def blueprints_of(topology: Topology) -> list[Blueprint]:
    """Every blueprint of a topology, sorted by (param_estimate, name) (§3.1 item 53)."""
    found = [bp for (topo, _), bp in _REGISTRY.items() if topo is Topology(topology)]
    return sorted(found, key=lambda bp: (bp.param_estimate, bp.name))


def build_seed(topology: Topology, blueprint: BlueprintAction, channels: int, spatial_dims: int = 2) -> nn.Module:
    """Build a fresh seed for `channels` features on `spatial_dims`-D maps (CNN only); KeyError or ValueError when it
    cannot."""
    if channels <= 0:
        raise ValueError(f"channels must be positive, got {channels}")
    return get_blueprint(topology, blueprint).factory(channels, spatial_dims)


def zero_init_final_layer(module: nn.Module) -> bool:
    """Zero the weight and bias of the last Linear/Conv layer in registration order, for MULTIPLY (§3.4 item 72).

    Returns False (and changes nothing) for seeds without such a layer, such as `noop` and `norm`.
    """
    last: nn.Module | None = None
    for sub in module.modules():
        if isinstance(sub, nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d):
            last = sub
    if last is None:
        return False
    with torch.no_grad():
        weight = last.weight
        assert isinstance(weight, Tensor)
        weight.zero_()
        bias = last.bias
        if isinstance(bias, Tensor):
            bias.zero_()
    return True


def probe_input(
    topology: Topology,
    channels: int,
    variant: int = 0,
    generator: torch.Generator | None = None,
    device: torch.device | None = None,
    spatial_dims: int = 2,
) -> Tensor:
    """The germination shape probe (§2.6 item 52): CNN (1,C,32,32) or, on 1-D maps, (1,C,32); transformer (2,8,C);
    variant 1 is an odd size."""
    if Topology(topology) is Topology.CNN:
        spatial = (32, 32) if variant == 0 else (7, 5)
        shape: tuple[int, ...] = (1 if variant == 0 else 2, channels, *spatial[:spatial_dims])
    else:
        shape = (2, 8, channels) if variant == 0 else (1, 5, channels)
    x = torch.randn(shape, generator=generator)
    return x if device is None else x.to(device)


@lru_cache(maxsize=64)
def _measure(topology: Topology, channels: int, spatial_dims: int) -> tuple[BlueprintInfo, ...]:
    infos: list[BlueprintInfo] = []
    # Building modules draws from the global RNG; fork it so a catalog query never shifts a run's randomness.
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        generator = torch.Generator().manual_seed(0)
        for bp in blueprints_of(topology):
            try:
                seed = bp.factory(channels, spatial_dims).eval()
            except ValueError:
                infos.append(
                    BlueprintInfo(
                        bp.name, int(bp.action), bp.topology, 0, bp.param_estimate, False, False, bp.description
                    )
                )
                continue
            x = probe_input(topology, channels, variant=1, generator=generator, spatial_dims=spatial_dims)
            identity = bool(torch.equal(seed(x), x))
            count = sum(p.numel() for p in seed.parameters())
            active, levels = count, tuple[int, ...]()
            if isinstance(seed, MicrostructuredSeed):
                active, levels = seed.active_param_count(), _level_param_counts(seed)
            infos.append(
                BlueprintInfo(
                    bp.name,
                    int(bp.action),
                    bp.topology,
                    count,
                    bp.param_estimate,
                    identity,
                    True,
                    bp.description,
                    active,
                    levels,
                )
            )
    return tuple(infos)


def _level_param_counts(seed: MicrostructuredSeed) -> tuple[int, ...]:
    """Active parameters at each level 0 … max; the seed is left at the level it had."""
    start = seed.internal_level
    counts = []
    for level in range(seed.internal_max_level + 1):
        seed.set_internal_level(level)
        counts.append(seed.active_param_count())
    seed.set_internal_level(start)
    return tuple(counts)


def blueprint_catalog(topology: Topology, channels: int, spatial_dims: int = 2) -> list[BlueprintInfo]:
    """Every blueprint of a topology measured at `channels` (on `spatial_dims`-D maps for CNN): exact parameter count
    and identity at birth (probed)."""
    return list(_measure(Topology(topology), channels, spatial_dims))
