"""The task registry (reference/tolaria_karn.md §1.2, §11.1) and the env seed formula (§5.3, §11.3)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import pytest
import torch

from leyline_schemas.enums import Topology
from services.tolaria.tasks import REFERENCE_TASKS, env_seed, get_task, task_names, task_table

REFERENCE = {
    "cifar_baseline",
    "cifar_scale",
    "cifar_impaired",
    "cifar_minimal",
    "cifar_multichannel",
    "cifar_postpool",
    "cifar_highres",
    "cifar_deep_multichannel",
    "cifar_deep_impaired",
    "tinystories",
}
GRID_2x3 = [f"r{r}c{c}" for r in range(2) for c in range(3)]
GRID_2x5 = [f"r{r}c{c}" for r in range(2) for c in range(5)]


@pytest.fixture(scope="module")
def table() -> dict[str, dict[str, Any]]:
    return {row["name"]: row for row in task_table()}


def _cnn_params(channels: list[int], kernel: int, in_channels: int = 3, classes: int = 10) -> int:
    """Conv (no bias) + BatchNorm (weight, bias) per block, then a linear head (§1.4)."""
    ins = [in_channels, *channels[:-1]]
    convs = sum(i * o * kernel * kernel + 2 * o for i, o in zip(ins, channels, strict=True))
    return convs + channels[-1] * classes + classes


def test_registry_holds_exactly_the_reference_tasks_plus_digits_and_synthetic_twins() -> None:
    assert set(REFERENCE_TASKS) == REFERENCE
    assert set(task_names()) == REFERENCE | {
        "digits",
        "digits_tiny",
        "mnist1d",
        "synthetic_cnn",
        "synthetic_transformer",
        "tinystories_small",
        "tinystories_layerwise",
        "tinystories_sublayer",
        "tinystories_small_sublayer",
        "synthetic_transformer_sublayer",
    }


def test_lookup_is_case_insensitive_and_unknown_names_list_the_valid_ones() -> None:
    assert get_task("CIFAR_Baseline") is get_task("cifar_baseline")
    with pytest.raises(ValueError, match="unknown task 'cifar10'") as caught:
        get_task("cifar10")
    assert all(name in str(caught.value) for name in task_names())


def test_slot_ids_follow_the_table(table: dict[str, dict[str, Any]]) -> None:
    for name in ("cifar_baseline", "cifar_impaired", "cifar_multichannel", "cifar_postpool", "cifar_highres"):
        assert table[name]["slot_ids"] == GRID_2x3, name
    assert table["cifar_minimal"]["slot_ids"] == ["r0c0", "r0c1", "r0c2"]  # no pooling, so no row 1
    for name in ("cifar_scale", "cifar_deep_multichannel", "cifar_deep_impaired"):
        assert table[name]["slot_ids"] == GRID_2x5, name
    assert table["tinystories"]["slot_ids"] == ["r0c0", "r0c1", "r0c2"]
    # kasmina2 track A0: the same host with a slot after each of its 6 layers.
    assert table["tinystories_layerwise"]["slot_ids"] == [f"r0c{i}" for i in range(6)]
    assert table["tinystories_layerwise"]["host_params"] == table["tinystories"]["host_params"]
    # kasmina2 track A1: a POST_ATTN and a POST_MLP slot in each layer, r0c{2·layer + rank}, on the same host.
    for sublayer, plain, layers in (
        ("tinystories_sublayer", "tinystories", 6),
        ("tinystories_small_sublayer", "tinystories_small", 3),
        ("synthetic_transformer_sublayer", "synthetic_transformer", 3),
    ):
        assert table[sublayer]["slot_ids"] == [f"r0c{k}" for k in range(2 * layers)], sublayer
        assert table[sublayer]["host_params"] == table[plain]["host_params"], sublayer
    assert table["digits"]["slot_ids"] == ["r0c0", "r0c1", "r0c2", "r1c0", "r1c1"]
    for row in table.values():
        assert set(row["default_slots"]) <= set(row["slot_ids"]), row["name"]


def test_default_slots_express_the_surface_variants() -> None:
    assert get_task("cifar_baseline").default_slots == ("r0c0", "r0c1", "r0c2")
    assert get_task("cifar_postpool").default_slots == ("r1c0", "r1c1", "r1c2")
    assert get_task("cifar_highres").default_slots == ("r0c0", "r0c1", "r0c2")
    assert list(get_task("cifar_multichannel").default_slots) == GRID_2x3
    assert list(get_task("cifar_deep_multichannel").default_slots) == GRID_2x5


def test_host_parameter_counts(table: dict[str, dict[str, Any]]) -> None:
    params = {name: row["host_params"] for name, row in table.items()}
    # The doc's figures where it gives them (§1.2): ~6K, ~100K, 77 exactly, ~150.
    assert params["cifar_baseline"] == pytest.approx(6_000, rel=0.1)
    assert params["cifar_scale"] == pytest.approx(100_000, rel=0.1)
    assert params["cifar_impaired"] == 77
    assert params["cifar_minimal"] == pytest.approx(150, rel=0.1)
    # Architecture-derived counts: identical twins share an architecture (§1.3).
    assert params["cifar_baseline"] == _cnn_params([8, 16, 32], 3)
    assert params["cifar_multichannel"] == params["synthetic_cnn"] == params["cifar_baseline"]
    assert params["cifar_scale"] == params["cifar_deep_multichannel"] == _cnn_params([8, 16, 32, 64, 128], 3)
    assert params["cifar_postpool"] == params["cifar_highres"] == _cnn_params([16, 32, 64], 3)
    # The doc's "~500" for cifar_deep_impaired disagrees with its own architecture (2..32, 1×1, 5 blocks): 1,140.
    assert params["cifar_deep_impaired"] == _cnn_params([2, 4, 8, 16, 32], 1) == 1140
    assert params["digits"] == _cnn_params([16, 32, 64], 3, in_channels=1)
    # GPT with tied head: embeddings + 6 × (12·d² + 13·d) + final LayerNorm.
    d = 384
    assert params["tinystories"] == 50257 * d + 256 * d + 6 * (12 * d * d + 13 * d) + 2 * d


def test_task_constants() -> None:
    baseline, stories, digits = get_task("cifar_baseline"), get_task("tinystories"), get_task("digits")
    assert (baseline.host_lr, baseline.seed_lr, baseline.batch_size) == (0.01, 0.01, 128)
    assert baseline.plateau_threshold == 0.4
    assert baseline.topology is Topology.CNN and baseline.task_type == "classification"
    assert baseline.random_guess_loss == pytest.approx(math.log(10))
    assert (baseline.loss_target, baseline.loss_delta_std, baseline.compute_rent_weight) == (0.3, 0.05, 0.05)
    assert stories.topology is Topology.TRANSFORMER and stories.task_type == "lm"
    assert (stories.vocab_size, stories.block_size, stories.batch_size) == (50257, 256, 32)
    assert stories.random_guess_loss == pytest.approx(math.log(50257))
    assert (stories.loss_target, stories.loss_delta_std, stories.compute_rent_weight) == (3.5, 0.15, 0.01)
    assert get_task("cifar_postpool").plateau_threshold == 0.5
    assert digits.host_kwargs["in_channels"] == 1 and digits.num_classes == 10


def test_digits_task_trains_offline_end_to_end() -> None:
    spec = get_task("digits")
    loaded = spec.load_data(0, False, None)
    assert loaded.metadata["dataset"] == "sklearn_digits" and loaded.metadata["input_shape"] == [1, 8, 8]
    torch.manual_seed(0)
    host = spec.build_host()
    logits = host(loaded.split.x_train[:32])
    assert logits.shape == (32, 10)


def test_synthetic_twins_load_without_any_download() -> None:
    cnn = get_task("synthetic_cnn").load_data(1, False, None)
    assert cnn.split.x_train.shape == (6400, 3, 32, 32) and cnn.metadata["source"] == "synthetic"
    lm_spec = get_task("synthetic_transformer")
    lm = lm_spec.load_data(1, True, None)
    assert lm.split.x_train.shape == (1024, 32) and lm.metadata["vocab_size"] == 64
    host = lm_spec.build_host()
    assert host(lm.split.x_val[:2]).shape == (2, 32, 64)
    synthetic_cifar = get_task("cifar_impaired").load_data(3, True, None)
    assert synthetic_cifar.augment is None and synthetic_cifar.split.y_val.shape == (1280,)


def test_tinystories_task_reads_a_local_text_file(monkeypatch: pytest.MonkeyPatch) -> None:
    shared = Path(os.environ.get("ESPER_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
    sample = shared / "tinystories-valid-sample.txt"
    if not sample.is_file():
        pytest.skip(f"shared TinyStories sample not found at {sample} (set ESPER_SHARED_DATA)")
    monkeypatch.setenv("ESPER_TINYSTORIES_PATH", str(sample))
    loaded = get_task("tinystories").load_data(0, False, None)
    meta = loaded.metadata
    assert meta["source"] == f"local:{sample}" and meta["tokenizer"] in {"byte", "gpt2"}
    assert loaded.split.x_train.shape[1] == 256 and meta["n_val"] == round(0.1 * (meta["n_train"] + meta["n_val"]))
    assert int(loaded.split.x_train.max()) < meta["vocab_size"]


def test_build_host_accepts_overrides() -> None:
    host = get_task("synthetic_transformer").build_host(vocab_size=257)
    assert host(torch.zeros(1, 8, dtype=torch.int64)).shape == (1, 8, 257)


def test_env_seed_formula() -> None:
    assert env_seed(42, 0, 4, 0) == 42
    assert env_seed(42, 0, 4, 3) == 42 + 3 * 1009
    assert env_seed(42, 2, 4, 1) == 42 + 9 * 1009
    seeds = {env_seed(7, r, 3, e) for r in range(5) for e in range(3)}
    assert len(seeds) == 15
    with pytest.raises(ValueError):
        env_seed(42, 0, 4, 4)


def test_the_growth_tasks_have_measured_headroom_wider_than_20_points(table: dict[str, dict[str, Any]]) -> None:
    for name in ("mnist1d", "digits_tiny"):
        headroom = table[name]["measured_headroom"]
        assert headroom["static_final_filled_mean"] - headroom["static_initial_mean"] >= 20.0, name
        assert headroom["host_params"] == table[name]["host_params"]
    assert table["digits"]["measured_headroom"] is None


def test_headroom_is_measured_on_the_task_itself() -> None:
    from services.tolaria.headroom import measure_headroom

    measured = measure_headroom("digits_tiny", seeds=(1,), epochs=2, max_batches=2)
    assert measured.host_params == 390 and measured.filled_params > measured.host_params
    assert len(measured.static_initial) == len(measured.filled) == 1
    assert set(measured.as_dict()) >= {"static_initial_mean", "filled_mean", "gap_pp"}
