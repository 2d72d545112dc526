"""`esper experiment tinystories-baseline`: curves from EpochCompleted rows, summaries and the report."""

from __future__ import annotations

import math
from pathlib import Path

from services.experiments.provenance import provenance
from services.experiments.tinystories import curve, plot_curves, report_markdown, summarize_condition
from services.tolaria.tasks import REFERENCE_TASKS, get_task


def _run(losses: list[list[float]], added: int = 0, rollbacks: int = 0) -> dict:
    return {
        "state": "completed",
        "epochs": [
            {"env": env, "epoch": epoch + 1, "val_loss": loss}
            for env, row in enumerate(losses)
            for epoch, loss in enumerate(row)
        ],
        "rollback_events": [{"env": 0, "epoch": 2, "reason": "nan"}] * rollbacks,
        "outcomes": [
            {"env": env, "seed_params_added": added, "seeds_fossilized": 1, "seeds_pruned": 0, "rollbacks": rollbacks}
            for env in range(len(losses))
        ],
    }


def test_curve_averages_seeds_per_epoch_and_summary_flags_rollbacks() -> None:
    run = _run([[3.0, 2.0], [3.2, 2.2]], added=500, rollbacks=1)
    points = curve(run)
    assert [p["epoch"] for p in points] == [1, 2]
    assert math.isclose(points[1]["val_loss"], 2.1)
    assert math.isclose(points[1]["perplexity"], math.exp(2.1))
    summary = summarize_condition(run)
    assert summary["params_added"] == 500 and summary["hit_rollback"] and summary["rollbacks"] == 2
    assert math.isclose(summary["best_val_loss"], 2.1)


def test_report_and_plot(tmp_path: Path) -> None:
    runs = {"static": _run([[3.0, 2.5]]), "heuristic": _run([[3.0, 2.4]], added=1200), "ppo": _run([[3.0, 2.6]])}
    result = {
        "settings": {
            "task": "tinystories_small",
            "seeds": 1,
            "max_batches": 2,
            "reward_mode": "simplified",
            "ppo_rounds": 1,
            "ppo_envs": 1,
            "max_seeds": 2,
        },
        "host_params": 1000,
        "data_source": "sample.txt",
        "episode_length": 2,
        "batch_size": 4,
        "block_size": 8,
        "token_budget": 128,
        "summary": {k: summarize_condition(v) for k, v in runs.items()},
        "curves": {k: curve(v) for k, v in runs.items()},
        "provenance": provenance(["esper", "experiment", "tinystories-baseline"]),
    }
    result["summary"]["heuristic"]["policy_errors"] = 2
    text = report_markdown(result)
    assert "**Warning:** `heuristic` failed to decide at 2 epoch(s)" in text
    assert "| heuristic | 2.4000 |" in text and "1,200" in text
    assert "esper experiment tinystories-baseline" in text
    assert plot_curves(result, tmp_path / "curves.png").stat().st_size > 0


def test_tinystories_small_is_a_separate_non_reference_task() -> None:
    task = get_task("tinystories_small")
    assert "tinystories_small" not in REFERENCE_TASKS
    assert task.block_size == 64 and task.vocab_size == 257
    data = task.load_data(0, True, None)  # synthetic twin: no file needed
    assert data.split.x_train.shape[1] == 64
