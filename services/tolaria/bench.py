"""Tolaria's side of `esper bench`: the bare training loop, epoch times on a device and each blueprint's cost.

These run in one process without the bus; seeds are seated with the lifecycle surface Kasmina lends
(`services.kasmina.mechanics.lifecycle`), as the env itself does.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import msgspec
import torch
import torch.nn.functional as F

import leyline_schemas as L
from leyline_schemas.lifecycle import internal_spec
from services.kasmina.mechanics.lifecycle import advance_state, germinate_state
from services.kasmina.mechanics.model import MorphogeneticModel
from services.runtime.settings import resolve_device
from services.runtime.timing import time_calls
from services.tolaria.acceleration import choose
from services.tolaria.data import BatchStream
from services.tolaria.env import EpisodeEnv
from services.tolaria.tasks import get_task


def bench_blueprints(iterations: int, batch: int) -> dict[str, Any]:
    """Forward+backward of host+seed at cifar_baseline shapes, as a ratio to the bare host, per CNN blueprint."""
    task = get_task("cifar_baseline")
    torch.manual_seed(0)
    x = torch.randn(batch, 3, 32, 32)
    y = torch.randint(0, 10, (batch,))

    def step_time(model: torch.nn.Module) -> float:
        def one() -> None:
            model.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()  # type: ignore[no-untyped-call]  # torch's backward is unannotated

        return statistics.median(time_calls(one, iterations, warmup=3)) * 1000

    bare = step_time(MorphogeneticModel(task.build_host(), ["r0c1"]))
    results: dict[str, Any] = {"host_ms": bare, "slot": "r0c1", "batch": batch, "blueprints": {}}
    for blueprint in L.CNN_BLUEPRINTS:
        if blueprint is L.BlueprintAction.NOOP:
            continue
        model = MorphogeneticModel(task.build_host(), ["r0c1"])
        model.germinate("r0c1", blueprint, L.BlendId.SIGMOID, L.AlphaAlgorithm.ADD, seed_id="bench")
        internals = internal_spec(blueprint)  # a ladder runs at its initial level, as germinated
        model.slot("r0c1").sync(
            L.SlotState(
                slot_id="r0c1",
                stage=L.SeedStage.BLENDING,
                seed_id="bench",
                blueprint=blueprint,
                controller=L.AlphaControllerState(alpha=0.5, alpha_target=1.0),
                isolate_gradients=True,
                internal_kind=internals.kind,
                internal_level=internals.initial_level,
                internal_max_level=internals.max_level,
            )
        )
        ms = step_time(model)
        results["blueprints"][L.blueprint_name(blueprint)] = {
            "ms": ms,
            "ratio": ms / bare,
            "seed_params": model.active_seed_params,
        }
    return results


def bare_loop_epoch_times(epochs: int, batches: int, batch: int, seed: int) -> list[float]:
    """A plain PyTorch loop: the cifar_baseline host, SGD, the same synthetic data, train + validation per epoch."""
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
            loss.backward()  # type: ignore[no-untyped-call]  # torch's backward is unannotated
            torch.nn.utils.clip_grad_norm_(host.parameters(), 1.0)
            optimizer.step()
        host.eval()
        with torch.inference_mode():
            for xb, yb in val:
                F.cross_entropy(host(xb), yb)
        times.append(time.perf_counter() - started)
    return times


def epoch_times(
    *,
    task_name: str,
    synthetic: bool,
    device_name: str,
    amp: str,
    compile_model: bool,
    epochs: int,
    batches: int,
    batch: int,
    seed: int,
) -> dict[str, Any]:
    """Epoch times of one env on a device, without seeds and then with a blending seed in every slot."""
    device = resolve_device(device_name)
    task = get_task(task_name)
    data = task.load_data(seed, synthetic, None)
    acceleration = choose(device, amp, compile_model)
    env = EpisodeEnv(
        task,
        data,
        list(task.default_slots),
        seed=seed,
        episode_length=2 * epochs + 2,
        batch_size=batch,
        max_batches=batches,
        device=device,
        acceleration=acceleration,
    )

    def timed_epochs(start: int) -> list[float]:
        times = []
        for epoch in range(start, start + epochs):
            started = time.perf_counter()
            env.run_epoch(epoch)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - started)
        return times

    without = timed_epochs(1)
    states = blend_a_seed_in_every_slot(env)
    with_seeds = timed_epochs(epochs + 1)
    return {
        "benchmark": "epochs",
        "task": task.name,
        "device": device,
        "device_name": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
        "autocast": str(acceleration.autocast_dtype),
        "compile": acceleration.compile,
        "batches": batches,
        "batch": batch,
        "without_seeds_s": without,
        "with_seeds_s": with_seeds,
        "seeds": [s.slot_id for s in states],
        "seed_params": env.model.active_seed_params,
        "median_ratio": statistics.median(with_seeds[1:] or with_seeds) / statistics.median(without[1:] or without),
    }


def blend_a_seed_in_every_slot(env: EpisodeEnv, slots: list[str] | None = None) -> list[L.SlotState]:
    """Seat a CONV_LIGHT seed, BLENDING at α 0.5, in every slot of `env` or those named (as Kasmina would have).

    Returns the seeded slots' states; the others keep theirs.
    """
    states, seeded = [], []
    for state in env.slot_states:
        if slots is not None and state.slot_id not in slots:
            states.append(state)
            continue
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
        seeded.append(blending)
    env.slot_states = states
    env.model.apply_states(states)
    return seeded


def checkpoint_cost(
    *, task_name: str, synthetic: bool, epochs: int, batches: int, batch: int, seed: int
) -> dict[str, Any]:
    """A host checkpoint's cost beside the epoch it follows, on one env with a blending seed in every slot: epoch,
    capture and restore times (medians, measured alternately in one process) and the blob's size."""
    from services.tolaria.host_checkpoint import EpisodeKey, EpisodeProgress, capture, restore

    task = get_task(task_name)
    data = task.load_data(seed, synthetic, None)

    def build() -> EpisodeEnv:
        return EpisodeEnv(
            task,
            data,
            list(task.default_slots),
            seed=seed,
            episode_length=epochs + 2,
            batch_size=batch,
            max_batches=batches,
        )

    env = build()
    blend_a_seed_in_every_slot(env)
    key = EpisodeKey(run_id="bench", env_id=0, episode=0, task=task.name, seed=seed)
    epoch_s, capture_s, restore_s, size = [], [], [], 0
    for epoch in range(1, epochs + 1):
        started = time.perf_counter()
        env.run_epoch(epoch)
        trained = time.perf_counter()
        blob = capture(env, EpisodeProgress(epoch=0), key)
        captured = time.perf_counter()
        fresh = build()  # a worker that takes the episode over builds its env anyway
        loading = time.perf_counter()
        restore(fresh, blob, key)
        restored = time.perf_counter()
        epoch_s.append(trained - started)
        capture_s.append(captured - trained)
        restore_s.append(restored - loading)
        size = len(blob)
    epoch_median = statistics.median(epoch_s)
    return {
        "benchmark": "checkpoint",
        "task": task.name,
        "batches": batches,
        "batch": batch,
        "seed_params": env.model.active_seed_params,
        "total_params": env.model.total_params,
        "epoch_s": epoch_s,
        "capture_s": capture_s,
        "restore_s": restore_s,
        "blob_bytes": size,
        "capture_over_epoch": statistics.median(capture_s) / epoch_median,
        "restore_over_epoch": statistics.median(restore_s) / epoch_median,
    }
