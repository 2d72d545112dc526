"""Tolaria's task registry: which host, which data and which constants each named task uses.

The ten reference tasks (reference/tolaria_karn.md §1.2), the offline default `digits` (ARCHITECTURE.md §11) and a
synthetic twin of each topology for benchmarks and tests. Hosts are imported lazily so the registry loads without
building any torch module.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

import torch

from leyline_schemas.enums import Topology
from services.tolaria import data, mnist1d

if TYPE_CHECKING:
    from services.tolaria.hosts import CNNHost, TransformerHost

TaskType = Literal["classification", "lm"]
ENV_SEED_STRIDE = 1009  # §5.3
SYNTHETIC_CIFAR_SIZES = (6400, 1280)  # 50 batches of 128 per epoch: the ARCHITECTURE.md §10 benchmark workload
TINYSTORIES_MAX_STORIES = 50_000  # the full train split tokenised up front would need tens of GB


@dataclass(frozen=True)
class TaskData:
    """A task's train/validation tensors, an optional train-time augmentation, and what to record about the data."""

    split: data.TensorSplit
    metadata: dict[str, Any]
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None


DataFactory = Callable[[int, bool, Path | None], TaskData]


@dataclass(frozen=True)
class TaskSpec:
    """Everything a named task fixes (§1.1): host, default slots, data, learning rates and loss constants (§1.5–1.6)."""

    name: str
    topology: Topology
    task_type: TaskType
    host_kwargs: Mapping[str, Any] = field(hash=False)
    default_slots: tuple[str, ...]
    load_data: DataFactory
    num_classes: int | None = None
    vocab_size: int | None = None
    block_size: int | None = None
    host_lr: float = 0.01
    seed_lr: float = 0.01
    batch_size: int = 128
    plateau_threshold: float = 0.5
    loss_baseline: float = math.log(10)
    loss_target: float = 0.3
    loss_delta_std: float = 0.05
    feature_max_epochs: int = 25
    compute_rent_weight: float = 0.05
    episode_length: int = 150

    @property
    def random_guess_loss(self) -> float:
        """ln(num_classes) or ln(vocab), the loss of a uniform guess (the governor's lobotomy reference, §4.2)."""
        n = self.num_classes or self.vocab_size or 10
        return math.log(n)

    def build_host(self, **overrides: Any) -> CNNHost | TransformerHost:
        """A fresh host for this task; overrides replace constructor arguments (e.g. the tokenizer's vocab_size)."""
        from services.tolaria.hosts import CNNHost, TransformerHost  # lazy: the registry must load without hosts

        kwargs = {**self.host_kwargs, **overrides}
        return CNNHost(**kwargs) if self.topology is Topology.CNN else TransformerHost(**kwargs)


def env_seed(root_seed: int, round_index: int, n_envs: int, env_index: int) -> int:
    """The seed of env `env_index` in round `round_index`: root + (round·n_envs + env)·1009 (§5.3)."""
    if n_envs < 1 or not 0 <= env_index < n_envs or round_index < 0:
        raise ValueError(f"env seed needs 0 <= env_index < n_envs and round >= 0: {env_index}, {n_envs}, {round_index}")
    return root_seed + (round_index * n_envs + env_index) * ENV_SEED_STRIDE


def _digits_data(seed: int, synthetic: bool, data_dir: Path | None) -> TaskData:
    # The digits ship with scikit-learn, so there is nothing to synthesise: `synthetic` changes nothing here.
    split = data.load_digits_split(seed)
    return TaskData(split, _meta(split, "sklearn_digits", "scikit-learn", num_classes=10))


def _mnist1d_data(seed: int, synthetic: bool, data_dir: Path | None) -> TaskData:
    # MNIST-1D is generated offline from the package's templates, so `synthetic` changes nothing here either.
    split = mnist1d.load_mnist1d_split(mnist1d.DEFAULT_SAMPLES, data_dir)
    return TaskData(split, _meta(split, "mnist1d", f"mnist1d-package:seed={mnist1d.DATASET_SEED}", num_classes=10))


def _cifar_data(seed: int, synthetic: bool, data_dir: Path | None) -> TaskData:
    if synthetic:
        split = data.synthetic_cifar(*SYNTHETIC_CIFAR_SIZES, seed=seed)
        return TaskData(split, _meta(split, "synthetic_cifar", "synthetic", num_classes=10))
    local = os.environ.get("ESPER_CIFAR10_PATH")
    split = data.load_cifar10(cache_dir=data_dir, seed=seed)
    source = f"local:{local}" if local else f"hf:{data.CIFAR10_HF_NAME}"
    return TaskData(split, _meta(split, "cifar10", source, num_classes=10), augment=data.augment_cifar)


def _synthetic_cnn_data(seed: int, synthetic: bool, data_dir: Path | None) -> TaskData:
    return _cifar_data(seed, True, data_dir)


def _token_split(inputs: torch.Tensor, targets: torch.Tensor, seed: int, val_fraction: float) -> data.TensorSplit:
    order = torch.randperm(len(inputs), generator=torch.Generator().manual_seed(seed))
    n_val = max(1, round(len(inputs) * val_fraction))
    train, val = order[n_val:], order[:n_val]
    return data.TensorSplit(inputs[train], targets[train], inputs[val], targets[val])


def _tinystories_data(seed: int, synthetic: bool, data_dir: Path | None) -> TaskData:
    if synthetic:
        return _tokens_data(seed, 2048, 256, 256, data.BYTE_VOCAB)
    path = os.environ.get("ESPER_TINYSTORIES_PATH")
    inputs, targets, tokenizer, vocab = data.load_tinystories(
        path, block_size=256, tokenizer="auto", max_stories=TINYSTORIES_MAX_STORIES, cache_dir=data_dir, split="train"
    )
    split = _token_split(inputs, targets, seed, val_fraction=0.1)
    source = f"local:{path}" if path else f"hf:{data.TINYSTORIES_HF_NAME}"
    return TaskData(split, _meta(split, "tinystories", source, tokenizer=tokenizer, vocab_size=vocab))


def _tinystories_small_data(seed: int, synthetic: bool, data_dir: Path | None) -> TaskData:
    """The offline TinyStories task: a local story file (ESPER_TINYSTORIES_PATH), byte tokenizer, 64-token windows."""
    if synthetic:
        return _tokens_data(seed, 2048, 256, 64, data.BYTE_VOCAB)
    path = os.environ.get("ESPER_TINYSTORIES_PATH")
    if not path:
        raise ValueError("tinystories_small reads a local story file: set ESPER_TINYSTORIES_PATH")
    inputs, targets, tokenizer, vocab = data.load_tinystories(
        path, block_size=64, tokenizer="byte", max_stories=TINYSTORIES_MAX_STORIES, split="train"
    )
    split = _token_split(inputs, targets, seed, val_fraction=0.1)
    return TaskData(split, _meta(split, "tinystories", f"local:{path}", tokenizer=tokenizer, vocab_size=vocab))


def _tokens_data(seed: int, n_train: int, n_val: int, block_size: int, vocab: int) -> TaskData:
    x_tr, y_tr, x_va, y_va = data.synthetic_tokens(n_train, n_val, block_size, vocab, seed)
    split = data.TensorSplit(x_tr, y_tr, x_va, y_va)
    return TaskData(split, _meta(split, "synthetic_tokens", "synthetic", tokenizer="synthetic", vocab_size=vocab))


def _synthetic_transformer_data(seed: int, synthetic: bool, data_dir: Path | None) -> TaskData:
    return _tokens_data(seed, 1024, 256, 32, 64)


def _meta(split: data.TensorSplit, dataset: str, source: str, **extra: Any) -> dict[str, Any]:
    return {
        "dataset": dataset,
        "source": source,
        "n_train": len(split.y_train),
        "n_val": len(split.y_val),
        "input_shape": list(split.x_train.shape[1:]),
        **extra,
    }


def _cnn(
    base: int, blocks: int, kernel: int, pools: int, in_channels: int = 3, spatial_dims: int = 2
) -> Mapping[str, Any]:
    return MappingProxyType(
        {
            "spatial_dims": spatial_dims,
            "in_channels": in_channels,
            "base_channels": base,
            "n_blocks": blocks,
            "kernel_size": kernel,
            "pool_layers": pools,
            "num_classes": 10,
        }
    )


def _slots(row: int, cols: int) -> tuple[str, ...]:
    return tuple(f"r{row}c{c}" for c in range(cols))


_BASELINE = _cnn(8, 3, 3, 3)
_SCALE = _cnn(8, 5, 3, 5)
_POSTPOOL = _cnn(16, 3, 3, 3)
_GPT = MappingProxyType(
    {
        "vocab_size": 50257,
        "n_embd": 384,
        "n_head": 6,
        "n_layer": 6,
        "block_size": 256,
        "dropout": 0.1,
        "num_segments": 3,
    }
)
_SMALL_GPT = MappingProxyType(
    {"vocab_size": 64, "n_embd": 64, "n_head": 4, "n_layer": 3, "block_size": 32, "dropout": 0.0, "num_segments": 3}
)


def _cifar(name: str, host: Mapping[str, Any], slots: tuple[str, ...], plateau: float = 0.5) -> TaskSpec:
    return TaskSpec(
        name, Topology.CNN, "classification", host, slots, _cifar_data, num_classes=10, plateau_threshold=plateau
    )


# Default slots: the reference enables r0c0–r0c2 (§1.9, §6.3); the surface variants differ only in the slots
# enabled (§1.3): postpool row 1, highres row 0, the multichannel variants the whole grid. Plateau thresholds are
# the §6.6 presets (baseline 0.4, impaired/minimal = baseline, scale 0.35, tinystories 0.3).
_REGISTRY: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        _cifar("cifar_baseline", _BASELINE, _slots(0, 3), plateau=0.4),
        _cifar("cifar_scale", _SCALE, _slots(0, 5), plateau=0.35),
        _cifar("cifar_impaired", _cnn(1, 3, 1, 3), _slots(0, 3), plateau=0.4),
        _cifar("cifar_minimal", _cnn(2, 3, 1, 0), _slots(0, 3), plateau=0.4),
        _cifar("cifar_multichannel", _BASELINE, _slots(0, 3) + _slots(1, 3)),
        _cifar("cifar_postpool", _POSTPOOL, _slots(1, 3)),
        _cifar("cifar_highres", _POSTPOOL, _slots(0, 3)),
        _cifar("cifar_deep_multichannel", _SCALE, _slots(0, 5) + _slots(1, 5)),
        _cifar("cifar_deep_impaired", _cnn(2, 5, 1, 5), _slots(0, 5)),
        TaskSpec(
            "tinystories",
            Topology.TRANSFORMER,
            "lm",
            _GPT,
            _slots(0, 3),
            _tinystories_data,
            vocab_size=50257,
            block_size=256,
            batch_size=32,
            plateau_threshold=0.3,
            loss_baseline=math.log(50257),
            loss_target=3.5,
            loss_delta_std=0.15,
            feature_max_epochs=50,
            compute_rent_weight=0.01,
        ),
        # Three blocks with two pools keep 8×8 digits at 2×2 before the global pool (8 → 4 → 2).
        TaskSpec(
            "digits",
            Topology.CNN,
            "classification",
            _cnn(16, 3, 3, 2, in_channels=1),
            _slots(0, 3),
            _digits_data,
            num_classes=10,
            batch_size=64,
            loss_target=0.1,
            episode_length=40,
        ),
        # MNIST-1D with a host that has headroom (issue 14): pointwise (kernel-1) conv blocks see no temporal context
        # beyond the pools, so the host alone is weak, while the width-3 seed blueprints add exactly what it lacks.
        # 4 → 8 → 16 channels, three pools (40 → 20 → 10 → 5 samples), 390 parameters.
        TaskSpec(
            "mnist1d",
            Topology.CNN,
            "classification",
            _cnn(4, 3, 1, 3, in_channels=1, spatial_dims=1),
            _slots(0, 3),
            _mnist1d_data,
            num_classes=10,
            host_lr=0.05,
            seed_lr=0.05,
            batch_size=128,
            plateau_threshold=0.5,
            loss_target=0.3,
            episode_length=25,
        ),
        # A deliberately starved 2-D host on digits: pointwise (kernel-1) convs, 4 → 8 → 16 channels, 390 parameters.
        TaskSpec(
            "digits_tiny",
            Topology.CNN,
            "classification",
            _cnn(4, 3, 1, 2, in_channels=1),
            _slots(0, 3),
            _digits_data,
            num_classes=10,
            batch_size=64,
            loss_target=0.3,
            episode_length=20,
        ),
        TaskSpec(
            "synthetic_cnn",
            Topology.CNN,
            "classification",
            _BASELINE,
            _slots(0, 3),
            _synthetic_cnn_data,
            num_classes=10,
            plateau_threshold=0.4,
            episode_length=25,
        ),
        TaskSpec(
            "synthetic_transformer",
            Topology.TRANSFORMER,
            "lm",
            _SMALL_GPT,
            _slots(0, 3),
            _synthetic_transformer_data,
            vocab_size=64,
            block_size=32,
            batch_size=32,
            loss_baseline=math.log(64),
            loss_target=math.log(3),
            loss_delta_std=0.15,
            compute_rent_weight=0.01,
            episode_length=25,
        ),
    )
}
REFERENCE_TASKS = tuple(name for name in _REGISTRY if name.startswith(("cifar_", "tinystories")))

# kasmina2 phase 0, track A0 (plans/kasmina2-phase0.md §2.1): the reference TinyStories host with a slot after every
# layer (num_segments = n_layer = 6, slots r0c0…r0c5), denser injection points with no host change. Not a reference
# task, so it is registered after REFERENCE_TASKS is taken.
_REGISTRY["tinystories_layerwise"] = replace(
    _REGISTRY["tinystories"],
    name="tinystories_layerwise",
    host_kwargs=MappingProxyType({**_GPT, "num_segments": int(_GPT["n_layer"])}),
    default_slots=_slots(0, int(_GPT["n_layer"])),
)

# A CPU-sized TinyStories variant (not a reference task): a small TransformerHost on byte tokens of a local file.
_REGISTRY["tinystories_small"] = TaskSpec(
    "tinystories_small",
    Topology.TRANSFORMER,
    "lm",
    MappingProxyType({**_SMALL_GPT, "vocab_size": data.BYTE_VOCAB, "block_size": 64}),
    _slots(0, 3),
    _tinystories_small_data,
    vocab_size=data.BYTE_VOCAB,
    block_size=64,
    batch_size=32,
    plateau_threshold=0.3,
    loss_baseline=math.log(data.BYTE_VOCAB),
    loss_target=1.5,
    loss_delta_std=0.15,
    compute_rent_weight=0.01,
    episode_length=12,
)


def _sublayer_variant(base: str) -> TaskSpec:
    """kasmina2 track A1 (plans/kasmina2-phase0.md §2.1): `base`'s host with a POST_ATTN and a POST_MLP slot in
    every layer, `r0c{2·layer + rank}`. Parameters and forward are unchanged; only where slots may sit differs."""
    spec = _REGISTRY[base]
    layers = int(spec.host_kwargs["n_layer"])
    return replace(
        spec,
        name=f"{base}_sublayer",
        host_kwargs=MappingProxyType({**spec.host_kwargs, "num_segments": layers, "surfaces": "sublayer"}),
        default_slots=_slots(0, 2 * layers),
    )


for _base in ("tinystories", "tinystories_small", "synthetic_transformer"):
    _REGISTRY[f"{_base}_sublayer"] = _sublayer_variant(_base)


#: Headroom as `esper tasks --measure TASK` measured it on this repository's 2-core CPU machine (3 env seeds, the
#: task's episode length and batch size, every batch): final validation accuracy (%) of the host alone
#: (static-initial) and with conv_light fossilized in every default slot from epoch 1 (static-final, filled).
MEASURED_HEADROOM: dict[str, dict[str, Any]] = {
    # 2026-12-02, `esper tasks --measure mnist1d --seeds 3`: 75 s.
    "mnist1d": {
        "static_initial": [57.65, 55.45, 40.65],
        "static_final_filled": [92.65, 88.7, 91.8],
        "static_initial_mean": 51.25,
        "static_final_filled_mean": 91.05,
        "host_params": 390,
        "filled_params": 1454,
        "epochs": 25,
    },
    # 2026-12-02, `esper tasks --measure digits_tiny --seeds 3`: 23 s.
    "digits_tiny": {
        "static_initial": [34.44, 36.11, 19.44],
        "static_final_filled": [97.5, 95.83, 87.78],
        "static_initial_mean": 30.0,
        "static_final_filled_mean": 93.7,
        "host_params": 390,
        "filled_params": 3470,
        "epochs": 20,
    },
}


def task_names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def get_task(name: str) -> TaskSpec:
    """The task registered under `name` (case-insensitive); an unknown name is a ValueError listing the valid ones."""
    spec = _REGISTRY.get(name.strip().lower())
    if spec is None:
        raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(_REGISTRY)}")
    return spec


def task_table() -> list[dict[str, Any]]:
    """One row per task for `esper tasks --json`, with parameter counts and slot ids read from a built host."""
    rows = []
    for spec in _REGISTRY.values():
        host = spec.build_host()
        rows.append(
            {
                "name": spec.name,
                "topology": str(spec.topology),
                "task_type": spec.task_type,
                "host_params": sum(p.numel() for p in host.parameters()),
                "slot_ids": [s.slot_id for s in host.injection_specs()],
                "default_slots": list(spec.default_slots),
                "batch_size": spec.batch_size,
                "episode_length": spec.episode_length,
                "measured_headroom": MEASURED_HEADROOM.get(spec.name),
            }
        )
        del host
    return rows
