"""Tolaria's data: digits, CIFAR-10 (real or synthetic), TinyStories, as plain tensors plus a seeded batch stream.

No torchvision and no PIL are needed: CIFAR's PNG cells are decoded here with zlib, augmentation runs on tensors, and
nothing is ever downloaded. Missing data raises `DatasetUnavailable` saying what to fetch and where to put it
(reference/tolaria_karn.md §2; ARCHITECTURE.md §11).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from services.tolaria.png import decode_png_batch

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)  # §2.1
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR10_HF_NAME = "uoft-cs/cifar10"
TINYSTORIES_HF_NAME = "roneneldan/TinyStories"
EOS_TEXT = "<|endoftext|>"
# Byte tokenizer: ids 0–255 are the UTF-8 bytes, id 256 is an end-of-story token appended after every story (the
# role GPT-2's <|endoftext|> plays), and it also pads short windows (§2.8), so the vocabulary is 257.
BYTE_EOS = 256
BYTE_VOCAB = 257


class DatasetUnavailable(RuntimeError):
    """Data that is not on this machine; the message says what to download, where to put it, and `--synthetic`."""

    def __init__(self, dataset: str, cache_dir: Path, detail: str = "") -> None:
        self.dataset = dataset
        self.cache_dir = cache_dir
        super().__init__(
            f"dataset {dataset!r} is not available offline{': ' + detail if detail else ''}. "
            f'Download it on a connected machine with `python -c "import datasets; '
            f"datasets.load_dataset('{dataset}', cache_dir='{cache_dir}')\"` and copy {cache_dir} here "
            f"(set ESPER_DATA_DIR or HF_DATASETS_CACHE to choose the directory), or point at local files "
            f"(ESPER_CIFAR10_PATH: parquet/arrow with columns img,label; ESPER_TINYSTORIES_PATH: a text file with "
            f"{EOS_TEXT} separators), or run with --synthetic."
        )


@dataclass(frozen=True)
class TensorSplit:
    """Train and validation tensors of one dataset."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor


def resolve_data_dir(explicit: str | Path | None = None) -> Path:
    """The cache directory: the argument, else ESPER_DATA_DIR, else HF_DATASETS_CACHE, else ~/.cache/esper/data."""
    chosen = explicit or os.environ.get("ESPER_DATA_DIR") or os.environ.get("HF_DATASETS_CACHE")
    return Path(chosen).expanduser() if chosen else Path.home() / ".cache" / "esper" / "data"


def load_digits_split(seed: int, val_fraction: float = 0.2) -> TensorSplit:
    """scikit-learn's 8×8 digits as (N,1,8,8) float32 normalised by the train split, stratified split fixed by seed."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = (np.asarray(bunch.images, dtype=np.float32) / 16.0)[:, None, :, :]
    labels = np.asarray(bunch.target, dtype=np.int64)
    x_tr, x_va, y_tr, y_va = train_test_split(
        images, labels, test_size=val_fraction, random_state=seed, stratify=labels, shuffle=True
    )
    mean, std = float(x_tr.mean()), float(x_tr.std())
    return TensorSplit(
        torch.from_numpy((x_tr - mean) / std),
        torch.from_numpy(y_tr),
        torch.from_numpy((x_va - mean) / std),
        torch.from_numpy(y_va),
    )


def synthetic_cifar(n_train: int, n_val: int, seed: int, noise: float = 1.0) -> TensorSplit:
    """Learnable CIFAR-shaped data: each class is a colour plus an oriented grating, drawn with Gaussian noise.

    Prototypes depend only on the seed, so train and validation share them; roughly zero-mean, unit-scale pixels.
    """
    gen = torch.Generator().manual_seed(seed)
    colours = torch.randn(10, 3, 1, 1, generator=gen) * 0.5
    coords = torch.arange(32, dtype=torch.float32)
    angles = torch.arange(10, dtype=torch.float32) * (math.pi / 10)
    freqs = 0.25 + 0.5 * torch.rand(10, generator=gen)
    phase = torch.cos(angles)[:, None, None] * coords[None, :, None] + torch.sin(angles)[:, None, None] * coords
    gratings = torch.sin(phase * freqs[:, None, None])[:, None, :, :]  # (10,1,32,32)
    prototypes = colours + 0.5 * gratings

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(n) % 10
        y = y[torch.randperm(n, generator=gen)]
        x = prototypes[y] + noise * torch.randn(n, 3, 32, 32, generator=gen)
        return x.contiguous(), y.to(torch.int64)

    x_tr, y_tr = draw(n_train)
    x_va, y_va = draw(n_val)
    return TensorSplit(x_tr, y_tr, x_va, y_va)


def synthetic_tokens(
    n_train: int, n_val: int, block_size: int, vocab_size: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Learnable token windows from a seeded sparse Markov chain: each token has 3 successors (loss floor ≈ ln 3)."""
    gen = torch.Generator().manual_seed(seed)
    successors = torch.randint(0, vocab_size, (vocab_size, 3), generator=gen)
    n = n_train + n_val
    seq = torch.empty(n, block_size + 1, dtype=torch.int64)
    seq[:, 0] = torch.randint(0, vocab_size, (n,), generator=gen)
    for t in range(block_size):
        pick = torch.randint(0, 3, (n,), generator=gen)
        seq[:, t + 1] = successors[seq[:, t], pick]
    x, y = seq[:, :-1].contiguous(), seq[:, 1:].contiguous()
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def load_cifar10(
    cache_dir: str | Path | None = None,
    path: str | Path | None = None,
    seed: int = 0,
    val_fraction: float = 0.2,
    max_train: int | None = None,
    max_val: int | None = None,
) -> TensorSplit:
    """CIFAR-10 as normalised (N,3,32,32) float32 tensors, from a local parquet/arrow file or the `datasets` cache.

    A directory is searched for files whose names contain "train" and "test"; a single file is split by `seed` with
    `val_fraction`. Without a local path the Hugging Face cache is used only if it already holds the dataset.
    """
    local = path or os.environ.get("ESPER_CIFAR10_PATH")
    if local:
        x_tr, y_tr, x_va, y_va = _cifar_from_local(Path(local).expanduser(), seed, val_fraction)
    else:
        x_tr, y_tr, x_va, y_va = _cifar_from_hf(resolve_data_dir(cache_dir))
    x_tr, y_tr = x_tr[:max_train], y_tr[:max_train]
    x_va, y_va = x_va[:max_val], y_va[:max_val]
    return TensorSplit(normalise_cifar(x_tr), y_tr, normalise_cifar(x_va), y_va)


def normalise_cifar(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N,3,32,32) → float32 normalised with the reference mean/std (§2.1)."""
    mean = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    return (images.to(torch.float32) / 255.0 - mean) / std


def augment_cifar(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop after padding by `pad` with normalised black, then a horizontal flip with p=0.5 (§2.1, §2.6)."""
    n, c, h, w = x.shape
    black = (-torch.tensor(CIFAR10_MEAN) / torch.tensor(CIFAR10_STD))[:c].to(x)
    padded = black.view(1, c, 1, 1).expand(n, c, h + 2 * pad, w + 2 * pad).clone()
    padded[:, :, pad : pad + h, pad : pad + w] = x
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
    flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)
    rows = dy[:, None] + torch.arange(h, device=x.device)
    cols = torch.arange(w, device=x.device).expand(n, w)
    cols = torch.where(flip[:, None], cols.flip(1), cols) + dx[:, None]
    idx = torch.arange(n, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[idx, rows[:, :, None], cols[:, None, :]]  # (N,H,W,C)
    return out.permute(0, 3, 1, 2).contiguous()


def _cached(cache: Path, token: str) -> bool:
    """Whether the cache holds a folder for the dataset (`uoft-cs___cifar10`, `datasets--roneneldan--TinyStories`)."""
    return cache.is_dir() and any(token in p.name.lower().replace("_", "") for p in cache.iterdir())


def _cifar_from_hf(cache: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    # Look before asking `datasets`: with no cached copy it would try the network, which this task must never need.
    if not _cached(cache, "cifar10"):
        raise DatasetUnavailable(CIFAR10_HF_NAME, cache, f"nothing for it under {cache}")
    import datasets

    try:
        ds = datasets.load_dataset(CIFAR10_HF_NAME, cache_dir=str(cache))
        train, test = ds["train"].with_format("arrow")[:], ds["test"].with_format("arrow")[:]
    except Exception as exc:  # any failure of the cache is the same operator problem: the data is not here
        raise DatasetUnavailable(CIFAR10_HF_NAME, cache, f"{type(exc).__name__}: {exc}") from exc
    return (*_cifar_table(train), *_cifar_table(test))


def _cifar_from_local(
    path: Path, seed: int, val_fraction: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix in {".parquet", ".arrow"})
        train = [p for p in files if "train" in p.name]
        test = [p for p in files if "test" in p.name]
        if not train or not test:
            raise DatasetUnavailable(CIFAR10_HF_NAME, path, f"no train/test parquet or arrow files in {path}")
        x_tr, y_tr = _cat([_cifar_table(_read_table(p)) for p in train])
        x_va, y_va = _cat([_cifar_table(_read_table(p)) for p in test])
        return x_tr, y_tr, x_va, y_va
    if not path.is_file():
        raise DatasetUnavailable(CIFAR10_HF_NAME, path.parent, f"{path} does not exist")
    x, y = _cifar_table(_read_table(path))
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_val = max(1, round(len(y) * val_fraction))
    return x[order[n_val:]], y[order[n_val:]], x[order[:n_val]], y[order[:n_val]]


def _cat(parts: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def _read_table(path: Path) -> Any:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if path.suffix == ".parquet":
        return pq.read_table(path)
    with pa.memory_map(str(path)) as source:  # `datasets` caches arrow in the stream format; plain IPC files too
        try:
            return pa.ipc.open_stream(source).read_all()
        except pa.ArrowInvalid:
            return pa.ipc.open_file(source).read_all()


def _cifar_table(table: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Columns img|image (PNG struct/bytes or raw uint8 arrays) and label → uint8 (N,3,32,32), int64 (N,)."""
    names = table.column_names
    img_col = next((c for c in ("img", "image") if c in names), None)
    if img_col is None or "label" not in names:
        raise ValueError(f"CIFAR table needs columns img (or image) and label, got {names}")
    labels = torch.tensor(table.column("label").to_pylist(), dtype=torch.int64)
    cells = table.column(img_col).to_pylist()
    if cells and isinstance(cells[0], dict):
        cells = [cell["bytes"] for cell in cells]
    if cells and isinstance(cells[0], bytes | bytearray):
        images = decode_png_batch(cells)
    else:
        images = np.asarray(cells, dtype=np.uint8)
        # Raw cells may be channel-first (3,32,32) or HWC / flat (as HF stores decoded images).
        images = images.transpose(0, 2, 3, 1) if images.shape[1:] == (3, 32, 32) else images.reshape(-1, 32, 32, 3)
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))), labels


def load_tinystories(
    path_or_none: str | Path | None,
    block_size: int,
    tokenizer: str = "auto",
    max_stories: int | None = None,
    cache_dir: str | Path | None = None,
    split: str = "validation",
) -> tuple[torch.Tensor, torch.Tensor, str, int]:
    """TinyStories as (inputs, targets) windows of block_size at stride block_size, tokenizer name, vocab (§2.8).

    A path is a text file with <|endoftext|> separators; None reads the `datasets` cache if it holds the dataset.
    tokenizer is "gpt2" (only from local files), "byte", or "auto" (GPT-2 when available offline, else byte).
    """
    if path_or_none is not None:
        text = Path(path_or_none).read_text(encoding="utf-8")
        stories = [s.strip() for s in text.split(EOS_TEXT)]
    else:
        stories = _tinystories_from_hf(resolve_data_dir(cache_dir), split, max_stories)
    stories = [s for s in stories if s][:max_stories]
    name, vocab, eos, encode = _tokenizer(tokenizer)
    pieces: list[np.ndarray] = []
    for story in stories:
        pieces += [np.asarray(encode(story), dtype=np.int64), np.array([eos], dtype=np.int64)]
    stream = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)
    # Windows start every block_size tokens; a start needs at least one target (1-token tails dropped), and the
    # last window is EOS-padded to block_size + 1 (§2.8).
    n_windows = (len(stream) - 2) // block_size + 1 if len(stream) >= 2 else 0
    padded = np.full(n_windows * block_size + 1, eos, dtype=np.int64)
    kept = min(len(stream), len(padded))
    padded[:kept] = stream[:kept]
    tokens = torch.from_numpy(padded).unfold(0, block_size + 1, block_size)
    return tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous(), name, vocab


def _tinystories_from_hf(cache: Path, split: str, max_stories: int | None) -> list[str]:
    if not _cached(cache, "tinystories"):
        raise DatasetUnavailable(TINYSTORIES_HF_NAME, cache, f"nothing for it under {cache}")
    import datasets

    try:
        ds = datasets.load_dataset(TINYSTORIES_HF_NAME, split=split, cache_dir=str(cache))
    except Exception as exc:  # as for CIFAR: whatever broke, the data is not usable here
        raise DatasetUnavailable(TINYSTORIES_HF_NAME, cache, f"{type(exc).__name__}: {exc}") from exc
    n = len(ds) if max_stories is None else min(len(ds), max_stories)
    return [str(t) for t in ds.select(range(n))["text"]]


def _tokenizer(choice: str) -> tuple[str, int, int, Any]:
    """(name, vocab_size, eos_id, encode) for "gpt2", "byte" or "auto"."""
    if choice not in ("auto", "gpt2", "byte"):
        raise ValueError(f"tokenizer must be auto, gpt2 or byte, got {choice!r}")
    if choice != "byte":
        try:
            from transformers import AutoTokenizer

            gpt2 = AutoTokenizer.from_pretrained("gpt2", local_files_only=True)
            return "gpt2", int(gpt2.vocab_size), int(gpt2.eos_token_id), lambda s: gpt2.encode(s)
        except Exception as exc:  # missing package or missing local files both mean: no GPT-2 here
            if choice == "gpt2":
                raise DatasetUnavailable("gpt2 tokenizer", resolve_data_dir(), f"{type(exc).__name__}: {exc}") from exc
    return "byte", BYTE_VOCAB, BYTE_EOS, lambda s: np.frombuffer(s.encode("utf-8"), dtype=np.uint8)


def epoch_batches(
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    generator: torch.Generator | None = None,
    shuffle: bool = True,
    drop_last: bool = False,
    max_batches: int | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One pass over (x, y) in batches; the order comes only from `generator`, so a seeded run repeats exactly."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = len(x)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    stop = n - n % batch_size if drop_last else n
    for i, start in enumerate(range(0, stop, batch_size)):
        if max_batches is not None and max_batches > 0 and i >= max_batches:
            return
        idx = order[start : start + batch_size]
        yield x[idx], y[idx]


class BatchStream:
    """Epochs of batches over fixed tensors with one generator seeded per env, so epoch k is the same on every rerun."""

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        seed: int,
        shuffle: bool = True,
        drop_last: bool = False,
        max_batches: int | None = None,
    ) -> None:
        if len(x) != len(y):
            raise ValueError(f"inputs and targets differ in length: {len(x)} vs {len(y)}")
        self.x, self.y, self.batch_size = x, y, batch_size
        self.shuffle, self.drop_last, self.max_batches = shuffle, drop_last, max_batches
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        n = len(self.x) // self.batch_size if self.drop_last else math.ceil(len(self.x) / self.batch_size)
        return min(n, self.max_batches) if self.max_batches else n

    def epoch(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The next epoch's batches (a fresh permutation drawn from the stream's generator)."""
        return epoch_batches(
            self.x, self.y, self.batch_size, self.generator, self.shuffle, self.drop_last, self.max_batches
        )
