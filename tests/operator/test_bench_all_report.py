"""`esper bench all` and `esper bench decision`: registration, headline rows and the markdown table."""

from __future__ import annotations

from services.operator.bench import ALL_BENCHMARKS, _run_captured, _summary, markdown_table, summary_rows
from services.operator.cli import build_parser


def test_all_and_decision_are_registered_next_to_the_existing_benchmarks() -> None:
    parser = build_parser()
    for name in ("overhead", "kasmina", "workers", "epochs", "learning", "decision", "seeds", "batching", "all"):
        args = parser.parse_args(["bench", name, "--json"])
        assert callable(args.func)
    assert set(ALL_BENCHMARKS) == {"overhead", "kasmina", "workers", "learning", "decision", "seeds", "batching"}
    for name, argv in ALL_BENCHMARKS.items():  # the arguments `all` passes must parse
        parser.parse_args(["bench", name, *argv, "--json"])


DECISION = {
    "benchmark": "decision",
    "decision_ms": {"p50": 6.0, "p99": 12.0, "mean": 7.0},
    "echo_ms": {"p50": 0.4, "p99": 0.6, "mean": 0.45},
    "p50_ratio": 15.0,
}


def test_rows_and_table_include_failures_and_headlines() -> None:
    results = {
        "decision": DECISION,
        "workers": {"benchmark": "workers", "error": "TimeoutError: no tolaria"},
        "overhead": {
            "benchmark": "overhead",
            "bare_epoch_s": {"median": 1.0},
            "system_epoch_s": {"median": 1.02},
            "ratio": 1.02,
            "repeats": 3,
            "ratio_range": [0.98, 1.07],
            "target_ratio": 1.05,
        },
    }
    rows = summary_rows(results)
    assert ("decision", "decision round trip p50 / p99 ms (budget p99 < 5)", "6.00 / 12.00") in rows
    assert ("workers", "error", "TimeoutError: no tolaria") in rows
    assert ("overhead", "ratio (target <= 1.05)", "1.020") in rows
    assert ("overhead", "range over 3 trials", "0.980 - 1.070") in rows
    assert "ratio 1.020, median of 3 trials ranging 0.980-1.070" in _summary(results["overhead"])
    table = markdown_table(results, "# bench")
    assert table.startswith("# bench\n\n| benchmark | figure | value |")
    assert "| decision | p50 ratio decision / echo | x15.0 |" in table
    assert "decision round trip p50 6.00 ms" in _summary(DECISION)


def test_worker_scaling_says_when_the_machine_has_too_few_cores_for_the_target() -> None:
    def workers(cores: int, last: bool) -> dict[str, object]:
        return {
            "benchmark": "workers",
            "one_worker": {"steps_per_second": 2.0},
            "two_workers": {"steps_per_second": 3.0},
            "scaling": 1.5,
            "cpu_cores": cores,
            "cores_last": last,
        }

    assert ("workers", "scaling (target >= 1.8 while cores last; 2 cores, too few)", "x1.50") in summary_rows(
        {"workers": workers(2, False)}
    )
    assert ("workers", "scaling (target >= 1.8 while cores last; 16 cores)", "x1.50") in summary_rows(
        {"workers": workers(16, True)}
    )


def test_a_benchmark_run_by_all_leaves_the_torch_thread_count_as_it_found_it() -> None:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        argv = ["kasmina", "--iterations", "3", "--torch-iterations", "1", "--batch", "4", "--threads", "1"]
        result = _run_captured(build_parser(), argv)
        assert result["benchmark"] == "kasmina" and result["exit_code"] == 0
        assert torch.get_num_threads() == 2, "kasmina --threads 1 would run every later benchmark on one thread"
    finally:
        torch.set_num_threads(before)
