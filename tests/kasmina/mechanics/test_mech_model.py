"""MorphogeneticModel: routing, fused counterfactual forward, parameter partitions and checkpoints."""

from __future__ import annotations

import io

import pytest
import torch

from leyline_schemas.enums import AlphaAlgorithm, AlphaMode, BlendId, BlueprintAction, SeedStage
from leyline_schemas.lifecycle import AlphaControllerState, SlotState
from services.kasmina.mechanics.model import MorphogeneticModel, build_alpha_overrides, expand_for_configs
from services.kasmina.mechanics.slot import SeedSlot
from services.tolaria.hosts import CNNHost, TransformerHost

B = BlueprintAction


def _state(slot: SeedSlot, stage: SeedStage, alpha: float) -> SlotState:
    assert slot.blueprint is not None
    return SlotState(
        slot_id=slot.slot_id,
        stage=stage,
        seed_id=slot.seed_id,
        blueprint=slot.blueprint,
        blend=slot.blend_id,
        alpha_algorithm=slot.alpha_algorithm,
        controller=AlphaControllerState(alpha=alpha, alpha_target=alpha, mode=AlphaMode.HOLD),
        isolate_gradients=True,
    )


def _cnn_model(slots: list[str] | None = None) -> MorphogeneticModel:
    torch.manual_seed(0)
    return MorphogeneticModel(CNNHost(base_channels=4), slots).eval()


def _grown_cnn() -> MorphogeneticModel:
    model = _cnn_model(["r0c0", "r1c0", "r0c1"])
    model.germinate("r0c0", B.CONV_LIGHT, BlendId.LINEAR, AlphaAlgorithm.ADD)
    model.germinate("r1c0", B.DEPTHWISE, BlendId.GATED, AlphaAlgorithm.GATE)
    model.germinate("r0c1", B.CONV_HEAVY, BlendId.LINEAR, AlphaAlgorithm.MULTIPLY)
    changed = model.apply_states(
        [
            _state(model.slot("r0c0"), SeedStage.BLENDING, 0.6),
            _state(model.slot("r1c0"), SeedStage.HOLDING, 1.0),
            _state(model.slot("r0c1"), SeedStage.BLENDING, 0.3),
        ]
    )
    assert changed == []
    return model


def test_empty_model_matches_host() -> None:
    model = _cnn_model()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(x), model.host(x))
    assert model.execution_order() == ["r0c0", "r1c0", "r0c1", "r1c1", "r0c2", "r1c2"]
    assert [s.slot_id for s in model.slot_specs()] == ["r0c0", "r0c1", "r0c2", "r1c0", "r1c1", "r1c2"]


def test_model_rejects_unknown_and_duplicate_slots() -> None:
    with pytest.raises(ValueError):
        MorphogeneticModel(CNNHost(base_channels=4), ["r0c0", "r0c0"])
    with pytest.raises(ValueError):
        MorphogeneticModel(CNNHost(base_channels=4), ["r5c0"])


def test_fused_forward_equals_separate_forwards() -> None:
    model = _grown_cnn()
    batch = 2
    x = torch.randn(batch, 3, 16, 16)
    configs: list[dict[str, float]] = [{}, {"r0c0": 0.0}, {"r1c0": 0.0}, {"r0c0": 0.0, "r0c1": 0.0}]
    overrides = build_alpha_overrides(model, configs, batch)
    assert set(overrides) == {"r0c0", "r1c0", "r0c1"}
    with torch.no_grad():
        fused = model.fused_forward(expand_for_configs(x, len(configs)), overrides)
        for k, config in enumerate(configs):
            saved = {sid: model.slot(sid).alpha for sid in config}
            for sid, alpha in config.items():
                model.slot(sid).alpha = alpha
            separate = model(x)
            for sid, alpha in saved.items():
                model.slot(sid).alpha = alpha
            assert torch.allclose(fused[k * batch : (k + 1) * batch], separate, atol=1e-5)


def test_fused_forward_validates_overrides() -> None:
    model = _grown_cnn()
    x = expand_for_configs(torch.randn(2, 3, 16, 16), 2)
    with pytest.raises(ValueError, match="not enabled"):
        model.fused_forward(x, {"r2c2": torch.zeros(4, 1, 1, 1)})
    with pytest.raises(ValueError, match="shape"):
        model.fused_forward(x, {"r0c0": torch.zeros(4, 1, 1)})
    with pytest.raises(ValueError, match="shape"):
        model.fused_forward(x, {"r0c0": torch.zeros(2, 1, 1, 1)})
    with pytest.raises(ValueError, match="not enabled"):
        build_alpha_overrides(model, [{"r2c2": 0.0}], 2)


def test_transformer_overrides_have_sequence_shape() -> None:
    host = TransformerHost(vocab_size=30, n_embd=8, n_head=2, n_layer=2, block_size=8, dropout=0.0, num_segments=2)
    model = MorphogeneticModel(host).eval()
    model.germinate("r0c1", B.LORA, BlendId.LINEAR, AlphaAlgorithm.ADD)
    model.apply_states([_state(model.slot("r0c1"), SeedStage.BLENDING, 0.5)])
    overrides = build_alpha_overrides(model, [{}, {"r0c1": 0.0}], 3)
    assert overrides["r0c1"].shape == (6, 1, 1)
    assert overrides["r0c1"].view(-1).tolist() == [0.5] * 3 + [0.0] * 3
    idx = torch.randint(0, 30, (3, 5))
    with torch.no_grad():
        fused = model.fused_forward(expand_for_configs(idx, 2), overrides)
    assert fused.shape == (6, 5, 30)


def test_parameter_partitions() -> None:
    model = _grown_cnn()
    host_ids = {id(p) for p in model.host_parameters()}
    seed_params = model.seed_parameters()
    assert host_ids.isdisjoint(id(p) for p in seed_params)
    assert host_ids == {id(p) for p in model.host.parameters()}
    assert len(seed_params) == sum(len(model.seed_parameters(s)) for s in ("r0c0", "r1c0", "r0c1"))
    assert model.active_seed_params == sum(p.numel() for p in seed_params)
    assert model.total_params == model.host_param_count + model.active_seed_params


def test_tied_weights_count_once() -> None:
    host = TransformerHost(vocab_size=30, n_embd=8, n_head=2, n_layer=2, block_size=8, num_segments=2)
    model = MorphogeneticModel(host)
    naive = sum(p.numel() for _, p in host.named_parameters(remove_duplicate=False))
    assert model.host_param_count == naive - 30 * 8


def test_model_checkpoint_restores_into_fresh_model() -> None:
    model = _grown_cnn()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    fresh = _cnn_model(["r0c0", "r1c0", "r0c1"])
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))
    assert [s.slot_checkpoint() for s in fresh.seed_slots()] == [s.slot_checkpoint() for s in model.seed_slots()]
