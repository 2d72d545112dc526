"""Reward-mode A/B experiments (reference/tamiyo_simic.md §7): arms trained concurrently on one bus, judged paired.

Each seed replicate trains every arm as its own learning run (own policy id, optimiser, normalisers and envs), all
with the replicate's seed, so env i of every arm sees the same hosts; the trained lines are then evaluated on the
same held-out seeds and compared episode by episode with bootstrap 95% intervals.
"""

from __future__ import annotations

import hashlib
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leyline_schemas import RewardMode
from services.experiments.plots import Panel, line_panels
from services.experiments.statistics import bootstrap_interval, paired_difference
from services.experiments.training import TrainingPlan, replicate_plan

VERDICT_METRICS = ("final_accuracy", "seeds_fossilized", "seed_params_added", "episode_return")
PRIMARY_METRIC = "final_accuracy"


@dataclass(frozen=True)
class ExperimentPlan:
    """An A/B over reward modes: `episodes` training episodes per arm and seed, `envs` envs per arm."""

    arms: tuple[RewardMode, ...]
    episodes: int = 8
    envs: int = 2
    task: str = "digits"
    seeds: int = 1
    base_seed: int = 42
    episode_length: int | None = None
    eval_episodes: int = 4
    max_batches: int = 0
    name: str = ""

    def __post_init__(self) -> None:
        # §7.2 / invariant 12.20: at least two arms, each reward mode once.
        if len(self.arms) < 2:
            raise ValueError(f"an A/B experiment needs at least two arms, got {len(self.arms)}")
        if len(set(self.arms)) != len(self.arms):
            raise ValueError(f"duplicate arms: {[a.value for a in self.arms]}")
        if self.seeds < 1 or self.envs < 1 or self.episodes < 1:
            raise ValueError("episodes, envs and seeds must be at least 1")

    @property
    def experiment_id(self) -> str:
        return self.name or "ab-" + hashlib.sha1(f"{time.time_ns()}".encode()).hexdigest()[:6]

    def training_plan(self, experiment_id: str, replicate: int) -> TrainingPlan:
        """One seed replicate: every arm gets its own fresh policy line, all share the replicate's seed."""
        return replicate_plan(
            experiment_id,
            replicate,
            self.arms,
            task=self.task,
            episodes=self.episodes,
            envs=self.envs,
            episode_length=self.episode_length,
            base_seed=self.base_seed,
            eval_episodes=self.eval_episodes,
            baselines=(),
            max_batches=self.max_batches,
        )


def verdict(arms: Sequence[str], replicates: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per arm and metric a bootstrap 95% interval; per metric the paired difference of each arm against the first.

    Evaluation episodes are paired by (replicate, env): the same held-out host for every arm.
    """
    per_arm: dict[str, dict[str, list[float]]] = {arm: {m: [] for m in VERDICT_METRICS} for arm in arms}
    for replicate in replicates:
        evaluation = replicate["evaluation"]
        envs = sorted({e["env"] for arm in arms for e in evaluation[arm]["per_episode"]})
        for arm in arms:
            by_env = {e["env"]: e for e in evaluation[arm]["per_episode"]}
            for env in envs:
                episode = by_env.get(env)
                if episode is None:
                    raise ValueError(f"arm {arm} has no evaluation episode for env {env}: pairing is broken")
                for metric in VERDICT_METRICS:
                    per_arm[arm][metric].append(float(episode[metric]))
    baseline = arms[0]
    metrics: dict[str, Any] = {}
    for metric in VERDICT_METRICS:
        metrics[metric] = {
            "per_arm": {arm: bootstrap_interval(per_arm[arm][metric]).as_dict() for arm in arms},
            "paired_differences": {
                f"{arm}_minus_{baseline}": paired_difference(per_arm[arm][metric], per_arm[baseline][metric]).as_dict()
                for arm in arms[1:]
            },
        }
    primary = metrics[PRIMARY_METRIC]["paired_differences"]
    decisions = {}
    for arm in arms[1:]:
        interval = primary[f"{arm}_minus_{baseline}"]
        if interval["low"] > 0:
            decisions[arm] = f"{arm} beats {baseline}"
        elif interval["high"] < 0:
            decisions[arm] = f"{baseline} beats {arm}"
        else:
            decisions[arm] = "no significant difference"
    return {
        "primary_metric": PRIMARY_METRIC,
        "note": "episode_return is in each arm's own reward units and is not comparable across arms",
        "metrics": metrics,
        "decisions": decisions,
    }


def mean_curves(arms: Sequence[str], replicates: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, float]]]:
    """Per arm and training round, the mean over replicates of the round's mean accuracy and return."""
    curves: dict[str, list[dict[str, float]]] = {}
    for arm in arms:
        rounds: dict[int, list[dict[str, Any]]] = {}
        for replicate in replicates:
            for point in replicate["training"][arm]["curve"]:
                rounds.setdefault(int(point["round"]), []).append(point)
        curves[arm] = [
            {
                "round": float(r),
                "mean_final_accuracy": statistics.fmean(p["mean_final_accuracy"] for p in points),
                "mean_return": statistics.fmean(p["mean_return"] for p in points),
            }
            for r, points in sorted(rounds.items())
        ]
    return curves


def plot_curves(curves: dict[str, list[dict[str, float]]], path: Path) -> Path:
    """Learning curves of every arm: accuracy and return per round, side by side."""
    return line_panels(
        curves,
        "round",
        (
            Panel("mean_final_accuracy", "final accuracy per round", "round", "accuracy (%)"),
            Panel("mean_return", "episode return per round (own reward)", "round", "return"),
        ),
        path,
    )
