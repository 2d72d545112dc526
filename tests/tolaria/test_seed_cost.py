"""`esper bench seeds`: 0, 1 and 3 seeds side by side, and the 3-seed validation by config walk and stacked pass."""

from __future__ import annotations

from services.operator.bench import summary_rows
from services.tolaria.seed_cost import seed_cost, summary


def test_seed_cost_runs_every_count_side_by_side_and_both_validations_agree() -> None:
    result = seed_cost(task_name="digits", synthetic=False, rounds=2, batches=2, batch=32, seed=5, validation_repeats=1)
    assert result["validation_configs"] == {"0": 1, "1": 2, "3": 11}
    for n in ("0", "1", "3"):
        assert len(result["runs"][n]["epoch_s"]) == 2
        m = result["median"][n]
        assert 0 < m["train_s"] + m["validate_s"] <= m["epoch_s"]
    # The walk shares work: eleven configs cost far less than the ten extra forwards the stacked pass ran.
    assert result["counterfactual_flops_over_main"]["0"] == 0
    assert 0 < result["counterfactual_flops_over_main"]["1"] < 1 < result["counterfactual_flops_over_main"]["3"] < 10
    walk = result["validation_3_seeds"]
    assert walk["max_accuracy_gap"] < 1.0  # the same computation; a stacked batch only rounds differently
    assert set(result["ratio"]) == {"1", "3"} and all(r > 0 for r in result["ratio"].values())
    text = summary(result)
    assert "3 seeds: epoch" in text and "reference x6.00" in text and "stacked pass" in text
    rows = summary_rows({"seeds": result})
    assert any(figure.startswith("epoch with 3 seeds / seedless (target <= 2.0") for _, figure, _ in rows)
