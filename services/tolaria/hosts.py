"""Tolaria's host networks: a CNN and a GPT-style transformer with named injection points for seed slots.

Both follow the host protocol of reference/kasmina.md §2.2: routing to and from a slot boundary, injection specs in
action (row-major) order and a separate execution order.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from leyline_schemas.enums import SurfaceType, Topology
from leyline_schemas.lifecycle import SlotSpec

# One step of the CNN timeline: ("block", i) or ("pool", i).
_Op = tuple[str, int]


def _check_segment(known: Iterable[str], segment: str) -> None:
    names = list(known)
    if segment not in names:
        raise ValueError(f"unknown segment {segment!r}; this host has {names}")


class SlottedHostBase(nn.Module):
    """The injection-point members both hosts share; a host fills `_specs` in action (row-major) order."""

    _specs: list[SlotSpec]

    @property
    def injection_points(self) -> dict[str, int]:
        return {spec.slot_id: spec.channels for spec in self._specs}

    @property
    def segment_channels(self) -> dict[str, int]:
        return self.injection_points

    def injection_specs(self) -> list[SlotSpec]:
        """Every injection point in action order (row-major by `order`)."""
        return list(self._specs)


class ConvBlock(nn.Module):
    """Conv k×k (same padding, no bias) → BatchNorm → ReLU (reference/kasmina.md §2.3 item 42); on 1-D signals a
    width-k Conv1d and BatchNorm1d."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, spatial_dims: int = 2) -> None:
        super().__init__()
        conv = nn.Conv1d if spatial_dims == 1 else nn.Conv2d
        norm = nn.BatchNorm1d if spatial_dims == 1 else nn.BatchNorm2d
        self.conv = conv(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = norm(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


class CNNHost(SlottedHostBase):
    """Conv blocks doubling channels, 2×2 max-pool after the first `pool_layers`, global pool and a linear head.

    Row 0 slots `r0c{i}` sit after block i (PRE_POOL); row 1 slots `r1c{i}` after pool i (POST_POOL) (§2.3 item 43).
    With `spatial_dims=1` the same host runs on 1-D signals (N, C, L): width-k convs and pools of 2 (the mnist1d
    host); its slots say so, so seeds are built as 1-D modules.
    """

    def __init__(
        self,
        in_channels: int = 3,
        base_channels: int = 32,
        n_blocks: int = 3,
        kernel_size: int = 3,
        pool_layers: int | None = None,
        num_classes: int = 10,
        channels_last: bool = True,
        spatial_dims: int = 2,
    ) -> None:
        super().__init__()
        if spatial_dims not in (1, 2):
            raise ValueError(f"CNNHost runs on 1-D or 2-D maps, got spatial_dims={spatial_dims}")
        if n_blocks < 2:
            raise ValueError(f"CNNHost needs n_blocks >= 2, got {n_blocks}")
        pools = n_blocks if pool_layers is None else pool_layers
        if not 0 <= pools <= n_blocks:
            raise ValueError(f"pool_layers must lie in [0, {n_blocks}], got {pools}")
        self.spatial_dims = spatial_dims
        self.channels_last = channels_last and spatial_dims == 2
        self.block_channels = [base_channels * 2**i for i in range(n_blocks)]
        ins = [in_channels, *self.block_channels[:-1]]
        self.blocks = nn.ModuleList(
            ConvBlock(i, o, kernel_size, spatial_dims) for i, o in zip(ins, self.block_channels, strict=True)
        )
        self.pool: nn.Module = nn.MaxPool1d(2, 2) if spatial_dims == 1 else nn.MaxPool2d(2, 2)
        self.head = nn.Linear(self.block_channels[-1], num_classes)

        # The timeline fixes where each boundary sits: the number of ops executed before it (§2.3 item 44).
        ops: list[_Op] = []
        self._boundary: dict[str, int] = {}
        specs: list[SlotSpec] = []
        for i, channels in enumerate(self.block_channels):
            ops.append(("block", i))
            self._boundary[f"r0c{i}"] = len(ops)
            specs.append(
                SlotSpec(
                    slot_id=f"r0c{i}",
                    channels=channels,
                    order=i,
                    surface=SurfaceType.PRE_POOL,
                    position=(2 * i + 1) / (2 * n_blocks),
                    spatial_dims=spatial_dims,
                )
            )
            if i < pools:
                ops.append(("pool", i))
                self._boundary[f"r1c{i}"] = len(ops)
                specs.append(
                    SlotSpec(
                        slot_id=f"r1c{i}",
                        channels=channels,
                        order=n_blocks + i,
                        surface=SurfaceType.POST_POOL,
                        position=(2 * i + 2) / (2 * n_blocks),
                        spatial_dims=spatial_dims,
                    )
                )
        self._ops: tuple[_Op, ...] = tuple(ops)
        self._specs = sorted(specs, key=lambda s: s.order)
        self._execution = sorted(self._boundary, key=self._boundary.__getitem__)
        # Precomputed plans for every valid (from, to) pair, None meaning the network input.
        starts: list[str | None] = [None, *self._execution]
        self._plans: dict[tuple[str | None, str], tuple[_Op, ...]] = {
            (src, dst): self._ops[self._start(src) : self._boundary[dst]]
            for src in starts
            for dst in self._execution
            if self._boundary[dst] > self._start(src)
        }
        if self.channels_last:
            self.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    def _start(self, segment: str | None) -> int:
        return 0 if segment is None else self._boundary[segment]

    def _run(self, ops: Iterable[_Op], x: Tensor) -> Tensor:
        for kind, i in ops:
            x = self.blocks[i](x) if kind == "block" else self.pool(x)
        return x

    def _prepare(self, x: Tensor) -> Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _classify(self, x: Tensor) -> Tensor:
        result: torch.Tensor = self.head(x.flatten(2).mean(dim=2))
        return result

    @property
    def topology(self) -> Topology:
        return Topology.CNN

    def execution_order(self) -> list[str]:
        """Boundaries in forward order: r0c0, r1c0, r0c1, r1c1, ..."""
        return list(self._execution)

    def forward(self, x: Tensor) -> Tensor:
        return self._classify(self._run(self._ops, self._prepare(x)))

    def forward_to_segment(self, segment: str, x: Tensor, from_segment: str | None = None) -> Tensor:
        """Run from the input (or the boundary `from_segment`) up to the boundary `segment`."""
        _check_segment(self._boundary, segment)
        if from_segment is not None:
            _check_segment(self._boundary, from_segment)
        plan = self._plans.get((from_segment, segment))
        if plan is None:
            raise ValueError(f"cannot route backwards or in place from {from_segment!r} to {segment!r}")
        return self._run(plan, self._prepare(x) if from_segment is None else x)

    def forward_from_segment(self, segment: str, x: Tensor) -> Tensor:
        """Run from the boundary `segment` to the logits."""
        _check_segment(self._boundary, segment)
        return self._classify(self._run(self._ops[self._boundary[segment] :], x))


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention through SDPA (reference/kasmina.md §2.4 item 46)."""

    def __init__(self, n_embd: int, n_head: int, dropout: float) -> None:
        super().__init__()
        self.n_head = n_head
        self.dropout = dropout
        self.qkv = nn.Linear(n_embd, 3 * n_embd)
        self.proj = nn.Linear(n_embd, n_embd)
        self.resid_drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        qkv = self.qkv(x).reshape(b, t, 3, self.n_head, d // self.n_head).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(
            qkv[0], qkv[1], qkv[2], is_causal=True, dropout_p=self.dropout if self.training else 0.0
        )
        result: torch.Tensor = self.resid_drop(self.proj(out.transpose(1, 2).reshape(b, t, d)))
        return result


class TransformerBlock(nn.Module):
    """Pre-norm block: `x + Attn(LN x)` then `x + MLP(LN x)` with a D→4D→D GELU MLP."""

    def __init__(self, n_embd: int, n_head: int, dropout: float) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(n_embd)
        self.attn = CausalSelfAttention(n_embd, n_head, dropout)
        self.ln2 = nn.LayerNorm(n_embd)
        self.mlp = nn.Sequential(
            nn.Linear(n_embd, 4 * n_embd), nn.GELU(), nn.Linear(4 * n_embd, n_embd), nn.Dropout(dropout)
        )

    def attend(self, x: Tensor) -> Tensor:
        """The attention half: `x + Attn(LN x)`; a POST_ATTN surface sits after it."""
        result: torch.Tensor = x + self.attn(self.ln1(x))
        return result

    def feed_forward(self, x: Tensor) -> Tensor:
        """The MLP half: `x + MLP(LN x)`; a POST_MLP surface sits after it."""
        result: torch.Tensor = x + self.mlp(self.ln2(x))
        return result

    def forward(self, x: Tensor) -> Tensor:
        return self.feed_forward(self.attend(x))


#: Where a TransformerHost puts its slots: "block_end" closes each of `num_segments` segments (the reference);
#: "sublayer" puts one after every attention and every MLP half (kasmina2 track A1).
TRANSFORMER_SURFACES = ("block_end", "sublayer")


class TransformerHost(SlottedHostBase):
    """GPT-style language model with a tied head (reference/kasmina.md §2.4 item 47).

    The forward pass is a timeline of half-layers: attention then MLP for each layer, so a boundary is the number
    of halves run before it. With `surfaces="block_end"` slot `r0c{i}` closes segment i of `num_segments`. With
    `surfaces="sublayer"` (kasmina2 track A1, plans/kasmina2-phase0.md §2.1) every layer l has a POST_ATTN slot
    and a POST_MLP slot, `r0c{order}` with `order = 2·l + rank`; one row, so row-major action order, `order` and
    execution order all agree. Routing runs the halves directly; no hooks.
    """

    def __init__(
        self,
        vocab_size: int = 50257,
        n_embd: int = 384,
        n_head: int = 6,
        n_layer: int = 6,
        block_size: int = 256,
        dropout: float = 0.1,
        num_segments: int = 3,
        surfaces: str = "block_end",
    ) -> None:
        super().__init__()
        if n_embd % n_head != 0:
            raise ValueError(f"n_embd ({n_embd}) must be divisible by n_head ({n_head})")
        if surfaces not in TRANSFORMER_SURFACES:
            raise ValueError(f"unknown surfaces {surfaces!r}; choose one of {list(TRANSFORMER_SURFACES)}")
        if num_segments < 1 or n_layer % num_segments != 0:
            raise ValueError(f"num_segments ({num_segments}) must divide n_layer ({n_layer})")
        if surfaces == "sublayer" and num_segments != n_layer:
            raise ValueError(f"sublayer surfaces split every layer: num_segments ({num_segments}) must be n_layer")
        self.n_embd = n_embd
        self.block_size = block_size
        self.surfaces = surfaces
        self.tok_emb = nn.Embedding(vocab_size, n_embd)
        self.pos_emb = nn.Embedding(block_size, n_embd)
        self.drop = nn.Dropout(dropout)
        self.layers = nn.ModuleList(TransformerBlock(n_embd, n_head, dropout) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd)
        self.head = nn.Linear(n_embd, vocab_size, bias=False)
        self.apply(self._init_weights)
        self.head.weight = self.tok_emb.weight
        self._halves = 2 * n_layer
        if surfaces == "sublayer":
            kinds = (SurfaceType.POST_ATTN, SurfaceType.POST_MLP)
            self._boundary = {f"r0c{k}": k + 1 for k in range(self._halves)}
            self._specs = [
                SlotSpec(
                    slot_id=f"r0c{k}",
                    channels=n_embd,
                    order=k,
                    surface=kinds[k % 2],
                    position=(k + 1) / self._halves,
                )
                for k in range(self._halves)
            ]
        else:
            per = self._halves // num_segments
            self._boundary = {f"r0c{i}": (i + 1) * per for i in range(num_segments)}
            self._specs = [
                SlotSpec(
                    slot_id=f"r0c{i}",
                    channels=n_embd,
                    order=i,
                    surface=SurfaceType.BLOCK_END,
                    position=(i + 1) / num_segments,
                )
                for i in range(num_segments)
            ]

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        # GPT-2 initialisation: N(0, 0.02) weights and zero biases.
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    @property
    def topology(self) -> Topology:
        return Topology.TRANSFORMER

    def execution_order(self) -> list[str]:
        """Boundaries in forward order (the same as action order for this host)."""
        return [spec.slot_id for spec in self._specs]

    def _embed(self, idx: Tensor) -> Tensor:
        t = idx.shape[1]
        if t > self.block_size:
            raise ValueError(f"sequence length {t} exceeds block_size {self.block_size}")
        pos = torch.arange(t, device=idx.device)
        result: torch.Tensor = self.drop(self.tok_emb(idx) + self.pos_emb(pos))
        return result

    def _run(self, start: int, end: int, x: Tensor) -> Tensor:
        """Run the half-layers [start, end): half 2·l is layer l's attention, half 2·l + 1 its MLP."""
        for half in range(start, end):
            layer: TransformerBlock = self.layers[half // 2]  # type: ignore[assignment]
            x = layer.attend(x) if half % 2 == 0 else layer.feed_forward(x)
        return x

    def forward(self, idx: Tensor) -> Tensor:
        x = self._run(0, self._halves, self._embed(idx))
        result: torch.Tensor = self.head(self.ln_f(x))
        return result

    def forward_to_segment(self, segment: str, x: Tensor, from_segment: str | None = None) -> Tensor:
        """From token ids (or the boundary `from_segment`'s features) up to the boundary `segment`."""
        _check_segment(self._boundary, segment)
        if from_segment is None:
            return self._run(0, self._boundary[segment], self._embed(x))
        _check_segment(self._boundary, from_segment)
        start, end = self._boundary[from_segment], self._boundary[segment]
        if end <= start:
            raise ValueError(f"cannot route backwards or in place from {from_segment!r} to {segment!r}")
        return self._run(start, end, x)

    def forward_from_segment(self, segment: str, x: Tensor) -> Tensor:
        """From the boundary `segment` to the logits."""
        _check_segment(self._boundary, segment)
        result: torch.Tensor = self.head(self.ln_f(self._run(self._boundary[segment], self._halves, x)))
        return result
