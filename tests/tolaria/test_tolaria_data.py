"""Tolaria's data loaders: digits, synthetic CIFAR, the CIFAR parquet path, TinyStories and the seeded batch stream."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from torch import nn

from services.tolaria.data import (
    BYTE_EOS,
    BYTE_VOCAB,
    CIFAR10_MEAN,
    CIFAR10_STD,
    BatchStream,
    DatasetUnavailable,
    augment_cifar,
    epoch_batches,
    load_cifar10,
    load_digits_split,
    load_tinystories,
    synthetic_cifar,
    synthetic_tokens,
)
from services.tolaria.png import decode_png_batch

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = Path(os.environ.get("ESPER_SHARED_DATA", REPO.parent / "shared" / "data"))
TINYSTORIES_SAMPLE = SHARED_DATA / "tinystories-valid-sample.txt"


def _png(image: np.ndarray, filters: list[int]) -> bytes:
    """Encode an (H,W,3) uint8 image as PNG with the given per-row filter types (a test-side reference encoder)."""
    h, w, _ = image.shape
    img = image.astype(np.int32).reshape(h, w * 3)
    raw = bytearray()
    for r in range(h):
        prev = img[r - 1] if r else np.zeros(w * 3, dtype=np.int32)
        left = np.concatenate([np.zeros(3, dtype=np.int32), img[r, :-3]])
        up_left = np.concatenate([np.zeros(3, dtype=np.int32), prev[:-3]])
        p = left + prev - up_left
        pa_, pb, pc = np.abs(p - left), np.abs(p - prev), np.abs(p - up_left)
        paeth = np.where((pa_ <= pb) & (pa_ <= pc), left, np.where(pb <= pc, prev, up_left))
        pred = [np.zeros_like(left), left, prev, (left + prev) // 2, paeth][filters[r]]
        raw += bytes([filters[r]]) + ((img[r] - pred) % 256).astype(np.uint8).tobytes()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(raw))) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


def _cifar_like(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8), np.arange(n, dtype=np.int64) % 10


def _write_png_parquet(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    cells = [{"bytes": _png(im, [(r + i) % 5 for r in range(32)]), "path": None} for i, im in enumerate(images)]
    pq.write_table(pa.table({"img": cells, "label": labels.tolist()}), path)


def test_digits_shapes_normalisation_and_determinism() -> None:
    split = load_digits_split(seed=3)
    assert split.x_train.shape == (1437, 1, 8, 8) and split.x_val.shape == (360, 1, 8, 8)
    assert split.x_train.dtype == torch.float32 and split.y_train.dtype == torch.int64
    assert abs(split.x_train.mean().item()) < 1e-4 and split.x_train.std().item() == pytest.approx(1.0, abs=1e-3)
    again = load_digits_split(seed=3)
    assert torch.equal(split.x_val, again.x_val) and torch.equal(split.y_train, again.y_train)
    assert not torch.equal(split.y_val, load_digits_split(seed=4).y_val)


def test_digits_split_is_stratified() -> None:
    split = load_digits_split(seed=0, val_fraction=0.2)
    train_share = torch.bincount(split.y_train, minlength=10).float() / len(split.y_train)
    val_share = torch.bincount(split.y_val, minlength=10).float() / len(split.y_val)
    assert torch.allclose(train_share, val_share, atol=0.01)


def test_synthetic_cifar_is_deterministic_and_learnable() -> None:
    data = synthetic_cifar(n_train=1000, n_val=300, seed=7)
    assert data.x_train.shape == (1000, 3, 32, 32) and data.x_val.shape == (300, 3, 32, 32)
    assert set(data.y_train.tolist()) == set(range(10))
    assert torch.equal(data.x_val, synthetic_cifar(1000, 300, seed=7).x_val)

    torch.manual_seed(0)
    model = nn.Linear(3 * 32 * 32, 10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    for x, y in epoch_batches(data.x_train, data.y_train, 100, torch.Generator().manual_seed(0)):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x.flatten(1)), y).backward()
        optimizer.step()
    accuracy = (model(data.x_val.flatten(1)).argmax(1) == data.y_val).float().mean().item()
    assert accuracy > 0.5  # chance is 0.1


def test_synthetic_tokens_follow_their_chain() -> None:
    x_tr, y_tr, x_va, y_va = synthetic_tokens(64, 16, block_size=12, vocab_size=50, seed=1)
    assert x_tr.shape == y_tr.shape == (64, 12) and x_va.shape == y_va.shape == (16, 12)
    assert torch.equal(x_tr[:, 1:], y_tr[:, :-1])
    # Each token has at most three successors, so the next token is far from uniform over 50.
    pairs = {(a, b) for a, b in zip(x_tr.flatten().tolist(), y_tr.flatten().tolist(), strict=True)}
    assert max(sum(1 for a, _ in pairs if a == t) for t in range(50)) <= 3


def test_png_decoder_handles_every_filter_type() -> None:
    images, _ = _cifar_like(6, seed=2)
    blobs = [_png(im, [(r * 3 + i) % 5 for r in range(32)]) for i, im in enumerate(images)]
    assert np.array_equal(decode_png_batch(blobs), images)


def test_cifar_parquet_file_loads_normalised_tensors(tmp_path: Path) -> None:
    images, labels = _cifar_like(20, seed=0)
    path = tmp_path / "cifar.parquet"
    _write_png_parquet(path, images, labels)
    split = load_cifar10(cache_dir=tmp_path / "empty", path=path, seed=0, val_fraction=0.25)
    assert split.x_train.shape == (15, 3, 32, 32) and split.x_val.shape == (5, 3, 32, 32)
    assert sorted(split.y_train.tolist() + split.y_val.tolist()) == sorted(labels.tolist())
    # Undo the normalisation for one image and compare with the written pixels.
    index = split.y_val[0].item()
    expected = torch.from_numpy(images[index]).permute(2, 0, 1).float() / 255.0
    restored = split.x_val[0] * torch.tensor(CIFAR10_STD).view(3, 1, 1) + torch.tensor(CIFAR10_MEAN).view(3, 1, 1)
    assert torch.allclose(restored, expected, atol=1e-5)


def test_cifar_directory_with_raw_arrays_and_the_env_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    train, train_labels = _cifar_like(12, seed=1)
    test, test_labels = _cifar_like(4, seed=2)
    pq.write_table(
        pa.table({"img": [im.flatten().tolist() for im in train], "label": train_labels}),
        tmp_path / "train-00000.parquet",
    )
    pq.write_table(
        pa.table({"img": [im.flatten().tolist() for im in test], "label": test_labels}), tmp_path / "test-00000.parquet"
    )
    monkeypatch.setenv("ESPER_CIFAR10_PATH", str(tmp_path))
    split = load_cifar10(max_train=10)
    assert split.x_train.shape == (10, 3, 32, 32) and split.x_val.shape == (4, 3, 32, 32)
    assert torch.equal(split.y_val, torch.from_numpy(test_labels))


def test_missing_cifar_raises_dataset_unavailable_with_instructions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ESPER_CIFAR10_PATH", raising=False)
    monkeypatch.setenv("ESPER_DATA_DIR", str(tmp_path / "cache"))
    with pytest.raises(DatasetUnavailable) as caught:
        load_cifar10()
    message = str(caught.value)
    assert "uoft-cs/cifar10" in message and str(tmp_path / "cache") in message
    assert "load_dataset" in message and "ESPER_DATA_DIR" in message and "--synthetic" in message
    assert caught.value.cache_dir == tmp_path / "cache"
    with pytest.raises(DatasetUnavailable, match="does not exist"):
        load_cifar10(path=tmp_path / "nope.parquet")


def test_missing_tinystories_raises_dataset_unavailable(tmp_path: Path) -> None:
    with pytest.raises(DatasetUnavailable, match="roneneldan/TinyStories"):
        load_tinystories(None, block_size=8, cache_dir=tmp_path)


def test_augmentation_crops_and_flips_deterministically() -> None:
    x = torch.randn(64, 3, 32, 32)
    a = augment_cifar(x, torch.Generator().manual_seed(5))
    b = augment_cifar(x, torch.Generator().manual_seed(5))
    assert a.shape == x.shape and torch.equal(a, b)
    # With no padding only the flip remains: each image is itself or its mirror.
    flipped = augment_cifar(x, torch.Generator().manual_seed(1), pad=0)
    same = (flipped == x).flatten(1).all(1)
    mirrored = (flipped == x.flip(3)).flatten(1).all(1)
    assert bool((same | mirrored).all()) and 0 < int(mirrored.sum()) < 64
    # Padded regions hold normalised black, i.e. raw pixel value 0.
    black = -torch.tensor(CIFAR10_MEAN) / torch.tensor(CIFAR10_STD)
    pad_only = augment_cifar(torch.full((200, 3, 32, 32), 9.0), torch.Generator().manual_seed(0))
    assert torch.isclose(pad_only, black.view(1, 3, 1, 1)).any()


def test_tinystories_byte_tokenizer_on_a_small_file(tmp_path: Path) -> None:
    path = tmp_path / "stories.txt"
    path.write_text("Hi.\n<|endoftext|>\nOk!\n<|endoftext|>\n", encoding="utf-8")
    inputs, targets, name, vocab = load_tinystories(path, block_size=4, tokenizer="byte")
    assert (name, vocab) == ("byte", BYTE_VOCAB) and BYTE_EOS == 256
    stream = [*b"Hi.", BYTE_EOS, *b"Ok!", BYTE_EOS]  # 8 tokens → windows start at 0 and 4
    assert inputs.tolist() == [stream[0:4], stream[4:8]]
    assert targets.tolist() == [stream[1:5], [*stream[5:8], BYTE_EOS]]
    # A one-token tail is dropped; max_stories limits the stories read.
    inputs, _, _, _ = load_tinystories(path, block_size=4, tokenizer="byte", max_stories=1)
    assert inputs.tolist() == [stream[0:4]]
    assert load_tinystories(path, block_size=4, tokenizer="auto")[2] in {"byte", "gpt2"}


def test_tinystories_on_the_shared_sample() -> None:
    if not TINYSTORIES_SAMPLE.is_file():
        pytest.skip(f"shared TinyStories sample not found at {TINYSTORIES_SAMPLE} (set ESPER_SHARED_DATA)")
    inputs, targets, name, vocab = load_tinystories(TINYSTORIES_SAMPLE, block_size=64, tokenizer="byte")
    assert name == "byte" and vocab == 257
    n_bytes = TINYSTORIES_SAMPLE.stat().st_size
    # Each story loses its separator line (<|endoftext|> and surrounding whitespace) but gains one EOS token.
    assert 0.9 * n_bytes / 64 < len(inputs) < n_bytes / 64
    assert torch.equal(inputs[:, 1:], targets[:, :-1]) and torch.equal(inputs[1:, 0], targets[:-1, -1])
    assert int((inputs == BYTE_EOS).sum()) >= 1200  # about one EOS per story (1,290 stories)
    assert bytes(inputs[0].tolist()).decode("utf-8", errors="ignore").strip() != ""
    limited, _, _, _ = load_tinystories(TINYSTORIES_SAMPLE, block_size=64, tokenizer="byte", max_stories=10)
    flat = limited.flatten()  # inputs tile the stream; the tail after the last byte is EOS and padding
    body = flat[: int((flat != BYTE_EOS).nonzero().max()) + 1]
    assert int((body == BYTE_EOS).sum()) == 9 and len(limited) < len(inputs) / 50


def test_epoch_batches_cover_the_data_and_respect_flags() -> None:
    x, y = torch.arange(10).float()[:, None], torch.arange(10)
    batches = list(epoch_batches(x, y, 4, torch.Generator().manual_seed(0)))
    assert [len(b[1]) for b in batches] == [4, 4, 2]
    assert sorted(torch.cat([b[1] for b in batches]).tolist()) == list(range(10))
    assert [len(b[1]) for b in epoch_batches(x, y, 4, shuffle=False, drop_last=True)] == [4, 4]
    assert [b[1].tolist() for b in epoch_batches(x, y, 3, shuffle=False, max_batches=2)] == [[0, 1, 2], [3, 4, 5]]
    assert all(torch.equal(bx[:, 0].long(), by) for bx, by in batches)


def test_batch_stream_is_deterministic_per_seed_and_varies_across_epochs() -> None:
    x, y = torch.randn(50, 2), torch.arange(50)

    def orders(seed: int) -> list[list[int]]:
        stream = BatchStream(x, y, batch_size=16, seed=seed, drop_last=True)
        assert len(stream) == 3
        return [torch.cat([b[1] for b in stream.epoch()]).tolist() for _ in range(2)]

    first = orders(11)
    assert first == orders(11)
    assert first[0] != first[1] and first != orders(12)
    assert len(BatchStream(x, y, batch_size=16, seed=0, max_batches=2)) == 2
