"""Quality gates in strict and permissive modes (reference/kasmina.md §1.3, I1, I7, I8)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from msgspec.structs import replace

from leyline_schemas.enums import AlphaMode, BlueprintAction, GateLevel, SeedStage
from leyline_schemas.lifecycle import SlotState
from services.kasmina.gates import GATE_FOR_STAGE, QualityGates, gate_for_stage

from .factories import seed

STRICT = QualityGates()
PERMISSIVE = QualityGates(permissive=True)


def test_each_target_stage_has_its_gate() -> None:
    assert GATE_FOR_STAGE == {
        SeedStage.GERMINATED: GateLevel.G0,
        SeedStage.TRAINING: GateLevel.G1,
        SeedStage.BLENDING: GateLevel.G2,
        SeedStage.HOLDING: GateLevel.G3,
        SeedStage.FOSSILIZED: GateLevel.G5,
    }


@pytest.mark.parametrize("stage", [SeedStage.DORMANT, SeedStage.PRUNED, SeedStage.EMBARGOED, SeedStage.RESETTING])
def test_stages_without_a_gate_raise(stage: SeedStage) -> None:
    with pytest.raises(ValueError, match="no gate"):
        gate_for_stage(stage)


def test_reserved_stage_and_removed_gate_are_rejected() -> None:
    with pytest.raises(ValueError, match="reserved"):
        gate_for_stage(5)
    with pytest.raises(ValueError, match="G4"):
        STRICT.evaluate(4, seed(SeedStage.TRAINING))


def test_g0_needs_a_seed_id_and_a_blueprint() -> None:
    ok = seed(SeedStage.DORMANT)
    assert STRICT.evaluate(GateLevel.G0, ok).passed
    assert not STRICT.evaluate(GateLevel.G0, replace(ok, seed_id="")).passed
    assert not STRICT.evaluate(GateLevel.G0, replace(ok, blueprint=BlueprintAction.NOOP)).passed


def test_g1_passes_only_from_germinated() -> None:
    assert PERMISSIVE.check_transition(seed(SeedStage.GERMINATED), SeedStage.TRAINING).passed
    assert not STRICT.check_transition(seed(SeedStage.TRAINING), SeedStage.TRAINING).passed


def _training(
    *, dwell: int = 10, accuracy: float = 60.5, ratio: float | None = 0.10, gradient_health: float | None = 0.7
) -> SlotState:
    """A TRAINING seed sitting exactly on every G2 threshold unless told otherwise."""
    return seed(
        SeedStage.TRAINING,
        dwell=dwell,
        accuracy=accuracy,
        stage_start_accuracy=60.0,
        ratio=ratio,
        gradient_health=gradient_health,
    )


def test_strict_g2_passes_exactly_at_its_thresholds() -> None:
    result = STRICT.check_transition(_training(), SeedStage.BLENDING)
    assert result.passed, result.message
    assert result.score == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("state", "failed"),
    [
        (_training(accuracy=60.49), "improvement_low"),
        (_training(dwell=9), "epochs_in_stage_low"),
        (_training(ratio=0.099), "seed_gradient_low"),
        (_training(ratio=None), "seed_gradient_unmeasured"),
    ],
)
def test_strict_g2_fails_each_condition(state: SlotState, failed: str) -> None:
    result = STRICT.check_transition(state, SeedStage.BLENDING)
    assert not result.passed
    assert any(name.startswith(failed) for name in result.checks_failed)


def test_permissive_g2_ignores_improvement_but_needs_healthy_measured_gradients() -> None:
    flat = _training(accuracy=50.0, ratio=None)
    assert PERMISSIVE.check_transition(flat, SeedStage.BLENDING).passed
    unmeasured = _training(gradient_health=None)
    assert "gradient_health_unmeasured" in PERMISSIVE.check_transition(unmeasured, SeedStage.BLENDING).checks_failed
    sick = _training(gradient_health=0.69)
    assert not PERMISSIVE.check_transition(sick, SeedStage.BLENDING).passed
    exploding = replace(_training(), metrics=replace(_training().metrics, has_exploding=True))
    assert "gradients_exploding" in PERMISSIVE.check_transition(exploding, SeedStage.BLENDING).checks_failed
    early = _training(dwell=9)
    assert not PERMISSIVE.check_transition(early, SeedStage.BLENDING).passed


def test_g2_score_scales_improvement_and_floors_at_zero() -> None:
    assert STRICT.check_transition(_training(accuracy=70.0), SeedStage.BLENDING).score == 1.0
    assert STRICT.check_transition(_training(accuracy=55.0), SeedStage.BLENDING).score == 0.0


@settings(max_examples=100)
@given(target=st.floats(min_value=0.0, max_value=1.0 - 1e-5), permissive=st.booleans())
def test_g3_fails_for_any_target_below_full(target: float, permissive: bool) -> None:
    partial = seed(SeedStage.BLENDING, alpha=target, target=target, dwell=20)
    result = QualityGates(permissive=permissive).check_transition(partial, SeedStage.HOLDING)
    assert not result.passed
    assert any(name.startswith("alpha_target_partial") for name in result.checks_failed)


def test_g3_passes_only_once_hold_is_reached_at_full_alpha() -> None:
    held = seed(SeedStage.BLENDING, alpha=1.0, target=1.0, dwell=10)
    assert STRICT.check_transition(held, SeedStage.HOLDING).passed
    ramping = seed(SeedStage.BLENDING, alpha=0.8, target=1.0, mode=AlphaMode.UP)
    result = PERMISSIVE.check_transition(ramping, SeedStage.HOLDING)
    assert not result.passed
    assert {"alpha_mode_up", "alpha_off_target_0.800"} <= set(result.checks_failed)
    assert result.score == pytest.approx(0.8)


def test_strict_g3_needs_ten_epochs_where_permissive_does_not() -> None:
    young = seed(SeedStage.BLENDING, alpha=1.0, target=1.0, dwell=3)
    assert not STRICT.check_transition(young, SeedStage.HOLDING).passed
    assert PERMISSIVE.check_transition(young, SeedStage.HOLDING).passed


@pytest.mark.parametrize("gates", [STRICT, PERMISSIVE], ids=["strict", "permissive"])
def test_g5_fails_without_a_counterfactual_in_both_modes(gates: QualityGates) -> None:
    result = gates.check_transition(seed(SeedStage.HOLDING, contribution=None), SeedStage.FOSSILIZED)
    assert not result.passed
    assert "counterfactual_unmeasured" in result.checks_failed


def test_strict_g5_threshold_is_one_percentage_point() -> None:
    assert STRICT.check_transition(seed(SeedStage.HOLDING, contribution=1.0), SeedStage.FOSSILIZED).passed
    assert not STRICT.check_transition(seed(SeedStage.HOLDING, contribution=0.99), SeedStage.FOSSILIZED).passed
    assert PERMISSIVE.check_transition(seed(SeedStage.HOLDING, contribution=-2.0), SeedStage.FOSSILIZED).passed


def test_g5_needs_a_healthy_seed_and_scores_contribution() -> None:
    unhealthy = replace(seed(SeedStage.HOLDING, contribution=5.0), is_healthy=False)
    assert not PERMISSIVE.check_transition(unhealthy, SeedStage.FOSSILIZED).passed
    assert STRICT.check_transition(seed(SeedStage.HOLDING, contribution=5.0), SeedStage.FOSSILIZED).score == 0.5
    assert STRICT.check_transition(seed(SeedStage.HOLDING, contribution=-1.0), SeedStage.FOSSILIZED).score == 0.0
