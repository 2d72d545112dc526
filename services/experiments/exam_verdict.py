"""The final exam's judgement (reference/tamiyo_simic.md §7.6), pure: metrics per evaluation episode, the paired
bootstrap criteria and the overall verdict. `services.experiments.exam` runs the exam and reports it.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from services.experiments.statistics import bootstrap_interval, paired_difference

PPO_COHORTS = ("shaped", "simplified", "sparse")
BASELINES = ("heuristic", "random", "wait")  # heuristic = Control, wait = host-only baseline
COHORT_SOURCES = {"control": "heuristic", "shaped": "shaped", "simplified": "simplified", "sparse": "sparse"}
REPORTED = ("control", "shaped", "simplified", "sparse", "random", "wait")
MIN_PAIRS = 2
ROI_PER = 1000.0  # ROI is in accuracy points per 1,000 added parameters


@dataclass(frozen=True)
class Criterion:
    name: str
    metric: str
    treatment: str
    control: str
    essential: bool


CRITERIA = (
    Criterion("simplified_beats_shaped_on_roi", "roi", "simplified", "shaped", True),
    Criterion("simplified_beats_control_on_final_accuracy", "final_accuracy", "simplified", "control", True),
    Criterion("sparse_beats_chance", "final_accuracy", "sparse", "random", False),
)


# ------------------------------------------------------------------------------------------------ metrics


def roi(final_accuracy: float, baseline_accuracy: float, params_added: int) -> float:
    """Accuracy gain over the host-only baseline per 1,000 added parameters; 0 when nothing was added."""
    if params_added <= 0:
        return 0.0
    return (final_accuracy - baseline_accuracy) * ROI_PER / params_added


def entropy_slope(entropies: Sequence[float]) -> float | None:
    """Least-squares slope of entropy over update index (negative: the policy gets more decisive)."""
    n = len(entropies)
    if n < 2:
        return None
    xs = range(n)
    mx, my = (n - 1) / 2, statistics.fmean(entropies)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, entropies, strict=True)) / den


def mean_head_entropy(update: dict[str, Any]) -> float:
    heads = update.get("head_entropies") or {}
    return statistics.fmean(heads.values()) if heads else float(update.get("entropy", 0.0))


def paired_episodes(replicates: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Per cohort its evaluation episodes, in the same (replicate, env) order for every cohort, with ROI added."""
    cohorts: dict[str, list[dict[str, Any]]] = {name: [] for name in REPORTED}
    for index, replicate in enumerate(replicates):
        evaluation = replicate["evaluation"]
        by_cohort = {
            name: {e["env"]: e for e in evaluation[COHORT_SOURCES.get(name, name)]["per_episode"]} for name in REPORTED
        }
        envs = sorted(set.intersection(*(set(v) for v in by_cohort.values())))
        for env in envs:
            baseline = float(by_cohort["wait"][env]["final_accuracy"])
            for name in REPORTED:
                episode = dict(by_cohort[name][env])
                episode["replicate"] = index
                episode["roi"] = roi(float(episode["final_accuracy"]), baseline, int(episode["seed_params_added"]))
                cohorts[name].append(episode)
    return cohorts


def judge(treatment: Sequence[float], control: Sequence[float]) -> dict[str, Any]:
    """Paired bootstrap 95% interval of treatment − control and what it says."""
    if len(treatment) < MIN_PAIRS:
        return {"status": "inconclusive", "reason": f"fewer than {MIN_PAIRS} paired episodes", "n": len(treatment)}
    interval = paired_difference(treatment, control).as_dict()
    if interval["low"] > 0:
        status = "pass"
    elif interval["high"] < 0:
        status = "fail"
    else:
        status = "inconclusive"
    return {"status": status, "difference": interval}


def overall(criteria: dict[str, dict[str, Any]]) -> str:
    essential = [c for c in CRITERIA if c.essential]
    states = [criteria[c.name]["status"] for c in essential]
    if any(s == "fail" for s in states):
        return "FAIL"
    if all(s == "pass" for s in states):
        return "PASS"
    return "INCONCLUSIVE"


def lifecycle_efficiency(episodes: Sequence[dict[str, Any]]) -> dict[str, Any]:
    fossilized = sum(int(e.get("seeds_fossilized", 0)) for e in episodes)
    pruned = sum(int(e.get("seeds_pruned", 0)) for e in episodes)
    return {"fossilized": fossilized, "pruned": pruned, "ratio": round(fossilized / pruned, 3) if pruned else None}


def exam_verdict(replicates: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per cohort bootstrap intervals; per §7.6 criterion a paired interval and pass/fail/inconclusive."""
    cohorts = paired_episodes(replicates)
    summary: dict[str, Any] = {}
    for name, episodes in cohorts.items():
        if not episodes:
            summary[name] = {"episodes": 0}
            continue
        summary[name] = {
            "episodes": len(episodes),
            **{
                m: bootstrap_interval([float(e[m]) for e in episodes]).as_dict()
                for m in ("final_accuracy", "roi", "seed_params_added")
            },
            "lifecycle": lifecycle_efficiency(episodes),
        }
    for name in PPO_COHORTS:
        slopes = [s for r in replicates if (s := r.get("decisiveness", {}).get(name)) is not None]
        if name in summary:
            summary[name]["entropy_slope"] = bootstrap_interval(slopes).as_dict() if slopes else None
    criteria = {}
    for c in CRITERIA:
        treatment = [float(e[c.metric]) for e in cohorts[c.treatment]]
        control = [float(e[c.metric]) for e in cohorts[c.control]]
        criteria[c.name] = {
            "metric": c.metric,
            "treatment": c.treatment,
            "control": c.control,
            "essential": c.essential,
            **judge(treatment, control),
        }
    return {"overall": overall(criteria), "criteria": criteria, "cohorts": summary}


def mean_curves(replicates: Sequence[dict[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    """Per PPO cohort: mean over replicates of each training round's mean final accuracy."""
    curves: dict[str, list[tuple[int, float]]] = {}
    for name in PPO_COHORTS:
        rounds: dict[int, list[float]] = {}
        for replicate in replicates:
            for point in replicate["training"].get(name, {}).get("curve", []):
                rounds.setdefault(int(point["round"]), []).append(float(point["mean_final_accuracy"]))
        curves[name] = [(r, statistics.fmean(v)) for r, v in sorted(rounds.items())]
    return curves
