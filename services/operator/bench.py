"""`esper bench`: benchmarks that print their figures (ratios measured side by side in one run)."""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    return {"p50": pick(0.5), "p99": pick(0.99), "mean": statistics.fmean(ordered), "n": float(len(ordered))}


def time_calls(fn: Callable[[], object], iterations: int, warmup: int = 3) -> list[float]:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(iterations):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return samples


# ---------------------------------------------------------------------------------------------- kasmina


def _lifecycle_request(n_slots: int) -> Any:
    """A StepRequest with seeds in several stages, so the tick, observation and masks do real work."""
    import leyline_schemas as L
    from services.kasmina.transitions import advance_state, germinate_state

    specs = [L.SlotSpec(slot_id=f"r{i // 5}c{i % 5}", channels=32, order=i) for i in range(n_slots)]
    slots = []
    for i, spec in enumerate(specs):
        if i % 3 == 2:
            slots.append(L.SlotState(slot_id=spec.slot_id))
            continue
        change = germinate_state(
            spec.slot_id,
            f"s{i}",
            L.BlueprintAction.CONV_SMALL,
            L.BlendId.SIGMOID,
            L.AlphaAlgorithm.ADD,
            5,
            1.0,
            1,
            6418,
            50.0,
        )
        state = change.state if i % 3 == 0 else advance_state(change.state, permissive=True).state
        slots.append(state)
    report = L.EpochReport(
        epoch=12,
        max_epochs=25,
        train_loss=1.1,
        train_accuracy=61.0,
        val_loss=1.2,
        val_accuracy=58.0,
        val_loss_history=[1.5, 1.4, 1.3, 1.25, 1.2],
        val_accuracy_history=[50.0, 53.0, 55.0, 57.0, 58.0],
        slots=[
            L.SlotReport(slot_id=s.slot_id, gradient_health=0.9, gradient_norm=0.5, seed_gradient_norm_ratio=0.2)
            for s in specs
        ],
    )
    return L.StepRequest(
        run_id="bench",
        env_id=0,
        episode=0,
        epoch=12,
        policy_id="wait",
        slot_config=L.SlotConfig(topology=L.Topology.CNN, slots=specs, host_param_count=6418),
        lifecycle=L.LifecycleConfig(max_epochs=25),
        report=report,
        slots=slots,
    )


def bench_lifecycle(n_slots: int, iterations: int) -> dict[str, float]:
    import leyline_schemas as L
    from services.kasmina.lifecycle import execute, tick
    from services.kasmina.masks import compute_masks
    from services.observation.features import build_observation

    req = _lifecycle_request(n_slots)

    def one_step() -> None:
        ticked = tick(req)
        build_observation(req, ticked.slots)
        compute_masks(ticked.slots, req.slot_config, req.lifecycle, 2)
        execute(L.FactoredAction(op=L.LifecycleOp.ADVANCE, slot=1), req, ticked.slots)

    ms = [s * 1000 for s in time_calls(one_step, iterations, warmup=20)]
    return {f"{k}_ms" if k != "n" else k: v for k, v in percentiles(ms).items()}


def bench_blueprints(iterations: int, batch: int) -> dict[str, Any]:
    """Forward+backward of host+seed at cifar_baseline shapes, as a ratio to the bare host, per CNN blueprint."""
    import torch
    import torch.nn.functional as F

    import leyline_schemas as L
    from services.kasmina.mechanics.model import MorphogeneticModel
    from services.tolaria.tasks import get_task

    task = get_task("cifar_baseline")
    torch.manual_seed(0)
    x = torch.randn(batch, 3, 32, 32)
    y = torch.randint(0, 10, (batch,))

    def step_time(model: torch.nn.Module) -> float:
        def one() -> None:
            model.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()

        return statistics.median(time_calls(one, iterations, warmup=3)) * 1000

    bare = step_time(MorphogeneticModel(task.build_host(), ["r0c1"]))
    results: dict[str, Any] = {"host_ms": bare, "slot": "r0c1", "batch": batch, "blueprints": {}}
    for blueprint in L.CNN_BLUEPRINTS:
        if blueprint is L.BlueprintAction.NOOP:
            continue
        model = MorphogeneticModel(task.build_host(), ["r0c1"])
        model.germinate("r0c1", blueprint, L.BlendId.SIGMOID, L.AlphaAlgorithm.ADD, seed_id="bench")
        model.slot("r0c1").sync(
            L.SlotState(
                slot_id="r0c1",
                stage=L.SeedStage.BLENDING,
                seed_id="bench",
                blueprint=blueprint,
                controller=L.AlphaControllerState(alpha=0.5, alpha_target=1.0),
                isolate_gradients=True,
            )
        )
        ms = step_time(model)
        results["blueprints"][L.blueprint_name(blueprint)] = {
            "ms": ms,
            "ratio": ms / bare,
            "seed_params": model.active_seed_params,
        }
    return results


def cmd_kasmina(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(args.threads)
    result = {
        "benchmark": "kasmina",
        "torch_threads": args.threads,
        "lifecycle_step": {f"{n}_slots": bench_lifecycle(n, args.iterations) for n in (3, 10)},
        "blueprint_step": bench_blueprints(args.torch_iterations, args.batch),
    }
    _emit(result, args)
    return 0


# ---------------------------------------------------------------------------------------------- overhead


def bare_loop_epoch_times(epochs: int, batches: int, batch: int, seed: int) -> list[float]:
    """A plain PyTorch loop: the cifar_baseline host, SGD, the same synthetic data, train + validation per epoch."""
    import torch
    import torch.nn.functional as F

    from services.tolaria.data import BatchStream
    from services.tolaria.tasks import get_task

    task = get_task("synthetic_cnn")
    data = task.load_data(seed, True, None).split
    torch.manual_seed(seed)
    host = task.build_host()
    optimizer = torch.optim.SGD(host.parameters(), lr=task.host_lr, momentum=0.9, weight_decay=5e-4)
    train = BatchStream(data.x_train, data.y_train, batch, seed=seed + 1, max_batches=batches)
    val = list(BatchStream(data.x_val, data.y_val, batch, seed=seed, shuffle=False, max_batches=batches).epoch())
    times = []
    for _ in range(epochs):
        started = time.perf_counter()
        host.train()
        for xb, yb in train.epoch():
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(host(xb), yb)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(host.parameters(), 1.0)
            optimizer.step()
        host.eval()
        with torch.inference_mode():
            for xb, yb in val:
                F.cross_entropy(host(xb), yb)
        times.append(time.perf_counter() - started)
    return times


async def system_epoch_times(epochs: int, batches: int, batch: int, seed: int, nats_url: str | None) -> list[float]:
    """The full system on the embedded bus with policy `wait`: wall time between consecutive epochs of one env."""
    import leyline_schemas as L
    from services.operator.run_client import RunFollower, run_job

    spec = L.RunSpec(
        run_id=f"bench-overhead-{int(time.time())}",
        task="synthetic_cnn",
        slots=["r0c0", "r0c1", "r0c2"],
        episodes=1,
        episode_length=epochs,
        n_envs=1,
        arms=[L.ArmSpec(arm_id="main", policy_id="wait", reward_mode=L.RewardMode.SIMPLIFIED)],
        seed=seed,
        max_batches=batches,
        batch_size=batch,
        synthetic=True,
        created_at=time.time(),
    )
    stamps: list[float] = []
    original = RunFollower.on_message

    async def record(self: RunFollower, msg: Any) -> None:
        event = L.decode(msg.data, L.TelemetryEvent)
        if isinstance(event.payload, L.EpochCompleted):
            stamps.append(event.timestamp)
        await original(self, msg)

    RunFollower.on_message = record  # type: ignore[method-assign]
    try:
        await run_job(spec, nats_url, Path(tempfile.mkdtemp(prefix="esper-bench-")), timeout=1800, show_progress=False)
    finally:
        RunFollower.on_message = original  # type: ignore[method-assign]
    stamps.sort()
    return [b - a for a, b in itertools.pairwise(stamps)]


def cmd_overhead(args: argparse.Namespace) -> int:
    # Bare epochs before and after the system's, so that a change in machine load hits both sides alike.
    before = bare_loop_epoch_times(args.epochs, args.batches, args.batch, args.seed)
    system = asyncio.run(system_epoch_times(args.epochs + 1, args.batches, args.batch, args.seed, args.nats))
    after = bare_loop_epoch_times(args.epochs, args.batches, args.batch, args.seed)
    # The first epoch of each bare loop carries warm-up (allocator); the system's first gap already excludes it.
    bare = before[1:] + after[1:]
    bare_median = statistics.median(bare)
    system_median = statistics.median(system)
    result = {
        "benchmark": "overhead",
        "workload": (
            f"cifar_baseline host, synthetic CIFAR, {args.batches} batches of {args.batch} per epoch + validation"
        ),
        "epochs": args.epochs,
        "bare_epoch_s": {"median": bare_median, "all": bare},
        "system_epoch_s": {"median": system_median, "all": system},
        "ratio": system_median / bare_median,
        "target_ratio": 1.05,
    }
    _emit(result, args)
    return 0


# ---------------------------------------------------------------------------------------------- workers


async def steps_per_second(workers: int, envs: int, epochs: int, batches: int, threads: int) -> dict[str, float]:
    """Steps per second of one run whose envs are spread over `workers` Tolaria processes on one embedded bus."""
    import leyline_schemas as L
    from services.operator.stack import LocalStack
    from services.operator.supervisor import Supervisor, service_child
    from services.runtime.bus import connect, request
    from services.runtime.discovery import wait_for_services
    from services.runtime.settings import RuntimeSettings

    state = Path(tempfile.mkdtemp(prefix="esper-bench-workers-"))
    sink = open(state / "services.log", "a")  # noqa: SIM115 - closed below
    stack = LocalStack(
        state_dir=state,
        services=("kasmina", "tamiyo", "simic", "karn"),
        output=lambda line: print(line, file=sink, flush=True),
    )
    url = await stack.start()
    per_worker = -(-envs // workers)
    tolaria = Supervisor(
        [
            service_child(
                "tolaria",
                url,
                {"ESPER_MAX_ENVS": str(per_worker), "ESPER_TORCH_THREADS": str(threads)},
                label=f"tolaria-{i}",
            )
            for i in range(workers)
        ],
        output=lambda line: print(line, file=sink, flush=True),
    )
    await tolaria.start()
    nc = await connect(RuntimeSettings.from_env({"service": "bench", "nats_url": url}))
    try:
        live = await wait_for_services(nc, ["kasmina", "tamiyo", "simic", "karn", "tolaria"], timeout=180)
        while sum(1 for s in live if s["service"] == "tolaria") < workers:
            live = await wait_for_services(nc, ["tolaria"], timeout=60)
        js = nc.jetstream()
        run_id = f"bench-workers-{workers}-{int(time.time())}"
        stamps: list[float] = []

        async def collect(msg: Any) -> None:
            event = L.decode(msg.data, L.TelemetryEvent)
            if isinstance(event.payload, L.EpochCompleted):
                stamps.append(event.timestamp)

        sub = await js.subscribe(
            f"{L.subjects.PREFIX}.telemetry.{run_id}.epoch_completed", cb=collect, ordered_consumer=True
        )
        spec = L.RunSpec(
            run_id=run_id,
            task="synthetic_cnn",
            episodes=envs,
            n_envs=envs,
            episode_length=epochs,
            max_batches=batches,
            batch_size=128,
            synthetic=True,
            arms=[L.ArmSpec(arm_id="main", policy_id="wait")],
        )
        await request(nc, L.subjects.RUNS_START, spec, L.RunAccepted, timeout=120)
        deadline = time.monotonic() + 1800
        while len(stamps) < envs * epochs and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        await sub.unsubscribe()
    finally:
        await nc.close()
        await tolaria.stop()
        await stack.stop()
        sink.close()
    stamps.sort()
    # Steady state: from the moment every env has finished its first epoch to the last epoch.
    start = stamps[envs - 1]
    steady = [t for t in stamps if t > start]
    return {
        "workers": workers,
        "steps": len(steady),
        "seconds": stamps[-1] - start,
        "steps_per_second": len(steady) / max(1e-9, stamps[-1] - start),
    }


def cmd_workers(args: argparse.Namespace) -> int:
    one = asyncio.run(steps_per_second(1, args.envs, args.epochs, args.batches, args.threads))
    cores = os.cpu_count() or 1
    two = asyncio.run(steps_per_second(2, args.envs, args.epochs, args.batches, args.threads))
    result = {
        "benchmark": "workers",
        "envs": args.envs,
        "torch_threads_per_worker": args.threads,
        "one_worker": one,
        "two_workers": two,
        "scaling": two["steps_per_second"] / one["steps_per_second"],
        "target_scaling": 0.9 * 2,
        # §10's target holds "while cores last": two workers' torch threads plus Kasmina, Tamiyo and NATS.
        "cpu_cores": cores,
        "cores_last": cores >= 2 * args.threads + 1,
    }
    _emit(result, args)
    return 0


# ---------------------------------------------------------------------------------------------- epochs


def cmd_epochs(args: argparse.Namespace) -> int:
    """Epoch times of one env on a device, without seeds and then with a blending seed in every slot."""
    import msgspec
    import torch

    import leyline_schemas as L
    from services.kasmina.transitions import advance_state, germinate_state
    from services.runtime.settings import resolve_device
    from services.tolaria.acceleration import choose
    from services.tolaria.env import EpisodeEnv
    from services.tolaria.tasks import get_task

    device = resolve_device(args.device)
    task = get_task(args.task)
    data = task.load_data(args.seed, args.synthetic, None)
    acceleration = choose(device, args.amp, args.compile)
    env = EpisodeEnv(
        task,
        data,
        list(task.default_slots),
        seed=args.seed,
        episode_length=2 * args.epochs + 2,
        batch_size=args.batch,
        max_batches=args.batches,
        device=device,
        acceleration=acceleration,
    )

    def epochs(start: int) -> list[float]:
        times = []
        for epoch in range(start, start + args.epochs):
            started = time.perf_counter()
            env.run_epoch(epoch)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - started)
        return times

    without = epochs(1)
    states = []
    for state in env.slot_states:
        env.model.germinate(
            state.slot_id,
            L.BlueprintAction.CONV_LIGHT,
            L.BlendId.SIGMOID,
            L.AlphaAlgorithm.ADD,
            seed_id=f"bench-{state.slot_id}",
        )
        change = germinate_state(
            state.slot_id,
            f"bench-{state.slot_id}",
            L.BlueprintAction.CONV_LIGHT,
            L.BlendId.SIGMOID,
            L.AlphaAlgorithm.ADD,
            5,
            1.0,
            1,
            env.host_params,
            10.0,
        )
        training = advance_state(change.state, permissive=True).state
        blending = msgspec.structs.replace(
            training, stage=L.SeedStage.BLENDING, controller=msgspec.structs.replace(training.controller, alpha=0.5)
        )
        states.append(blending)
    env.slot_states = states
    env.model.apply_states(states)
    with_seeds = epochs(args.epochs + 1)
    result = {
        "benchmark": "epochs",
        "task": task.name,
        "device": device,
        "device_name": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
        "autocast": str(acceleration.autocast_dtype),
        "compile": acceleration.compile,
        "batches": args.batches,
        "batch": args.batch,
        "without_seeds_s": without,
        "with_seeds_s": with_seeds,
        "seeds": [s.slot_id for s in states],
        "seed_params": env.model.active_seed_params,
        "median_ratio": statistics.median(with_seeds[1:] or with_seeds) / statistics.median(without[1:] or without),
    }
    _emit(result, args)
    return 0


# ---------------------------------------------------------------------------------------------- decision


async def decision_round_trips(iterations: int, hidden: int, nats_url: str | None) -> dict[str, Any]:
    """p50/p99 of StepRequest → Kasmina → Tamiyo (a fresh learned LSTM line) → StepDirective, on one bus.

    Measured next to a raw nats-py request/reply echo of the same bytes in the same session, so the ratio shows
    what the services add on top of the bus itself.
    """
    import msgspec

    import leyline_schemas as L
    from services.operator.run_client import bus_session
    from services.policy.network import NetworkConfig, seeded_network
    from services.policy.normalization import ObservationNormalizer
    from services.policy.pointers import put_weights, write_pointer
    from services.policy.weights import encode_policy
    from services.runtime import jetstream
    from services.runtime.bus import request

    policy_id = f"bench-decision-{int(time.time())}"
    step = msgspec.structs.replace(_lifecycle_request(3), policy_id=policy_id, run_id="bench-decision")
    config = NetworkConfig(num_slots=3, hidden=hidden, head_hidden=max(8, hidden // 2))
    blob = encode_policy(
        seeded_network(config, 0), ObservationNormalizer(config.obs_size), policy_id=policy_id, version=0
    )
    out_dir = Path(tempfile.mkdtemp(prefix="esper-bench-decision-"))
    async with bus_session(nats_url, out_dir) as nc:
        js = nc.jetstream()
        pointer = await put_weights(await jetstream.weights_store(js), policy_id, 0, blob)
        await write_pointer(await jetstream.policies_bucket(js), pointer)
        # Wait until Tamiyo serves the line (its first decisions may still be "policy unavailable").
        deadline = time.monotonic() + 60
        served = False
        while time.monotonic() < deadline:
            directive = await request(nc, L.subjects.KASMINA_STEP, step, L.StepDirective, timeout=10)
            if directive.decision is not None and directive.decision.policy_id == policy_id:
                served = True
                break
            await asyncio.sleep(0.2)
        if not served:
            raise RuntimeError(f"Tamiyo did not serve {policy_id} within 60 s")

        async def decide() -> None:
            await request(nc, L.subjects.KASMINA_STEP, step, L.StepDirective, timeout=10)

        payload = L.encode(step)
        echo_subject = f"esper.bench.echo.{policy_id}"

        async def respond(msg: Any) -> None:
            await msg.respond(msg.data)

        sub = await nc.subscribe(echo_subject, cb=respond)

        async def echo() -> None:
            await nc.request(echo_subject, payload, timeout=10)

        async def timed(fn: Callable[[], Any], n: int) -> list[float]:
            for _ in range(10):
                await fn()
            samples = []
            for _ in range(n):
                started = time.perf_counter()
                await fn()
                samples.append((time.perf_counter() - started) * 1000)
            return samples

        # Interleave the two in blocks so that a change in machine load hits both alike.
        decision_ms: list[float] = []
        echo_ms: list[float] = []
        block = max(1, iterations // 5)
        for _ in range(-(-iterations // block)):
            decision_ms += await timed(decide, block)
            echo_ms += await timed(echo, block)
        await sub.unsubscribe()
    d, e = percentiles(decision_ms), percentiles(echo_ms)
    return {
        "benchmark": "decision",
        "policy": f"learned LSTM, hidden {config.hidden}, head {config.head_hidden}, {config.num_slots} slots, CPU",
        "request_bytes": len(payload),
        "decision_ms": {k: v for k, v in d.items() if k != "n"},
        "echo_ms": {k: v for k, v in e.items() if k != "n"},
        "iterations": len(decision_ms),
        "p50_ratio": d["p50"] / e["p50"],
    }


def cmd_decision(args: argparse.Namespace) -> int:
    result = asyncio.run(decision_round_trips(args.iterations, args.hidden, args.nats))
    _emit(result, args)
    return 0


# ---------------------------------------------------------------------------------------------- all

# Each benchmark with the arguments `esper bench all` gives it: small enough for a laptop CPU in a few minutes.
ALL_BENCHMARKS: dict[str, list[str]] = {
    "overhead": ["--epochs", "4", "--batches", "20"],
    "kasmina": ["--iterations", "500", "--torch-iterations", "5", "--threads", "1"],
    "workers": ["--envs", "2", "--epochs", "5", "--batches", "10"],
    "learning": ["--rounds", "30", "--envs", "8", "--eval-episodes", "40"],
    "decision": ["--iterations", "300"],
}


def _run_captured(parser: argparse.ArgumentParser, argv: list[str]) -> dict[str, Any]:
    """Run one `esper bench` subcommand with --json and return the JSON it prints."""
    import contextlib
    import io

    args = parser.parse_args(["bench", *argv, "--json"])
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = args.func(args)
    text = buffer.getvalue()
    result = json.loads(text[text.index("{") :])
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
    from services.experiments.exam import provenance

    info = provenance()
    report = {"benchmarks": results, "seconds": seconds, "arguments": ALL_BENCHMARKS, "provenance": info}
    table = markdown_table(results, "# esper bench all")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "bench.json").write_text(json.dumps(report, indent=2) + "\n")
        from services.experiments.exam import provenance_markdown

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
            f" -> ratio {result['ratio']:.3f} (target <= {result['target_ratio']})"
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

    p = bsub.add_parser("decision", help="decision round trip tolaria→kasmina→tamiyo (LSTM, CPU) vs a nats echo")
    p.add_argument("--json", action="store_true")
    p.add_argument("--out", default=None)
    p.add_argument("--iterations", type=int, default=500)
    p.add_argument("--hidden", type=int, default=512, help="LSTM width (512 is the reference size)")
    p.add_argument("--nats", default=None, help="an existing bus (default: an embedded one)")
    p.set_defaults(func=cmd_decision)

    p = bsub.add_parser("all", help="every benchmark at a small size: one JSON and a markdown table")
    p.add_argument("--json", action="store_true")
    p.add_argument("--out", default=None, help="directory for bench.json and report.md")
    p.add_argument("--only", default=None, help="comma-separated subset, e.g. kasmina,decision")
    p.set_defaults(func=cmd_all)

    for module_name in ("services.experiments.commands", "services.operator.policy_commands", "services.operator.karn_commands"):
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
