"""Obs V3: widths, sentinels, per-slot blocks and the raising cases (reference/tamiyo_simic.md §1, §12.1)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from msgspec.structs import replace

from leyline_schemas.enums import AlphaMode, BlueprintAction, LifecycleOp, SeedStage
from leyline_schemas.lifecycle import AlphaControllerState, LifecycleConfig, SlotState
from leyline_schemas.observation import BASE_SCALAR_FIELDS, SLOT_FIELDS
from services.observation.features import (
    BASE_FEATURES,
    SENTINEL,
    SLOT_FEATURES,
    build_observation,
    observation_size,
    stage_index,
    symlog,
)
from tests.kasmina.factories import SLOT_IDS, empty_slots, report, request, seed, slot_states


def _slot_block(observation: list[float], index: int) -> list[float]:
    start = BASE_FEATURES + SLOT_FEATURES * index
    return observation[start : start + SLOT_FEATURES]


@pytest.mark.parametrize("num_slots", [1, 2, 3, 5])
def test_width_is_25_plus_32_per_slot(num_slots: int) -> None:
    slots = empty_slots(num_slots)
    observation, indices = build_observation(request(slots), slots)
    assert len(observation) == observation_size(num_slots) == 25 + 32 * num_slots
    assert indices == [-1] * num_slots
    assert observation_size(3) == 121


def test_empty_slot_block_is_all_zeros() -> None:
    slots = [seed(SeedStage.TRAINING), SlotState(slot_id="r0c1")]
    observation, indices = build_observation(request(slots), slots)
    assert _slot_block(observation, 1) == [0.0] * SLOT_FEATURES
    assert indices == [int(BlueprintAction.CONV_LIGHT), -1]


def test_unobserved_history_is_left_padded_with_the_sentinel() -> None:
    epoch_report = report(loss_history=[2.0, 1.5], accuracy_history=[40.0, 45.0])
    slots = empty_slots(1)
    observation, _ = build_observation(request(slots, epoch_report=epoch_report), slots)
    assert observation[3:8] == [SENTINEL, SENTINEL, SENTINEL, symlog(2.0) / 7, symlog(1.5) / 7]
    assert observation[8:13] == [SENTINEL, SENTINEL, SENTINEL, 0.40, 0.45]


def test_history_keeps_the_last_five_oldest_first() -> None:
    epoch_report = report(accuracy_history=[10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0])
    slots = empty_slots(1)
    observation, _ = build_observation(request(slots, epoch_report=epoch_report), slots)
    assert observation[8:13] == pytest.approx([0.3, 0.4, 0.5, 0.6, 0.7])


def test_base_features() -> None:
    slots = [seed(SeedStage.TRAINING, "r0c0"), seed(SeedStage.BLENDING, "r0c1"), seed(SeedStage.FOSSILIZED, "r0c2")]
    req = request(slots, epoch=10, last_op=LifecycleOp.PRUNE, last_action_succeeded=False)
    observation, _ = build_observation(req, slots)
    assert observation[0] == pytest.approx(10 / 40)
    assert observation[1] == pytest.approx(symlog(1.2) / 7) and observation[2] == pytest.approx(0.61)
    assert observation[13:16] == pytest.approx([1 / 3, 1 / 3, 1 / 3])
    assert observation[16] == 0.0
    assert observation[17:25] == [0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0]


def test_max_epochs_comes_from_the_lifecycle_then_the_report() -> None:
    slots = empty_slots(1)
    late = request(slots, epoch=30, lifecycle=LifecycleConfig(max_epochs=60))
    assert build_observation(late, slots)[0][0] == pytest.approx(0.5)
    fallback = request(slots, epoch=30, lifecycle=LifecycleConfig(max_epochs=0))
    assert build_observation(fallback, slots)[0][0] == pytest.approx(30 / 40)
    clamped = request(slots, epoch=99)
    assert build_observation(clamped, slots)[0][0] == 1.0


def test_slot_block_features() -> None:
    ramp = AlphaControllerState(
        alpha=0.4, alpha_start=0.0, alpha_target=1.0, mode=AlphaMode.UP, steps_total=5, steps_done=2
    )
    state = replace(seed(SeedStage.BLENDING, contribution=25.0, gradient_health=0.8), controller=ramp)
    metrics = replace(
        state.metrics,
        contribution_velocity=-3.0,
        epochs_since_counterfactual=4,
        previous_gradient_health=0.6,
        gradient_norm=3.0,
        has_exploding=True,
        interaction_sum=4.0,
        epochs_in_current_stage=6,
        epochs_total=20,
    )
    state = replace(state, metrics=metrics, blend_tempo_epochs=8)
    block = _slot_block(build_observation(request([state]), [state])[0], 0)
    assert block[0] == 1.0
    assert block[1:11] == [0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    assert block[11:17] == pytest.approx([0.4, 1.0, -0.3, 8 / 12, 1.0, 0.5])
    assert block[17:23] == pytest.approx([5 / 40, 2 / 40, 3 / 40, 0.2, 0.0, 0.4])
    assert block[23:27] == pytest.approx([symlog(3.0) / 7, 0.8, 0.0, 1.0])
    assert block[27:31] == pytest.approx([0.6, 6 / 40, 0.995**4, 20 / 40])
    assert block[31] == 0.0  # internal_level_norm of a seed without internal structure


def test_never_measured_slot_features_read_the_sentinel() -> None:
    state = seed(SeedStage.TRAINING)
    block = _slot_block(build_observation(request([state]), [state])[0], 0)
    assert block[24] == 0.0  # absent gradient health is not health
    assert block[27] == SENTINEL and block[29] == SENTINEL


def test_reserved_and_unknown_stage_codes_raise() -> None:
    assert [stage_index(s) for s in SeedStage] == list(range(10))
    with pytest.raises(ValueError, match="reserved"):
        stage_index(5)
    with pytest.raises(ValueError):
        stage_index(11)


@pytest.mark.parametrize("field", ["gradient_health", "previous_gradient_health"])
def test_nan_gradient_health_raises_naming_the_slot(field: str) -> None:
    state = seed(SeedStage.TRAINING, "r0c2")
    state = replace(state, metrics=replace(state.metrics, **{field: math.nan}))
    slots = [*empty_slots(2), state]
    with pytest.raises(ValueError, match=f"slot r0c2 has NaN {field}"):
        build_observation(request(slots), slots)


def test_non_finite_host_metrics_still_give_a_finite_observation() -> None:
    slots = empty_slots(1)
    epoch_report = report(val_loss=math.inf, val_accuracy=math.nan, loss_history=[math.nan])
    observation, _ = build_observation(request(slots, epoch_report=epoch_report), slots)
    assert all(math.isfinite(x) for x in observation)


@settings(max_examples=100)
@given(states=st.lists(slot_states(), min_size=1, max_size=4), epoch=st.integers(0, 200))
def test_observation_is_finite_with_the_right_width(states: list[SlotState], epoch: int) -> None:
    slots = [replace(s, slot_id=SLOT_IDS[i]) for i, s in enumerate(states)]
    observation, indices = build_observation(request(slots, epoch=epoch), slots)
    assert len(observation) == observation_size(len(slots))
    assert all(math.isfinite(x) for x in observation)
    assert all(-1 <= i <= 13 for i in indices)
    assert all((i == -1) == (not s.occupied) for i, s in zip(indices, slots, strict=True))


def test_field_lists_derive_the_widths() -> None:
    """Invariant 18 of plans/kasmina2-phase0.md: 25 = 17 + len(LifecycleOp), 32 = len(SLOT_FIELDS)."""
    assert len(BASE_SCALAR_FIELDS) == 17 and BASE_FEATURES == 17 + len(LifecycleOp) == 25
    assert len(SLOT_FIELDS) == SLOT_FEATURES == 32 and SLOT_FIELDS[-1] == "internal_level_norm"
    assert [observation_size(n) for n in (1, 3, 5, 10)] == [57, 121, 185, 345]
    for stage in (s for s in SeedStage if s not in (SeedStage.UNKNOWN, SeedStage.DORMANT)):
        assert len(_slot_block(build_observation(request([seed(stage)]), [seed(stage)])[0], 0)) == 32


@pytest.mark.parametrize(("level", "norm"), [(0, 0.0), (1, 0.25), (2, 0.5), (4, 1.0)])
def test_internal_level_norm_is_the_level_over_its_max(level: int, norm: float) -> None:
    ladder = seed(SeedStage.HOLDING, blueprint=BlueprintAction.CONV_LADDER, level=level)
    plain = seed(SeedStage.HOLDING)
    block = _slot_block(build_observation(request([ladder]), [ladder])[0], 0)
    assert block[SLOT_FIELDS.index("internal_level_norm")] == norm
    # The 31 features before it are those of the same seed without a ladder (positions unchanged).
    plain_block = _slot_block(build_observation(request([plain]), [plain])[0], 0)
    assert block[:31] == plain_block[:31] and plain_block[31] == 0.0


def test_last_op_one_hot_has_eight_entries_with_grow_at_six() -> None:
    slots = empty_slots(1)
    observation, _ = build_observation(request(slots, last_op=LifecycleOp.GROW_INTERNAL), slots)
    one_hot = observation[17:25]
    assert len(one_hot) == len(LifecycleOp) == 8 and one_hot.index(1.0) == 6 and sum(one_hot) == 1.0
