"""forward_configs: K alpha configurations walked as a tree give each configuration's own logits, sharing work.

The references are the one-config pass (`fused_forward` of a single configuration at the batch's size, which
must agree bit for bit) and the stacked pass of all K (`fused_forward` over K copies, which agrees to rounding:
its convolutions see another batch size).
"""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from leyline_schemas.enums import AlphaAlgorithm, AlphaMode, BlendId, BlueprintAction, SeedStage
from leyline_schemas.lifecycle import AlphaControllerState, SlotState
from services.kasmina.mechanics.model import MorphogeneticModel, build_alpha_overrides, expand_for_configs
from services.tolaria.hosts import CNNHost, TransformerHost

SLOTS = ["r0c0", "r1c0", "r0c1", "r0c2"]
#: (blueprint, blend, algorithm) a slot may hold.
SEEDS = [
    (BlueprintAction.CONV_LIGHT, BlendId.LINEAR, AlphaAlgorithm.ADD),
    (BlueprintAction.DEPTHWISE, BlendId.GATED, AlphaAlgorithm.GATE),
    (BlueprintAction.CONV_SMALL, BlendId.SIGMOID, AlphaAlgorithm.MULTIPLY),
]
STAGES = [SeedStage.TRAINING, SeedStage.BLENDING, SeedStage.HOLDING, SeedStage.FOSSILIZED]


def _grown(holdings: list[tuple[int, int, float, bool] | None], dtype: torch.dtype) -> MorphogeneticModel:
    torch.manual_seed(0)
    model = MorphogeneticModel(CNNHost(base_channels=4), SLOTS)
    for sid, holding in zip(SLOTS, holdings, strict=True):
        if holding is None:
            continue
        seed, stage, alpha, isolate = holding
        blueprint, blend, algorithm = SEEDS[seed]
        model.germinate(sid, blueprint, blend, algorithm, seed_id=f"s-{sid}")
        amplitude = 0.0 if STAGES[stage] is SeedStage.TRAINING else alpha
        model.slot(sid).sync(
            SlotState(
                slot_id=sid,
                stage=STAGES[stage],
                seed_id=f"s-{sid}",
                blueprint=blueprint,
                blend=blend,
                alpha_algorithm=algorithm,
                controller=AlphaControllerState(alpha=amplitude, alpha_target=amplitude, mode=AlphaMode.HOLD),
                isolate_gradients=isolate,
            )
        )
    return model.to(dtype).eval()


holding = st.one_of(
    st.none(),
    st.tuples(
        st.integers(0, len(SEEDS) - 1), st.integers(0, len(STAGES) - 1), st.sampled_from([0.3, 0.7, 1.0]), st.booleans()
    ),
)
config = st.dictionaries(st.sampled_from(SLOTS), st.sampled_from([0.0, 0.25, 0.6, 1.0, 1.5, -0.5]), max_size=4)


def _walk(model: MorphogeneticModel, x: torch.Tensor, configs: list[dict[str, float]]) -> dict[int, torch.Tensor]:
    answers: dict[int, torch.Tensor] = {}
    with torch.inference_mode():
        for members, logits in model.forward_configs(x, configs):
            for index in members:
                assert index not in answers, "a configuration was answered twice"
                answers[index] = logits
    assert sorted(answers) == list(range(len(configs)))
    return answers


@settings(max_examples=40, deadline=None)
@given(holdings=st.lists(holding, min_size=4, max_size=4), configs=st.lists(config, min_size=1, max_size=6))
def test_each_configuration_gets_its_own_pass_bit_for_bit(
    holdings: list[tuple[int, int, float, bool] | None], configs: list[dict[str, float]]
) -> None:
    model = _grown(holdings, torch.float32)
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(7))
    answers = _walk(model, x, configs)
    named = {sid for c in configs for sid in c}
    with torch.inference_mode():
        for index, alphas in enumerate(configs):
            # The one-config pass overrides every slot any configuration names, as the stacked pass does.
            full = {sid: alphas.get(sid, model.slot(sid).alpha) for sid in named}
            alone = model.fused_forward(x, build_alpha_overrides(model, [full], x.shape[0])) if full else model(x)
            assert torch.equal(answers[index], alone), f"config {index} {alphas}"


@settings(max_examples=25, deadline=None)
@given(holdings=st.lists(holding, min_size=4, max_size=4), configs=st.lists(config, min_size=1, max_size=6))
def test_the_stacked_pass_agrees_to_rounding(
    holdings: list[tuple[int, int, float, bool] | None], configs: list[dict[str, float]]
) -> None:
    model = _grown(holdings, torch.float64)
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    answers = _walk(model, x, configs)
    with torch.inference_mode():
        overrides = build_alpha_overrides(model, configs, x.shape[0])
        stacked = model.fused_forward(expand_for_configs(x, len(configs)), overrides)
    for index in range(len(configs)):
        torch.testing.assert_close(answers[index], stacked[index * 3 : (index + 1) * 3], rtol=1e-12, atol=1e-12)
        assert torch.equal(answers[index].argmax(-1), stacked[index * 3 : (index + 1) * 3].argmax(-1))


@settings(max_examples=40, deadline=None)
@given(configs=st.lists(config, min_size=1, max_size=8))
def test_seeds_run_once_per_distinct_input_and_never_when_off(configs: list[dict[str, float]]) -> None:
    model = _grown([(0, 1, 0.6, True)] * 4, torch.float32)
    calls: Counter[str] = Counter()
    for sid in SLOTS:
        seed = model.slot(sid).seed
        assert seed is not None
        seed.register_forward_hook(lambda *_, sid=sid: calls.update([sid]))
    x = torch.randn(2, 3, 16, 16)
    answers = _walk(model, x, configs)
    named = {sid for c in configs for sid in c}
    order = model.execution_order()
    level = [tuple(min(1.0, max(0.0, c.get(sid, 0.6))) if sid in named else None for sid in order) for c in configs]
    for depth, sid in enumerate(order):
        # A seed runs once for each distinct upstream path on which it is on (not for paths where it is off).
        expected = {path[:depth] for path in level if path[depth] is None or path[depth] > 0.0}
        assert calls[sid] == len(expected), (sid, level)
    assert len({id(t) for t in answers.values()}) == len(set(level))


def test_transformer_configs_match_their_passes() -> None:
    torch.manual_seed(0)
    host = TransformerHost(vocab_size=30, n_embd=8, n_head=2, n_layer=2, block_size=8, dropout=0.0, num_segments=2)
    model = MorphogeneticModel(host).eval()
    model.germinate("r0c1", BlueprintAction.LORA, BlendId.LINEAR, AlphaAlgorithm.ADD, seed_id="lora")
    model.slot("r0c1").sync(
        SlotState(
            slot_id="r0c1",
            stage=SeedStage.BLENDING,
            seed_id="lora",
            blueprint=BlueprintAction.LORA,
            blend=BlendId.LINEAR,
            controller=AlphaControllerState(alpha=0.5, alpha_target=1.0),
        )
    )
    idx = torch.randint(0, 30, (3, 5))
    answers = _walk(model, idx, [{}, {"r0c1": 0.0}, {"r0c1": 0.5}])
    with torch.inference_mode():
        stacked = model.fused_forward(expand_for_configs(idx, 2), build_alpha_overrides(model, [{}, {"r0c1": 0.0}], 3))
    assert torch.equal(answers[0], answers[2])
    torch.testing.assert_close(answers[1], stacked[3:])


def test_configs_name_only_enabled_slots() -> None:
    model = _grown([None] * 4, torch.float32)
    with pytest.raises(ValueError, match="not enabled"):
        list(model.forward_configs(torch.randn(1, 3, 16, 16), [{"r2c2": 0.0}]))
    with pytest.raises(ValueError, match="at least one"):
        list(model.forward_configs(torch.randn(1, 3, 16, 16), []))
