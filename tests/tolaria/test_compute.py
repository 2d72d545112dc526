"""Compute accounting (proof-baselines §4, invariant B9)."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from leyline_schemas.enums import AlphaAlgorithm, AlphaMode, BlendId, BlueprintAction, SeedStage
from leyline_schemas.lifecycle import AlphaControllerState, SlotState
from services.kasmina.mechanics.model import MorphogeneticModel
from services.tolaria.compute import (
    ComputeLedger,
    FlopCache,
    config_tree_shape,
    cumulative,
    epoch_compute_figures,
    forward_flops_per_sample,
    parameter_epochs,
    validation_flops_per_sample,
)
from services.tolaria.hosts import CNNHost
from services.tolaria.validation import counterfactual_configs


def test_linear_model_costs_two_flops_per_weight() -> None:
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    assert forward_flops_per_sample(model, torch.zeros(1, 8)) == 2 * (8 * 16 + 16 * 4)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 24), min_size=2, max_size=5))
def test_linear_stack_of_any_widths_matches_the_analytic_count(widths: list[int]) -> None:
    layers = [nn.Linear(a, b) for a, b in itertools.pairwise(widths)]
    expected = sum(2 * a * b for a, b in itertools.pairwise(widths))
    assert forward_flops_per_sample(nn.Sequential(*layers), torch.zeros(1, widths[0])) == expected


def test_conv2d_model_matches_the_analytic_count() -> None:
    # 3→5 channels, 3×3 kernel, padding 1 keeps 8×8: each output point costs 2·in·k·k per output channel.
    model = nn.Sequential(nn.Conv2d(3, 5, kernel_size=3, padding=1), nn.Flatten(), nn.Linear(5 * 8 * 8, 10))
    conv = 2 * 5 * 3 * 3 * 3 * 8 * 8
    head = 2 * 320 * 10
    assert forward_flops_per_sample(model, torch.zeros(1, 3, 8, 8)) == conv + head


def test_conv1d_and_grouped_conv_match_the_analytic_count() -> None:
    plain = nn.Conv1d(2, 4, kernel_size=3)  # length 10 → 8
    assert forward_flops_per_sample(plain, torch.zeros(1, 2, 10)) == 2 * 4 * 2 * 3 * 8
    grouped = nn.Conv1d(4, 6, kernel_size=3, groups=2)  # each output channel sees 2 input channels
    assert forward_flops_per_sample(grouped, torch.zeros(1, 4, 10)) == 2 * 6 * 2 * 3 * 8


def test_measurement_needs_a_batch_of_one() -> None:
    with pytest.raises(ValueError, match="batch of one"):
        forward_flops_per_sample(nn.Linear(3, 3), torch.zeros(2, 3))


class _Witness(nn.Module):
    """Records the mode and grad state it ran under, and draws from the RNG (as a training-mode dropout would)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)
        self.seen: list[tuple[bool, bool]] = []

    def forward(self, x: Tensor) -> Tensor:
        self.seen.append((self.training, torch.is_grad_enabled()))
        torch.rand(3)
        return self.linear(x)


def test_measurement_runs_in_eval_without_grad_and_restores_mixed_mode_flags() -> None:
    witness = _Witness()
    model = nn.Sequential(witness, nn.Dropout(0.5))
    model.train()
    model[1].eval()  # mixed flags must come back exactly, not as one model.train()
    forward_flops_per_sample(model, torch.zeros(1, 4))
    assert witness.seen == [(False, False)]
    assert model.training and witness.training and witness.linear.training and not model[1].training


def test_measurement_leaves_the_rng_state_untouched() -> None:
    witness = _Witness()  # building it draws initial weights, so take the state after
    torch.manual_seed(11)
    before = torch.get_rng_state()
    forward_flops_per_sample(witness, torch.zeros(1, 4))
    assert witness.seen, "the witness must have drawn from the RNG inside the measurement"
    assert torch.equal(torch.get_rng_state(), before)


def test_cache_measures_once_per_topology_signature() -> None:
    cache = FlopCache()
    small, large = nn.Linear(4, 4), nn.Linear(4, 8)
    sample = torch.zeros(1, 4)
    signature = ("digits", (("r0c0", "conv_light"),))
    assert cache.forward_flops(signature, small, sample) == 32
    # The signature is the authority: the same key returns the stored figure without measuring again.
    assert cache.forward_flops(signature, large, sample) == 32
    assert cache.forward_flops(("digits", ()), large, sample) == 64
    assert cache.measurements == 2 and len(cache) == 2 and signature in cache


@settings(max_examples=60, deadline=None)
@given(
    fwd=st.integers(0, 10**9),
    extra=st.integers(0, 10**10),
    train=st.integers(0, 10**6),
    val=st.integers(0, 10**5),
)
def test_epoch_figures_follow_the_section_4_formulas(fwd: int, extra: int, train: int, val: int) -> None:
    figures = epoch_compute_figures(
        params_in_forward=1000,
        train_samples=train,
        val_samples=val,
        fwd_flops_per_sample=fwd,
        val_flops_per_sample=fwd + extra,
    )
    assert figures.train_flops == 3 * fwd * train
    assert figures.val_flops_main == fwd * val
    assert figures.val_flops_counterfactual == extra * val
    assert figures.all_in_flops == figures.train_flops + (fwd + extra) * val
    assert figures.as_dict()["train_flops"] == figures.train_flops
    main_only = epoch_compute_figures(
        params_in_forward=1, train_samples=train, val_samples=val, fwd_flops_per_sample=fwd
    )
    assert main_only.val_flops_counterfactual == 0


def test_epoch_figures_reject_impossible_counts() -> None:
    with pytest.raises(ValueError, match="train_samples"):
        epoch_compute_figures(params_in_forward=1, train_samples=-1, val_samples=0, fwd_flops_per_sample=1)
    with pytest.raises(ValueError, match="at least the main forward"):
        epoch_compute_figures(
            params_in_forward=1, train_samples=1, val_samples=1, fwd_flops_per_sample=5, val_flops_per_sample=4
        )


SEEDED = ["r0c0", "r0c1", "r0c2"]


def _blending(seeded: list[str], alpha: float = 0.5) -> MorphogeneticModel:
    torch.manual_seed(0)
    model = MorphogeneticModel(CNNHost(base_channels=4), SEEDED)
    for sid in seeded:
        model.germinate(sid, BlueprintAction.CONV_LIGHT, BlendId.LINEAR, AlphaAlgorithm.ADD, seed_id=f"s-{sid}")
        model.slot(sid).sync(_blending_state(sid, alpha))
    return model


def _blending_state(sid: str, alpha: float) -> SlotState:
    return SlotState(
        slot_id=sid,
        stage=SeedStage.BLENDING,
        seed_id=f"s-{sid}",
        blueprint=BlueprintAction.CONV_LIGHT,
        blend=BlendId.LINEAR,
        alpha_algorithm=AlphaAlgorithm.ADD,
        controller=AlphaControllerState(alpha=alpha, alpha_target=1.0, mode=AlphaMode.UP),
    )


SAMPLE = torch.zeros(1, 3, 32, 32)


def test_validation_of_the_main_config_alone_costs_one_forward() -> None:
    model = _blending(SEEDED)
    assert validation_flops_per_sample(model, SAMPLE, [{}]) == forward_flops_per_sample(model, SAMPLE)


@settings(max_examples=20, deadline=None)
@given(seeded=st.lists(st.sampled_from(SEEDED), min_size=1, max_size=3, unique=True))
def test_counterfactual_configs_share_work_and_duplicates_cost_nothing(seeded: list[str]) -> None:
    model = _blending(seeded)
    configs = [alphas for _, alphas in counterfactual_configs(seeded)]
    together = validation_flops_per_sample(model, SAMPLE, configs)
    alone = [validation_flops_per_sample(model, SAMPLE, [c]) for c in configs]
    assert validation_flops_per_sample(model, SAMPLE, configs + configs) == together
    # The host before the first seeded slot runs once for all configs, so sharing is strictly cheaper.
    assert max(alone) <= together < sum(alone)
    # A config with a seed switched off skips that seed: cheaper than the main forward.
    assert all(cost < alone[0] for cost in alone[1:])


def test_ledger_measures_validation_once_per_shape_of_the_config_walk() -> None:
    model = _blending(SEEDED[:2])
    ledger = ComputeLedger(model, SAMPLE)
    ledger.trained(100, "order")
    configs = [alphas for _, alphas in counterfactual_configs(SEEDED[:2])]
    first = ledger.epoch(configs, 10, 1.0, 0.5)
    expected = validation_flops_per_sample(model, SAMPLE, configs) - first.fwd_flops_per_sample
    assert first.val_flops_counterfactual == expected * 10
    assert first.validation_configs == len(configs) == 6
    measured = ledger.flops.measurements
    for sid in SEEDED[:2]:  # alphas move while blending; the walk keeps its shape and its cost
        model.slot(sid).sync(_blending_state(sid, 0.9))
    again = ledger.epoch(configs, 10, 1.0, 0.5)
    assert ledger.flops.measurements == measured
    assert again.val_flops_counterfactual == first.val_flops_counterfactual
    main_only = ledger.epoch([{}], 10, 1.0, 0.5)
    assert main_only.val_flops_counterfactual == 0 and main_only.validation_configs == 1


def test_tree_shape_keeps_agreements_and_offs_but_not_alpha_values() -> None:
    assert config_tree_shape([(0.3, None), (0.0, None), (0.3, None)]) == config_tree_shape(
        [(0.8, None), (0.0, None), (0.8, None)]
    )
    assert config_tree_shape([(0.3,), (0.7,)]) != config_tree_shape([(0.3,), (0.3,)])
    assert config_tree_shape([(0.3,), (0.0,)]) != config_tree_shape([(0.3,), (0.3,)])


@given(params=st.integers(0, 10**7), epochs=st.integers(0, 50))
def test_constant_parameters_give_p_times_e(params: int, epochs: int) -> None:
    assert parameter_epochs([params] * epochs) == params * epochs


@given(
    host=st.integers(1, 10**6),
    seed=st.integers(1, 10**5),
    epochs=st.integers(2, 30),
    data=st.data(),
)
def test_growth_mid_episode_lies_strictly_between_static_initial_and_static_final(
    host: int, seed: int, epochs: int, data: st.DataObject
) -> None:
    grown_at = data.draw(st.integers(1, epochs - 1))
    grown = [host] * grown_at + [host + seed] * (epochs - grown_at)
    assert parameter_epochs([host] * epochs) == host * epochs
    assert parameter_epochs([host + seed] * epochs) == (host + seed) * epochs
    assert host * epochs < parameter_epochs(grown) < (host + seed) * epochs


@given(st.lists(st.integers(0, 10**12), max_size=40))
def test_cumulative_flops_are_running_sums(per_epoch: list[int]) -> None:
    running = cumulative(per_epoch)
    assert len(running) == len(per_epoch)
    assert all(running[t] == sum(per_epoch[: t + 1]) for t in range(len(per_epoch)))


def test_a_flex_attention_seed_is_counted_like_the_sdpa_seed_it_equals() -> None:
    """FlopCounterMode cannot dispatch the flex_attention op; counting runs the same maths through SDPA."""
    from services.kasmina.mechanics.blueprints import FlexAttentionSeed
    from services.tolaria.hosts import TransformerHost

    flops = {}
    for blueprint in (BlueprintAction.ATTENTION, BlueprintAction.FLEX_ATTENTION):
        torch.manual_seed(0)
        host = TransformerHost(vocab_size=30, n_embd=16, n_head=2, n_layer=2, block_size=8, num_segments=2)
        model = MorphogeneticModel(host)
        model.germinate("r0c0", blueprint, BlendId.LINEAR, AlphaAlgorithm.ADD)
        state = SlotState(
            slot_id="r0c0",
            stage=SeedStage.BLENDING,
            seed_id=model.slot("r0c0").seed_id,
            blueprint=blueprint,
            blend=BlendId.LINEAR,
            alpha_algorithm=AlphaAlgorithm.ADD,
            controller=AlphaControllerState(alpha=0.5, alpha_target=1.0, mode=AlphaMode.UP),
            isolate_gradients=False,
        )
        model.apply_states([state])
        flops[blueprint] = forward_flops_per_sample(model, torch.zeros(1, 8, dtype=torch.long))
    assert flops[BlueprintAction.FLEX_ATTENTION] == flops[BlueprintAction.ATTENTION] > 0
    assert FlexAttentionSeed.sdpa_only is False  # the switch is back off once counting ends
