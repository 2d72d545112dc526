"""Gradient telemetry: health formula, ratio formula with clamp and epsilon, EMA 0.9 (I13)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from leyline_schemas.enums import AlphaAlgorithm, AlphaMode, BlendId, BlueprintAction, SeedStage
from leyline_schemas.lifecycle import AlphaControllerState, SlotState
from services.kasmina.mechanics.gradients import GradientMonitor, gradient_health, gradient_ratio
from services.kasmina.mechanics.model import MorphogeneticModel
from services.tolaria.hosts import CNNHost


def test_health_formula() -> None:
    health, vanishing, exploding = gradient_health([1e-8, 1.0, 200.0, 2.0])
    assert health == pytest.approx(1 - 0.5 / 4 - 0.8 / 4)
    assert vanishing and exploding
    assert gradient_health([1.0, 2.0]) == (1.0, False, False)
    assert gradient_health([1.0, math.inf]) == (0.0, False, True)
    assert gradient_health([500.0]) == (pytest.approx(0.2), False, True)


@given(norms=st.lists(st.floats(0.0, 1e4), min_size=1, max_size=8))
def test_health_is_in_unit_interval(norms: list[float]) -> None:
    assert 0.0 <= gradient_health(norms)[0] <= 1.0


def test_ratio_formula() -> None:
    assert gradient_ratio(1.0, 2.0, 400, 100) == pytest.approx(0.5 * 2.0)
    assert gradient_ratio(1.0, 1e-9, 400, 100) == 0.0
    assert gradient_ratio(100.0, 1.0, 400, 100) == 10.0
    assert gradient_ratio(1.0, 4.0, 0, 100) == pytest.approx(0.25)


def _model() -> MorphogeneticModel:
    torch.manual_seed(0)
    model = MorphogeneticModel(CNNHost(base_channels=4, n_blocks=2), ["r0c0", "r0c1"])
    slot = model.slot("r0c0")
    slot.germinate(BlueprintAction.CONV_LIGHT, BlendId.LINEAR, AlphaAlgorithm.ADD)
    model.apply_states(
        [
            SlotState(
                slot_id="r0c0",
                stage=SeedStage.TRAINING,
                seed_id=slot.seed_id,
                blueprint=BlueprintAction.CONV_LIGHT,
                blend=BlendId.LINEAR,
                controller=AlphaControllerState(mode=AlphaMode.HOLD),
                isolate_gradients=True,
            )
        ]
    )
    return model


def _backward(model: MorphogeneticModel, scale: float) -> None:
    model.zero_grad()
    (model(torch.randn(2, 3, 8, 8)).sum() * scale).backward()


def _expected(model: MorphogeneticModel) -> tuple[float, float]:
    host = [p.grad for p in model.host_parameters() if p.grad is not None]
    seed = [p.grad for p in model.seed_parameters("r0c0") if p.grad is not None]
    g_host = math.sqrt(sum(float(g.norm()) ** 2 for g in host))
    g_seed = math.sqrt(sum(float(g.norm()) ** 2 for g in seed))
    return g_seed, gradient_ratio(g_seed, g_host, sum(g.numel() for g in host), sum(g.numel() for g in seed))


def test_monitor_measures_only_monitored_seeds_and_smooths() -> None:
    model = _model()
    monitor = GradientMonitor()
    assert monitor.report("r0c0") is None
    _backward(model, 1.0)
    assert monitor.observe(model) == ["r0c0"]
    first_norm, first_ratio = _expected(model)
    report = monitor.report("r0c0")
    assert report is not None
    assert report.gradient_norm == pytest.approx(first_norm, rel=1e-5)
    assert report.ratio == pytest.approx(first_ratio, rel=1e-5)
    assert 0.0 <= report.gradient_health <= 1.0
    _backward(model, 3.0)
    monitor.observe(model)
    second_norm, second_ratio = _expected(model)
    report = monitor.report("r0c0")
    assert report is not None
    assert report.gradient_norm == pytest.approx(0.9 * first_norm + 0.1 * second_norm, rel=1e-5)
    assert report.ratio == pytest.approx(0.9 * first_ratio + 0.1 * second_ratio, rel=1e-5)
    assert monitor.report("r0c1") is None
    monitor.reset("r0c0")
    assert monitor.report("r0c0") is None
