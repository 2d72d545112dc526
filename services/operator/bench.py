"""`esper bench`: benchmarks that print their figures (ratios measured side by side in one run).

This module is the command: its flags, `esper bench all` and the printed summaries. Each bench lives beside what
it measures: services/kasmina/bench.py (lifecycle step), services/tolaria/bench.py (bare loop, epochs on a device,
blueprint cost), services/tamiyo/bench.py (decision round trip) and services/operator/system_bench.py (benches that
start the whole stack). Their timing helpers are in services/runtime/timing.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

# ---------------------------------------------------------------------------------------------- subcommands


def cmd_kasmina(args: argparse.Namespace) -> int:
    import torch

    from services.kasmina.bench import bench_lifecycle
    from services.tolaria.bench import bench_blueprints

    torch.set_num_threads(args.threads)
    result = {
        "benchmark": "kasmina",
        "torch_threads": args.threads,
        "lifecycle_step": {f"{n}_slots": bench_lifecycle(n, args.iterations) for n in (3, 10)},
        "blueprint_step": bench_blueprints(args.torch_iterations, args.batch),
    }
    _emit(result, args)
    return 0


def cmd_overhead(args: argparse.Namespace) -> int:
    from services.operator.system_bench import overhead

    _emit(overhead(args.epochs, args.batches, args.batch, args.seed, args.nats, args.repeats), args)
    return 0


def cmd_workers(args: argparse.Namespace) -> int:
    from services.operator.system_bench import workers_scaling

    _emit(workers_scaling(args.envs, args.epochs, args.batches, args.threads), args)
    return 0


def cmd_epochs(args: argparse.Namespace) -> int:
    """Epoch times of one env on a device, without seeds and then with a blending seed in every slot."""
    from services.tolaria.bench import epoch_times

    result = epoch_times(
        task_name=args.task,
        synthetic=args.synthetic,
        device_name=args.device,
        amp=args.amp,
        compile_model=args.compile,
        epochs=args.epochs,
        batches=args.batches,
        batch=args.batch,
        seed=args.seed,
    )
    _emit(result, args)
    return 0


def cmd_seeds(args: argparse.Namespace) -> int:
    """Epochs with 0, 1 and 3 blending seeds interleaved, and the 3-seed validation by config walk vs stacked."""
    import torch

    from services.tolaria.seed_cost import seed_cost

    if args.threads:
        torch.set_num_threads(args.threads)
    result = seed_cost(
        task_name=args.task,
        synthetic=args.synthetic,
        rounds=args.rounds,
        batches=args.batches,
        batch=args.batch,
        seed=args.seed,
        validation_repeats=args.validation_repeats,
    )
    _emit(result, args)
    return 0


def cmd_checkpoint(args: argparse.Namespace) -> int:
    """A host checkpoint's capture and restore beside the epoch it follows, and its size."""
    from services.tolaria.bench import checkpoint_cost

    result = checkpoint_cost(
        task_name=args.task,
        synthetic=args.synthetic,
        epochs=args.epochs,
        batches=args.batches,
        batch=args.batch,
        seed=args.seed,
    )
    _emit(result, args)
    return 0


def cmd_decision(args: argparse.Namespace) -> int:
    from services.operator.system_bench import decision_on_stack

    result = asyncio.run(decision_on_stack(args.iterations, args.hidden, args.nats))
    _emit(result, args)
    return 0


def cmd_batching(args: argparse.Namespace) -> int:
    """Tamiyo's decisions per second one at a time and many envs at once, batching on and off."""
    from services.operator.system_bench import batching_on_stack

    _emit(asyncio.run(batching_on_stack(args.concurrency, args.rounds, args.hidden)), args)
    return 0


def _batching_lines(result: dict[str, Any]) -> list[tuple[str, str]]:
    on, off, alone = result["batching_on"], result["batching_off"], result["in_process"]
    n = result["concurrency"]
    return [
        ("decisions/s one at a time", f"{on['one_at_a_time']['per_second']:.0f}"),
        (
            f"decisions/s {n} at once, batching on / off",
            f"{on['together']['per_second']:.0f} / {off['together']['per_second']:.0f}",
        ),
        (
            f"{n} at once / one at a time (target >= {result['target_ratio']:g})",
            f"x{result['together_over_alone']:.2f}",
        ),
        (
            f"{n} at once p50 / p99 ms, batching on",
            f"{on['together']['latency_ms']['p50']:.2f} / {on['together']['latency_ms']['p99']:.2f}",
        ),
        (f"in process: {n} decide / one decide_many", f"x{alone['ratio']:.2f}"),
    ]


# ---------------------------------------------------------------------------------------------- all

# Each benchmark with the arguments `esper bench all` gives it: small enough for a laptop CPU in a few minutes.
ALL_BENCHMARKS: dict[str, list[str]] = {
    "overhead": ["--epochs", "4", "--batches", "20"],
    "kasmina": ["--iterations", "500", "--torch-iterations", "5", "--threads", "1"],
    "workers": ["--envs", "2", "--epochs", "5", "--batches", "10"],
    "learning": ["--rounds", "30", "--envs", "8", "--eval-episodes", "40"],
    "decision": ["--iterations", "300"],
    "batching": ["--rounds", "20"],
    "seeds": ["--synthetic", "--rounds", "4", "--validation-repeats", "2"],
}


def _run_captured(parser: argparse.ArgumentParser, argv: list[str]) -> dict[str, Any]:
    """Run one `esper bench` subcommand with --json and return the JSON it prints.

    The torch thread count a benchmark sets (`--threads`) is put back afterwards: in one process, `kasmina
    --threads 1` would otherwise run every later benchmark on one thread.
    """
    import contextlib
    import io

    import torch

    args = parser.parse_args(["bench", *argv, "--json"])
    buffer = io.StringIO()
    threads = torch.get_num_threads()
    try:
        with contextlib.redirect_stdout(buffer):
            code = args.func(args)
    finally:
        torch.set_num_threads(threads)
    text = buffer.getvalue()
    result: dict[str, Any] = json.loads(text[text.index("{") :])
    result.setdefault("exit_code", code)
    return result


def summary_rows(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(benchmark, figure, value) rows of the headline figures of every benchmark that ran."""
    rows: list[tuple[str, str, str]] = []
    for name, result in results.items():
        if "error" in result:
            rows.append((name, "error", str(result["error"])))
        elif name == "overhead":
            rows.append((name, "bare loop s/epoch (median)", f"{result['bare_epoch_s']['median']:.3f}"))
            rows.append((name, "system s/epoch (median)", f"{result['system_epoch_s']['median']:.3f}"))
            rows.append((name, "ratio (target <= 1.05)", f"{result['ratio']:.3f}"))
            if "ratio_range" in result:
                low, high = result["ratio_range"]
                rows.append((name, f"range over {result['repeats']} trials", f"{low:.3f} - {high:.3f}"))
        elif name == "kasmina":
            for slots, stats in result["lifecycle_step"].items():
                rows.append(
                    (name, f"lifecycle step {slots} p50 / p99 ms", f"{stats['p50_ms']:.3f} / {stats['p99_ms']:.3f}")
                )
            rows.append((name, "bare host fwd+bwd ms", f"{result['blueprint_step']['host_ms']:.2f}"))
            for blueprint, stats in result["blueprint_step"]["blueprints"].items():
                rows.append((name, f"+ {blueprint} (ratio to host)", f"x{stats['ratio']:.2f}"))
        elif name == "workers":
            rows.append((name, "1 worker steps/s", f"{result['one_worker']['steps_per_second']:.2f}"))
            rows.append((name, "2 workers steps/s", f"{result['two_workers']['steps_per_second']:.2f}"))
            cores = f"{result.get('cpu_cores', '?')} cores" + ("" if result.get("cores_last", True) else ", too few")
            rows.append((name, f"scaling (target >= 1.8 while cores last; {cores})", f"x{result['scaling']:.2f}"))
        elif name == "learning":
            for policy, figures in result.get("policies", {}).items():
                ret = figures.get("mean_return", figures.get("episode_return", {}))
                rows.append(
                    (
                        name,
                        f"{policy} mean return [95% CI]",
                        f"{ret['mean']:+.3f} [{ret['low']:+.3f}, {ret['high']:+.3f}]",
                    )
                )
        elif name == "decision":
            rows.append(
                (
                    name,
                    "decision round trip p50 / p99 ms (budget p99 < 5)",
                    f"{result['decision_ms']['p50']:.2f} / {result['decision_ms']['p99']:.2f}",
                )
            )
            rows.append(
                (name, "nats echo p50 / p99 ms", f"{result['echo_ms']['p50']:.3f} / {result['echo_ms']['p99']:.3f}")
            )
            rows.append((name, "p50 ratio decision / echo", f"x{result['p50_ratio']:.1f}"))
        elif name == "batching":
            rows += [(name, figure, value) for figure, value in _batching_lines(result)]
        elif name == "seeds":
            for n, ratio in result["ratio"].items():
                target, reference = result["target_ratio"][n], result["reference_ratio"][n]
                rows.append(
                    (
                        name,
                        f"epoch with {n} seeds / seedless (target <= {target}, reference {reference})",
                        f"x{ratio:.2f}",
                    )
                )
            walk = result["validation_3_seeds"]
            rows.append((name, "3-seed validation stacked pass / config walk", f"x{walk['stacked_over_walk']:.1f}"))
    return rows


def markdown_table(results: dict[str, Any], header: str = "") -> str:
    lines = [header, ""] if header else []
    lines += ["| benchmark | figure | value |", "|---|---|---|"]
    lines += [f"| {b} | {f} | {v} |" for b, f, v in summary_rows(results)]
    return "\n".join(lines) + "\n"


def cmd_all(args: argparse.Namespace) -> int:
    """Every benchmark in turn (failures recorded, not fatal); one JSON and a markdown table."""
    from services.operator.cli import build_parser

    parser = build_parser()
    wanted = [n.strip() for n in args.only.split(",")] if args.only else list(ALL_BENCHMARKS)
    results: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    for name in wanted:
        print(f"esper bench all: {name} ...", file=sys.stderr, flush=True)
        started = time.monotonic()
        try:
            results[name] = _run_captured(parser, [name, *ALL_BENCHMARKS[name]])
        except Exception as exc:  # one failing benchmark must not lose the others' figures
            results[name] = {"benchmark": name, "error": f"{type(exc).__name__}: {exc}"}
        seconds[name] = round(time.monotonic() - started, 1)
    from services.experiments.provenance import provenance

    info = provenance()
    report = {"benchmarks": results, "seconds": seconds, "arguments": ALL_BENCHMARKS, "provenance": info}
    table = markdown_table(results, "# esper bench all")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
        from services.experiments.provenance import provenance_markdown

        (out / "report.md").write_text(table + "\n" + provenance_markdown(info) + "\n")
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(table)
    return 0 if all("error" not in r for r in results.values()) else 1


def _emit(result: dict[str, Any], args: argparse.Namespace) -> None:
    text = json.dumps(result, indent=2)
    if getattr(args, "out", None):
        Path(args.out).write_text(text + "\n")
    if args.json:
        print(text)
    else:
        print(_summary(result))


def _range(result: dict[str, Any]) -> str:
    if "ratio_range" not in result:
        return ""
    low, high = result["ratio_range"]
    return f", median of {result['repeats']} trials ranging {low:.3f}-{high:.3f}"


def _summary(result: dict[str, Any]) -> str:
    if result["benchmark"] == "workers":
        return (
            f"1 worker {result['one_worker']['steps_per_second']:.2f} steps/s, 2 workers "
            f"{result['two_workers']['steps_per_second']:.2f} steps/s -> x{result['scaling']:.2f} "
            f"(target >= {result['target_scaling']:.1f})"
        )
    if result["benchmark"] == "epochs":
        return (
            f"{result['task']} on {result['device_name']}: without seeds "
            f"{statistics.median(result['without_seeds_s']):.3f}s/epoch, with {len(result['seeds'])} blending seeds "
            f"{statistics.median(result['with_seeds_s']):.3f}s/epoch (x{result['median_ratio']:.2f})"
        )
    if result["benchmark"] == "seeds":
        from services.tolaria.seed_cost import summary

        return summary(result)
    if result["benchmark"] == "checkpoint":
        epoch, captured, restored = (statistics.median(result[k]) for k in ("epoch_s", "capture_s", "restore_s"))
        return (
            f"{result['task']} ({result['total_params']:,} params, seeds in every slot): epoch {epoch:.3f}s, "
            f"checkpoint capture {captured:.4f}s (x{result['capture_over_epoch']:.4f} of the epoch), "
            f"restore {restored:.4f}s (x{result['restore_over_epoch']:.4f}), {result['blob_bytes'] / 1e6:.2f} MB"
        )
    if result["benchmark"] == "batching":
        return "\n".join(f"{figure}: {value}" for figure, value in _batching_lines(result))
    if result["benchmark"] == "decision":
        d, e = result["decision_ms"], result["echo_ms"]
        return (
            f"decision round trip p50 {d['p50']:.2f} ms, p99 {d['p99']:.2f} ms; nats echo p50 {e['p50']:.3f} ms, "
            f"p99 {e['p99']:.3f} ms (p50 x{result['p50_ratio']:.1f})"
        )
    if result["benchmark"] == "overhead":
        bare, system = result["bare_epoch_s"]["median"], result["system_epoch_s"]["median"]
        return (
            f"bare loop {bare:.3f}s/epoch, system {system:.3f}s/epoch"
            f" -> ratio {result['ratio']:.3f}{_range(result)} (target <= {result['target_ratio']})"
        )
    lines = []
    for name, stats in result["lifecycle_step"].items():
        lines.append(f"lifecycle step {name}: p50 {stats['p50_ms']:.3f} ms, p99 {stats['p99_ms']:.3f} ms")
    host = result["blueprint_step"]["host_ms"]
    lines.append(f"bare host fwd+bwd: {host:.2f} ms")
    for name, stats in result["blueprint_step"]["blueprints"].items():
        lines.append(f"  + {name:<12} {stats['ms']:.2f} ms  x{stats['ratio']:.2f}  ({stats['seed_params']:,} params)")
    return "\n".join(lines)


def register(sub: Any) -> None:
    bench = sub.add_parser("bench", help="benchmarks that print their figures")
    bsub = bench.add_subparsers(dest="bench_command", required=True)

    p = bsub.add_parser("kasmina", help="lifecycle step latency and per-blueprint fwd+bwd cost")
    p.add_argument("--json", action="store_true")
    p.add_argument("--out", default=None)
    p.add_argument("--iterations", type=int, default=2000)
    p.add_argument("--torch-iterations", type=int, default=10)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--threads", type=int, default=max(1, min(4, _cpu_count())))
    p.set_defaults(func=cmd_kasmina)

    p = bsub.add_parser("overhead", help="full system step vs a bare PyTorch loop, side by side")
    p.add_argument("--json", action="store_true")
    p.add_argument("--out", default=None)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batches", type=int, default=50)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--nats", default=None, help="an existing bus (default: an embedded one)")
    p.add_argument("--repeats", type=int, default=3, help="trials (bare, system, bare); the ratio is their median")
    p.set_defaults(func=cmd_overhead)

    p = bsub.add_parser("workers", help="env-worker scaling: steps/s with 1 and 2 Tolaria workers on one run")
    p.add_argument("--json", action="store_true")
    p.add_argument("--out", default=None)
    p.add_argument("--envs", type=int, default=2)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batches", type=int, default=20)
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker (1: one core each)")
    p.set_defaults(func=cmd_workers)

    p = bsub.add_parser("epochs", help="epoch times on a device (e.g. cuda) without and with seeds")
    p.add_argument("--json", action="store_true")
    p.add_argument("--out", default=None)
    p.add_argument("--task", default="cifar_baseline")
    p.add_argument("--synthetic", action="store_true")
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", default="auto", choices=("auto", "bf16", "off"))
    p.add_argument("--compile", action="store_true")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batches", type=int, default=50)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--seed", type=int, default=42)
    p.set_defaults(func=cmd_epochs)

    p = bsub.add_parser("seeds", help="epochs with 0, 1 and 3 blending seeds side by side, validation split out")
    p.add_argument("--json", action="store_true")
    p.add_argument("--out", default=None)
    p.add_argument("--task", default="cifar_baseline")
    p.add_argument("--synthetic", action="store_true", help="synthetic data of the task's shape")
    p.add_argument("--rounds", type=int, default=6, help="epochs per env, interleaved (the first is warm-up)")
    p.add_argument("--batches", type=int, default=50)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--validation-repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.set_defaults(func=cmd_seeds)

    p = bsub.add_parser("checkpoint", help="a host checkpoint's capture and restore vs the epoch it follows")
    p.add_argument("--json", action="store_true")
    p.add_argument("--out", default=None)
    p.add_argument("--task", default="cifar_baseline")
    p.add_argument("--synthetic", action="store_true", help="synthetic data of the task's shape")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batches", type=int, default=50)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--seed", type=int, default=42)
    p.set_defaults(func=cmd_checkpoint)

    p = bsub.add_parser("decision", help="decision round trip tolaria→kasmina→tamiyo (LSTM, CPU) vs a nats echo")
    p.add_argument("--json", action="store_true")
    p.add_argument("--out", default=None)
    p.add_argument("--iterations", type=int, default=500)
    p.add_argument("--hidden", type=int, default=512, help="LSTM width (512 is the reference size)")
    p.add_argument("--nats", default=None, help="an existing bus (default: an embedded one)")
    p.set_defaults(func=cmd_decision)

    p = bsub.add_parser("batching", help="Tamiyo's decisions/s one at a time vs many envs at once, batching on/off")
    p.add_argument("--json", action="store_true")
    p.add_argument("--out", default=None)
    p.add_argument("--concurrency", type=int, default=16, help="envs deciding at once")
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument("--hidden", type=int, default=512, help="LSTM width (512 is the reference size)")
    p.set_defaults(func=cmd_batching)

    p = bsub.add_parser("all", help="every benchmark at a small size: one JSON and a markdown table")
    p.add_argument("--json", action="store_true")
    p.add_argument("--out", default=None, help="directory for bench.json and report.md")
    p.add_argument("--only", default=None, help="comma-separated subset, e.g. kasmina,decision")
    p.set_defaults(func=cmd_all)

    for module_name in (
        "services.experiments.commands",
        "services.operator.policy_commands",
        "services.operator.karn_commands",
    ):
        # Other services contribute bench subcommands through `register_bench(subparsers)`.
        import importlib
        import importlib.util

        if importlib.util.find_spec(module_name) is not None:
            module = importlib.import_module(module_name)
            if hasattr(module, "register_bench"):
                module.register_bench(bsub)


def _cpu_count() -> int:
    import os

    return os.cpu_count() or 1


if __name__ == "__main__":  # pragma: no cover - convenience for `python -m services.operator.bench`
    sys.exit(0)
