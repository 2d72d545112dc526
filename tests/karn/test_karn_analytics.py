"""Per-blueprint analytics and per-env seed scoreboards (reference/tolaria_karn.md §8.4)."""

from __future__ import annotations

import pytest

from services.karn.analytics import SeedLife, blueprint_stats, compute_multiplier, seed_scoreboards


def life(env: int, blueprint: str, stage: str, **kw: object) -> SeedLife:
    return SeedLife(
        env_id=env,
        episode=0,
        seed_id=f"{blueprint}-{env}-{stage}",
        slot_id="r0c0",
        blueprint=blueprint,
        stage=stage,
        **kw,
    )  # type: ignore[arg-type]


SEEDS = [
    life(
        0,
        "conv_light",
        "FOSSILIZED",
        improvement=2.0,
        counterfactual=1.5,
        blending_delta=0.5,
        params=100,
        epochs_total=8,
    ),
    life(0, "conv_light", "PRUNED", improvement=-1.0, counterfactual=-0.5, epochs_total=3),
    life(
        1,
        "conv_light",
        "FOSSILIZED",
        improvement=1.0,
        counterfactual=None,
        blending_delta=0.25,
        params=100,
        epochs_total=6,
    ),
    life(1, "attention", "TRAINING"),
    life(1, "mystery", "PRUNED", improvement=-2.0, epochs_total=5),
]


def test_blueprint_counts_rates_and_mean_deltas() -> None:
    stats = {s.blueprint: s for s in blueprint_stats(SEEDS)}
    conv = stats["conv_light"]
    assert (conv.germinated, conv.fossilized, conv.pruned, conv.live) == (3, 2, 1, 0)
    assert conv.fossilization_rate == pytest.approx(200 / 3)
    assert conv.mean_accuracy_delta == pytest.approx(1.5)  # fossilized seeds only
    assert conv.mean_churn == pytest.approx(-1.0)  # pruned seeds only
    assert conv.mean_blending_delta == pytest.approx(0.375)
    assert conv.mean_counterfactual == pytest.approx(0.5)  # (1.5 + -0.5) / 2: unmeasured seeds are skipped
    attention = stats["attention"]
    assert (attention.live, attention.fossilization_rate, attention.mean_accuracy_delta) == (1, None, None)
    assert attention.compute_multiplier == 1.35 and compute_multiplier("mystery") == 1.1


def test_scoreboards_add_compute_cost_per_fossilized_seed() -> None:
    boards = {b.env_id: b for b in seed_scoreboards(SEEDS)}
    assert (boards[0].germinated, boards[0].fossilized, boards[0].pruned) == (2, 1, 1)
    assert boards[0].compute_cost == pytest.approx(1.15)
    assert boards[0].mean_fossilize_age == 8 and boards[0].mean_prune_age == 3
    assert boards[1].params_added == 100 and boards[1].fossilized_by_blueprint == {"conv_light": 1}
    assert boards[1].compute_cost == pytest.approx(1.15)
