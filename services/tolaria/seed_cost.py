"""`esper bench seeds`: what seeds cost an epoch, and what the counterfactual validation costs within it.

Three envs on the same task, data and seed run side by side, their epochs interleaved round by round: one with no
seed, one with a seed in the first default slot and one with a seed in each of the first three, every seed
CONV_LIGHT and BLENDING (the workload of issue 16 and of the reference figures it quotes). Each epoch is timed whole
and split as Tolaria reports it (train, validate). On the three-seed model the validation is then run both ways,
alternating: the config walk the env uses (`MorphogeneticModel.forward_configs`) and the stacked pass it replaced
(all configurations as one batch of K × B through `fused_forward`), with the accuracies each gives.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch
from torch import Tensor

from services.kasmina.mechanics.model import MorphogeneticModel, build_alpha_overrides, expand_for_configs
from services.tolaria.bench import blend_a_seed_in_every_slot
from services.tolaria.env import EpisodeEnv
from services.tolaria.tasks import get_task
from services.tolaria.validation import counterfactual_configs, fused_validate, measured_slots

#: The epoch ratios (seeded / seedless) issue 16 asks for, and the reference monolith's on the same work.
TARGET_RATIO = {1: 1.25, 3: 2.0}
REFERENCE_RATIO = {1: 1.82, 3: 6.00}
SEED_COUNTS = (0, 1, 3)


def stacked_accuracies(
    model: MorphogeneticModel, batches: list[tuple[Tensor, Tensor]], device: torch.device
) -> dict[str, float]:
    """Every counterfactual configuration's accuracy from one stacked pass per batch (the pre-walk validation)."""
    named = counterfactual_configs(measured_slots(model))
    alphas = [a for _, a in named]
    correct = [0.0] * len(named)
    count = 0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for x_host, y_host in batches:
            x, y = x_host.to(device), y_host.to(device)
            b = x.shape[0]
            logits = model.fused_forward(expand_for_configs(x, len(alphas)), build_alpha_overrides(model, alphas, b))
            hits = (logits.argmax(-1) == y.repeat(len(alphas))).float().view(len(alphas), b).sum(dim=1).tolist()
            correct = [c + h for c, h in zip(correct, hits, strict=True)]
            count += b
    model.train(was_training)
    return {name: 100.0 * c / max(1, count) for (name, _), c in zip(named, correct, strict=True)}


def _env(task_name: str, synthetic: bool, seeds: int, batches: int, batch: int, seed: int, rounds: int) -> EpisodeEnv:
    task = get_task(task_name)
    env = EpisodeEnv(
        task,
        task.load_data(seed, synthetic, None),
        list(task.default_slots),
        seed=seed,
        episode_length=rounds + 2,
        batch_size=batch,
        max_batches=batches,
    )
    if seeds:
        blend_a_seed_in_every_slot(env, list(task.default_slots)[:seeds])
    return env


def seed_cost(
    *, task_name: str, synthetic: bool, rounds: int, batches: int, batch: int, seed: int, validation_repeats: int
) -> dict[str, Any]:
    """Epoch cost with 0, 1 and 3 seeds, interleaved, and the 3-seed validation by config walk and stacked pass."""
    task = get_task(task_name)
    if len(task.default_slots) < max(SEED_COUNTS):
        raise ValueError(f"{task_name} has {len(task.default_slots)} default slots; this benchmark seats up to 3")
    envs = {n: _env(task_name, synthetic, n, batches, batch, seed, rounds) for n in SEED_COUNTS}
    runs: dict[int, dict[str, list[float]]] = {n: {"epoch_s": [], "train_s": [], "validate_s": []} for n in envs}
    configs: dict[int, int] = {}
    counterfactual_flops: dict[int, float] = {}
    for epoch in range(1, rounds + 1):
        for n, env in envs.items():
            started = time.perf_counter()
            outcome = env.run_epoch(epoch)
            runs[n]["epoch_s"].append(time.perf_counter() - started)
            compute = outcome.report.compute
            assert compute is not None
            runs[n]["train_s"].append(compute.train_seconds)
            runs[n]["validate_s"].append(compute.validate_seconds)
            configs[n] = compute.validation_configs
            counterfactual_flops[n] = compute.val_flops_counterfactual / max(1, compute.val_flops_main)

    def median(n: int, key: str) -> float:
        values = runs[n][key]
        return statistics.median(values[1:] or values)  # the first round warms allocators and caches

    three = envs[3]
    walk_s, stacked_s = [], []
    walk_accuracy: dict[str, float] = {}
    stacked_accuracy: dict[str, float] = {}
    for _ in range(validation_repeats):
        started = time.perf_counter()
        walk_accuracy = fused_validate(three.model, three.val_batches, three.device).configs
        walk_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        stacked_accuracy = stacked_accuracies(three.model, three.val_batches, three.device)
        stacked_s.append(time.perf_counter() - started)
    base = median(0, "epoch_s")
    return {
        "benchmark": "seeds",
        "task": task_name,
        "synthetic": synthetic,
        "threads": torch.get_num_threads(),
        "batches": batches,
        "batch": batch,
        "val_samples": three.val_samples,
        "rounds": rounds,
        "runs": {str(n): runs[n] for n in envs},
        "median": {str(n): {key: median(n, key) for key in runs[n]} for n in envs},
        "validation_configs": {str(n): configs[n] for n in envs},
        "counterfactual_flops_over_main": {str(n): counterfactual_flops[n] for n in envs},
        "ratio": {str(n): median(n, "epoch_s") / base for n in envs if n},
        "target_ratio": {str(n): r for n, r in TARGET_RATIO.items()},
        "reference_ratio": {str(n): r for n, r in REFERENCE_RATIO.items()},
        "validation_3_seeds": {
            "walk_s": walk_s,
            "stacked_s": stacked_s,
            "stacked_over_walk": statistics.median(stacked_s) / statistics.median(walk_s),
            "max_accuracy_gap": max(abs(walk_accuracy[k] - stacked_accuracy[k]) for k in walk_accuracy),
        },
    }


def summary(result: dict[str, Any]) -> str:
    """One line per seed count and one for the validation comparison."""
    lines = []
    for n in SEED_COUNTS:
        m = result["median"][str(n)]
        line = (
            f"{n} seeds: epoch {m['epoch_s']:.3f}s (train {m['train_s']:.3f}s, validate {m['validate_s']:.3f}s, "
            f"{result['validation_configs'][str(n)]} configs, counterfactual FLOPs "
            f"x{result['counterfactual_flops_over_main'][str(n)]:.2f} of main)"
        )
        if n:
            line += (
                f" -> x{result['ratio'][str(n)]:.2f} of seedless (target <= {result['target_ratio'][str(n)]:.2f}, "
                f"reference x{result['reference_ratio'][str(n)]:.2f})"
            )
        lines.append(line)
    v = result["validation_3_seeds"]
    lines.append(
        f"3-seed validation: config walk {statistics.median(v['walk_s']):.3f}s, stacked pass "
        f"{statistics.median(v['stacked_s']):.3f}s (x{v['stacked_over_walk']:.1f}), "
        f"largest accuracy gap {v['max_accuracy_gap']:.3f} points"
    )
    return "\n".join(lines)
