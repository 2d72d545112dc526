"""Compute accounting for one episode: forward FLOPs, per-epoch figures, parameter-epochs (proof-baselines §4).

FLOPs follow torch's `FlopCounterMode` convention: a multiply-add counts as 2 FLOPs, and only matrix products,
convolutions and attention are counted (bias adds, activations and normalisation are left out).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from leyline_schemas import EpochCompute
from services.kasmina.mechanics.blueprints import attention_through_sdpa
from services.kasmina.mechanics.model import MorphogeneticModel
from services.tolaria.topology import forward_signature

# Backward costs about twice the forward pass (one product for input gradients, one for weight gradients).
TRAIN_FLOPS_PER_FORWARD_FLOP = 3


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Put every module in eval mode and give each its own train/eval flag back afterwards."""
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in flags:
            module.training = training


def _forked_rng(device: torch.device) -> AbstractContextManager[object]:
    """Fork the CPU generator and, for an accelerator sample, that device's generator too."""
    if device.type == "cpu":
        return torch.random.fork_rng(devices=[])
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return torch.random.fork_rng(devices=[index], device_type="cuda")
    return torch.random.fork_rng(device_type=device.type)


def forward_flops_per_sample(model: nn.Module, sample: Tensor) -> int:
    """Forward FLOPs of `model` on `sample`, a batch of one, counted with a multiply-add as 2 FLOPs.

    Runs under `no_grad` in eval mode; the train/eval flags and torch's RNG state (CPU and the sample's device)
    come back as they were.
    """
    if sample.dim() == 0 or sample.shape[0] != 1:
        raise ValueError(f"forward FLOPs are measured on a batch of one sample, got shape {tuple(sample.shape)}")
    counter = FlopCounterMode(display=False)
    with _forked_rng(sample.device), _eval_mode(model), torch.no_grad(), attention_through_sdpa(), counter:
        model(sample)
    return int(counter.get_total_flops())


def validation_flops_per_sample(
    model: MorphogeneticModel, sample: Tensor, configs: Sequence[Mapping[str, float]]
) -> int:
    """FLOPs per sample of evaluating alpha `configs` as validation does (`MorphogeneticModel.forward_configs`).

    What the configurations share runs once and a slot at amplitude 0 skips its seed, so K configurations cost
    between one forward and K forwards. Measured like `forward_flops_per_sample`, on a batch of one.
    """
    if sample.dim() == 0 or sample.shape[0] != 1:
        raise ValueError(f"validation FLOPs are measured on a batch of one sample, got shape {tuple(sample.shape)}")
    counter = FlopCounterMode(display=False)
    with _forked_rng(sample.device), _eval_mode(model), torch.no_grad(), attention_through_sdpa(), counter:
        for _ in model.forward_configs(sample, configs):
            pass
    return int(counter.get_total_flops())


def config_tree_shape(paths: Sequence[tuple[float | None, ...]]) -> tuple[tuple[int | None, ...], ...]:
    """What the cost of a config walk depends on: per slot, which configs agree, which are off and which run alone.

    Amplitudes become labels per slot (None: own forward, 0: off, 1, 2, …: distinct amplitudes in order of first
    appearance), so configs at other nonzero alphas with the same agreements cost the same and share a cache entry.
    """
    shape = []
    for column in zip(*paths, strict=True):
        labels: dict[float, int] = {}
        shape.append(
            tuple(None if a is None else 0 if a == 0.0 else labels.setdefault(a, len(labels) + 1) for a in column)
        )
    return tuple(shape)


class FlopCache:
    """Forward FLOPs per sample, measured once per topology signature (e.g. task and slot → blueprint in forward)."""

    def __init__(self, measure: Callable[[nn.Module, Tensor], int] = forward_flops_per_sample) -> None:
        self._measure = measure
        self._flops_by_signature: dict[Hashable, int] = {}
        self.measurements = 0

    def forward_flops(self, signature: Hashable, model: nn.Module, sample: Tensor) -> int:
        """The cached figure for `signature`, measuring `model` on `sample` the first time it is seen."""
        return self.flops(signature, lambda: self._measure(model, sample))

    def flops(self, key: Hashable, measure: Callable[[], int]) -> int:
        """The cached figure for `key`, calling `measure` the first time it is seen."""
        if key not in self._flops_by_signature:
            self._flops_by_signature[key] = measure()
            self.measurements += 1
        return self._flops_by_signature[key]

    def __contains__(self, signature: Hashable) -> bool:
        return signature in self._flops_by_signature

    def __len__(self) -> int:
        return len(self._flops_by_signature)


@dataclass(frozen=True)
class EpochComputeFigures:
    """One epoch's compute: parameters in forward, samples seen and the FLOPs they cost."""

    params_in_forward: int
    train_samples: int
    val_samples: int
    fwd_flops_per_sample: int
    train_flops: int
    val_flops_main: int
    val_flops_counterfactual: int

    @property
    def all_in_flops(self) -> int:
        return self.train_flops + self.val_flops_main + self.val_flops_counterfactual

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def epoch_compute_figures(
    *,
    params_in_forward: int,
    train_samples: int,
    val_samples: int,
    fwd_flops_per_sample: int,
    val_flops_per_sample: int | None = None,
) -> EpochComputeFigures:
    """Figures for an epoch whose validation pass cost `val_flops_per_sample` (one forward when None: main only).

    `val_flops_counterfactual` is what validation cost beyond the main configuration's forward.
    """
    val_flops = fwd_flops_per_sample if val_flops_per_sample is None else val_flops_per_sample
    counts = {
        "params_in_forward": params_in_forward,
        "train_samples": train_samples,
        "val_samples": val_samples,
        "fwd_flops_per_sample": fwd_flops_per_sample,
    }
    negative = [name for name, value in counts.items() if value < 0]
    if negative:
        raise ValueError(f"compute counts cannot be negative: {', '.join(negative)}")
    if val_flops < fwd_flops_per_sample:
        raise ValueError(
            f"a validation pass costs at least the main forward ({fwd_flops_per_sample} FLOPs), got {val_flops}"
        )
    return EpochComputeFigures(
        params_in_forward=params_in_forward,
        train_samples=train_samples,
        val_samples=val_samples,
        fwd_flops_per_sample=fwd_flops_per_sample,
        train_flops=TRAIN_FLOPS_PER_FORWARD_FLOP * fwd_flops_per_sample * train_samples,
        val_flops_main=fwd_flops_per_sample * val_samples,
        val_flops_counterfactual=(val_flops - fwd_flops_per_sample) * val_samples,
    )


def parameter_epochs(params_per_epoch: Iterable[int]) -> int:
    """PE = Σ_t P_t, the parameters in forward summed over the episode's epochs."""
    return sum(params_per_epoch)


def cumulative(train_flops_per_epoch: Iterable[int]) -> list[int]:
    """C(t) = Σ_{τ≤t} train_flops_τ for every epoch t."""
    return list(itertools.accumulate(train_flops_per_epoch))


class ComputeLedger:
    """One episode's compute, epoch by epoch: what `EpochReport.compute` and the episode summary carry.

    Forward FLOPs are measured once per set of seeds in forward (a topology signature) on a one-sample batch, and
    validation FLOPs once per signature and shape of the config walk (`config_tree_shape`).
    """

    def __init__(self, model: MorphogeneticModel, sample: Tensor) -> None:
        self.model = model
        self.sample = sample
        self.flops = FlopCache()
        self.params_in_forward: list[int] = []
        self.train_flops: list[int] = []
        self._train_samples = 0
        self._order_hash = ""

    def state(self) -> dict[str, list[int]]:
        """The per-epoch figures so far (a host checkpoint; the FLOP cache is measured again when needed)."""
        return {"params_in_forward": list(self.params_in_forward), "train_flops": list(self.train_flops)}

    def load_state(self, state: dict[str, list[int]]) -> None:
        self.params_in_forward = [int(v) for v in state["params_in_forward"]]
        self.train_flops = [int(v) for v in state["train_flops"]]

    def trained(self, samples: int, order_hash: str) -> None:
        """Record the epoch's training pass: samples seen and the hash of their order."""
        self._train_samples, self._order_hash = samples, order_hash

    def epoch(
        self,
        configs: Sequence[Mapping[str, float]],
        val_samples: int,
        train_seconds: float,
        validate_seconds: float,
    ) -> EpochCompute:
        """The epoch's figures, validation having evaluated alpha `configs` (the main one, `{}`, first)."""
        signature = forward_signature(self.model)
        fwd = self.flops.forward_flops(signature, self.model, self.sample)
        configs = list(configs) or [{}]
        val = fwd
        if len(configs) > 1:
            key = ("validation", signature, config_tree_shape(self.model.config_paths(configs)))
            val = self.flops.flops(key, lambda: validation_flops_per_sample(self.model, self.sample, configs))
        in_forward = self.model.host_param_count + sum(
            slot.seed_param_count for slot in self.model.seed_slots() if slot.is_active
        )
        figures = epoch_compute_figures(
            params_in_forward=in_forward,
            train_samples=self._train_samples,
            val_samples=val_samples,
            fwd_flops_per_sample=fwd,
            val_flops_per_sample=val,
        )
        self.params_in_forward.append(in_forward)
        self.train_flops.append(figures.train_flops)
        return EpochCompute(
            **figures.as_dict(),
            validation_configs=len(configs),
            train_seconds=train_seconds,
            validate_seconds=validate_seconds,
            data_order_hash=self._order_hash,
        )
