"""Fused validation equals separate forwards with the alphas forced, and derives contributions and interactions."""

from __future__ import annotations

import torch

from leyline_schemas import AlphaAlgorithm, AlphaControllerState, BlendId, BlueprintAction, SeedStage, SlotState
from services.kasmina.mechanics.model import MorphogeneticModel
from services.tolaria.hosts import CNNHost
from services.tolaria.validation import counterfactual_configs, fused_validate


def _model_with_blending_seeds(slots: list[str], alpha: float = 0.6) -> MorphogeneticModel:
    torch.manual_seed(0)
    model = MorphogeneticModel(CNNHost(in_channels=1, base_channels=4, n_blocks=3, pool_layers=2), slots)
    for sid in slots:
        model.germinate(sid, BlueprintAction.CONV_LIGHT, BlendId.SIGMOID, AlphaAlgorithm.ADD, seed_id=f"s-{sid}")
        model.slot(sid).sync(
            SlotState(
                slot_id=sid,
                stage=SeedStage.BLENDING,
                seed_id=f"s-{sid}",
                blueprint=BlueprintAction.CONV_LIGHT,
                controller=AlphaControllerState(alpha=alpha, alpha_target=1.0),
                isolate_gradients=True,
            )
        )
    model.eval()
    return model


def _separate_accuracy(model: MorphogeneticModel, x: torch.Tensor, y: torch.Tensor, alphas: dict[str, float]) -> float:
    saved = {sid: model.slot(sid).alpha for sid in alphas}
    for sid, a in alphas.items():
        model.slot(sid).alpha = a
        model.slot(sid)._alpha_cache = None
    with torch.no_grad():
        accuracy = float((model(x).argmax(-1) == y).float().mean()) * 100
    for sid, a in saved.items():
        model.slot(sid).alpha = a
        model.slot(sid)._alpha_cache = None
    return accuracy


def test_configs_follow_the_reference_counts() -> None:
    assert [n for n, _ in counterfactual_configs([])] == ["main"]
    assert len(counterfactual_configs(["a"])) == 2
    names = [n for n, _ in counterfactual_configs(["a", "b", "c"])]
    assert names.count("all_off") == 1 and sum(n.startswith("pair:") for n in names) == 3
    assert not any(n.startswith("pair:") for n, _ in counterfactual_configs(["a", "b", "c", "d", "e"]))


def test_fused_validation_matches_separate_forwards() -> None:
    slots = ["r0c0", "r0c1", "r0c2"]
    model = _model_with_blending_seeds(slots)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(48, 1, 8, 8, generator=g)
    y = torch.randint(0, 10, (48,), generator=g)
    result = fused_validate(model, [(x[:32], y[:32]), (x[32:], y[32:])], torch.device("cpu"))
    main = _separate_accuracy(model, x, y, {})
    assert abs(result.val_accuracy - main) < 1e-6
    for sid in slots:
        off = _separate_accuracy(model, x, y, {sid: 0.0})
        assert abs(result.contributions[sid] - (main - off)) < 1e-6
        solo = _separate_accuracy(model, x, y, {o: 0.0 for o in slots if o != sid})
        assert abs(result.solo_on[sid] - solo) < 1e-6
    empty = _separate_accuracy(model, x, y, dict.fromkeys(slots, 0.0))
    assert result.all_off_accuracy is not None and abs(result.all_off_accuracy - empty) < 1e-6
    pair = _separate_accuracy(model, x, y, {"r0c2": 0.0})
    expected = pair - result.solo_on["r0c0"] - result.solo_on["r0c1"] + empty
    assert abs(result.interactions[("r0c0", "r0c1")] - expected) < 1e-6


def test_no_active_seed_means_one_config_and_no_counterfactuals() -> None:
    model = MorphogeneticModel(CNNHost(in_channels=1, base_channels=4, n_blocks=2, pool_layers=1), ["r0c0"])
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    result = fused_validate(model, [(x, y)], torch.device("cpu"))
    assert result.contributions == {} and result.all_off_accuracy is None and set(result.configs) == {"main"}
