"""The ladder experiment's exit gates A1–A7 (plans/kasmina2-phase0.md §12.1–12.2), from what the runs recorded.

Pure: every figure comes from the replicates' training curves and episodes, their held-out evaluations, and Karn's
ladder reports of the training runs (per episode over the last half of the rounds, and over the whole run). A check
is PASS, FAIL or INCONCLUSIVE (its precondition does not hold, or the runs gave it nothing to judge).
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from services.experiments.cluster_statistics import cluster_paired_difference
from services.experiments.statistics import bootstrap_interval, paired_difference

CONTROL, TREATMENT, WAIT = "control", "treatment", "wait"
PASS, FAIL, INCONCLUSIVE = "PASS", "FAIL", "INCONCLUSIVE"
USAGE_TARGET = 0.10
INVALID_MARGIN = 0.01
HEAVY_PRECONDITION = 0.20
HEAVY_RATIO = 0.75
ROI_RATIO = 0.9
ACCURACY_MEAN_FLOOR = -0.5
ACCURACY_LOW_FLOOR = -1.0
ENTROPY_FLOORS = {"op": 0.30, "slot": 0.15}
ENTROPY_RUN = 5
MEDIAN_REVERSAL_CEILING = 0.5
THRASH_SHARE_CEILING = 0.10
DENSITY_CEILING = 0.4
SETTLED_FLOOR = 0.6
DENSITY_DRIFT = 0.05


@dataclass(frozen=True)
class Replicate:
    """What one seed replicate produced, per arm: `training[arm]` (curve, episodes), `evaluation[name]`
    (per_episode rows of control, treatment and wait), `last_half[arm]` (one ladder report per training episode of
    the last half, in episode order), `whole[arm]`, `first_quarter[arm]`, `last_quarter[arm]` (ladder reports) and
    `widths[arm]` ({"records", "wrong"}: step records whose observation width is not 25 + 32·S)."""

    training: dict[str, dict[str, Any]]
    evaluation: dict[str, dict[str, Any]]
    last_half: dict[str, list[dict[str, Any]]]
    whole: dict[str, dict[str, Any]]
    first_quarter: dict[str, dict[str, Any]]
    last_quarter: dict[str, dict[str, Any]]
    widths: dict[str, dict[str, int]]


def _check(status: str, **figures: Any) -> dict[str, Any]:
    return {"status": status, **figures}


def _ratio(part: float, whole: float) -> float | None:
    return part / whole if whole else None


def _sum(reports: Sequence[dict[str, Any]], key: Callable[[dict[str, Any]], float]) -> float:
    return float(sum(key(r) for r in reports))


def usage(reports: Sequence[dict[str, Any]]) -> float:
    """U: internal ops over non-WAIT ops, on sampled ladder-present steps (0 when nothing acted)."""
    acted = _sum(reports, lambda r: r["usage"]["non_wait_ops"])
    return _sum(reports, lambda r: r["usage"]["internal_ops"]) / acted if acted else 0.0


def heavy_share(reports: Sequence[dict[str, Any]]) -> float | None:
    """H: applied conv_heavy germinations over applied germinations."""
    germinated = _sum(reports, lambda r: sum(r["germinations"].values()))
    return _ratio(_sum(reports, lambda r: r["germinations"].get("conv_heavy", 0)), germinated)


def a1_usage(replicates: Sequence[Replicate]) -> dict[str, Any]:
    per = [usage(r.last_half[TREATMENT]) for r in replicates]
    pooled = usage([rep for r in replicates for rep in r.last_half[TREATMENT]])
    needed = min(2, len(replicates))
    ladders = sum(r.whole[TREATMENT]["germinations"].get("conv_ladder", 0) for r in replicates)
    events = sum(r.whole[TREATMENT]["level_events"] for r in replicates)
    applied = sum(r.whole[TREATMENT]["applied_internal_ops"] for r in replicates)
    ok = pooled >= USAGE_TARGET and sum(u >= USAGE_TARGET for u in per) >= needed and ladders >= 1 and events == applied
    return _check(
        PASS if ok else FAIL,
        usage_pooled=pooled,
        usage_per_replicate=per,
        replicates_at_target=f"{sum(u >= USAGE_TARGET for u in per)} of {len(per)} (need {needed})",
        ladders_germinated=ladders,
        level_events=events,
        applied_internal_ops=applied,
    )


def _invalid_rate(reports: Sequence[dict[str, Any]]) -> float:
    return _ratio(_sum(reports, lambda r: r["invalid_actions"]), _sum(reports, lambda r: r["sampled_decisions"])) or 0.0


def a2_validity(replicates: Sequence[Replicate]) -> dict[str, Any]:
    rates = {arm: _invalid_rate([rep for r in replicates for rep in r.last_half[arm]]) for arm in (CONTROL, TREATMENT)}
    ok = rates[TREATMENT] <= rates[CONTROL] + INVALID_MARGIN
    return _check(PASS if ok else FAIL, invalid_rate=rates, margin=INVALID_MARGIN)


def _paired_ratio_difference(
    pairs: Sequence[tuple[tuple[float, float], tuple[float, float]]], *, resamples: int = 2000, seed: int = 0
) -> dict[str, float] | None:
    """Bootstrap of (Σa_t/Σb_t − Σa_c/Σb_c) over paired episodes ((a_t, b_t), (a_c, b_c)); None when undefined."""

    def diff(sample: Sequence[tuple[tuple[float, float], tuple[float, float]]]) -> float | None:
        t = _ratio(sum(p[0][0] for p in sample), sum(p[0][1] for p in sample))
        c = _ratio(sum(p[1][0] for p in sample), sum(p[1][1] for p in sample))
        return None if t is None or c is None else t - c

    point = diff(pairs)
    if point is None:
        return None
    rng = random.Random(seed)
    draws = sorted(d for d in (diff(rng.choices(pairs, k=len(pairs))) for _ in range(resamples)) if d is not None)
    return {"mean": point, "low": draws[int(0.025 * (len(draws) - 1))], "high": draws[int(0.975 * (len(draws) - 1))]}


def _germination_counts(report: dict[str, Any]) -> tuple[float, float]:
    return float(report["germinations"].get("conv_heavy", 0)), float(sum(report["germinations"].values()))


def a3_dominance(replicates: Sequence[Replicate]) -> dict[str, Any]:
    h = {arm: heavy_share([rep for r in replicates for rep in r.last_half[arm]]) for arm in (CONTROL, TREATMENT)}
    control = h[CONTROL]
    if control is None or control < HEAVY_PRECONDITION:
        return _check(INCONCLUSIVE, heavy_share=h, why=f"control H below {HEAVY_PRECONDITION}: use the GPU gate")
    pairs = [
        (_germination_counts(t), _germination_counts(c))
        for r in replicates
        for t, c in zip(r.last_half[TREATMENT], r.last_half[CONTROL], strict=True)
    ]
    interval = _paired_ratio_difference(pairs)
    share = h[TREATMENT]
    ok = (share or 0.0) <= HEAVY_RATIO * control and interval is not None and interval["high"] < 0
    return _check(PASS if ok else FAIL, heavy_share=h, difference=interval)


def _paired_eval(replicates: Sequence[Replicate]) -> list[dict[str, dict[str, Any]]]:
    """(replicate, env) → each contender's held-out episode: the same host for all three."""
    pairs = []
    for r in replicates:
        by_env = {name: {e["env"]: e for e in r.evaluation[name]["per_episode"]} for name in (CONTROL, TREATMENT, WAIT)}
        for env in sorted(by_env[WAIT]):
            if all(env in by_env[name] for name in (CONTROL, TREATMENT)):
                pairs.append({name: by_env[name][env] for name in (CONTROL, TREATMENT, WAIT)})
    return pairs


def roi(pairs: Sequence[dict[str, dict[str, Any]]], arm: str) -> float | None:
    """Accuracy points over the wait policy per 1k parameters added, as a ratio of sums."""
    gained = sum(p[arm]["final_accuracy"] - p[WAIT]["final_accuracy"] for p in pairs)
    return _ratio(gained, sum(p[arm]["seed_params_added"] / 1000 for p in pairs))


def accuracy_difference_by_replicate(replicates: Sequence[Replicate]) -> dict[str, Any]:
    """Treatment − control final accuracy, cluster-bootstrapped by replicate: the pairs of one replicate share its
    two trained lines, so they are not independent (reported beside the gate's pair bootstrap, not gating)."""
    diffs = {
        k: [p[TREATMENT]["final_accuracy"] - p[CONTROL]["final_accuracy"] for p in _paired_eval([r])]
        for k, r in enumerate(replicates)
    }
    diffs = {k: v for k, v in diffs.items() if v}
    if not diffs:
        return {}
    return cluster_paired_difference(diffs, level=0.95).as_dict()


def a4_roi(replicates: Sequence[Replicate]) -> dict[str, Any]:
    pairs = _paired_eval(replicates)
    if not pairs:
        return _check(INCONCLUSIVE, why="no paired evaluation episodes")
    rois = {arm: roi(pairs, arm) for arm in (CONTROL, TREATMENT)}
    accuracy = paired_difference(
        [p[TREATMENT]["final_accuracy"] for p in pairs], [p[CONTROL]["final_accuracy"] for p in pairs]
    ).as_dict()
    figures = {
        "roi": rois,
        "accuracy_difference": accuracy,
        "accuracy_difference_by_replicate": accuracy_difference_by_replicate(replicates),
        "pairs": len(pairs),
    }
    control, treated = rois[CONTROL], rois[TREATMENT]
    if control is None or treated is None:
        return _check(INCONCLUSIVE, why="an arm added no parameters on the held-out episodes", **figures)
    roi_ok = treated >= control - (1 - ROI_RATIO) * abs(control)
    ok = roi_ok and accuracy["mean"] >= ACCURACY_MEAN_FLOOR and accuracy["low"] >= ACCURACY_LOW_FLOOR
    return _check(PASS if ok else FAIL, **figures)


def longest_run_below(values: Sequence[float | None], floor: float) -> int:
    """The most consecutive updates whose entropy is below `floor`."""
    best = run = 0
    for value in values:
        run = run + 1 if value is not None and value < floor else 0
        best = max(best, run)
    return best


def a5_stability(replicates: Sequence[Replicate]) -> dict[str, Any]:
    collapses: dict[str, list[dict[str, int]]] = {head: [] for head in ENTROPY_FLOORS}
    ok = True
    for r in replicates:
        for head, floor in ENTROPY_FLOORS.items():
            runs = {
                arm: longest_run_below([row["head_entropies"].get(head) for row in r.training[arm]["curve"]], floor)
                for arm in (CONTROL, TREATMENT)
            }
            collapses[head].append(runs)
            ok &= runs[TREATMENT] < ENTROPY_RUN or runs[CONTROL] >= ENTROPY_RUN
    episodes = {arm: [e for r in replicates for e in r.training[arm]["episodes"]] for arm in (CONTROL, TREATMENT)}
    rollbacks = {arm: 100 * _sum(eps, lambda e: e["rollbacks"]) / max(1, len(eps)) for arm, eps in episodes.items()}
    skipped = {
        arm: sum(1 for r in replicates for row in r.training[arm]["curve"] if row.get("skipped")) for arm in episodes
    }
    ok &= rollbacks[TREATMENT] <= rollbacks[CONTROL] + max(1.0, 0.1 * rollbacks[CONTROL])
    ok &= skipped[TREATMENT] <= skipped[CONTROL]
    return _check(
        PASS if ok else FAIL,
        entropy_runs_below_floor=collapses,
        rollbacks_per_100_episodes=rollbacks,
        skipped_updates=skipped,
    )


def a6_thrash(replicates: Sequence[Replicate]) -> dict[str, Any]:
    seeds = [s for r in replicates for s in r.whole[TREATMENT]["seeds"]]
    turned = [s["reversal_rate"] for s in seeds if s["ops"] >= 2]
    busy = [s for s in seeds if s["ops"] >= 4]
    moved = [s for s in seeds if s["ops"] >= 1]
    if not moved:
        return _check(INCONCLUSIVE, ladder_seeds=len(seeds), why="no ladder seed changed level")

    def mean_density(reports: Sequence[dict[str, Any]]) -> float | None:
        values = [s["density"] for rep in reports for s in rep["seeds"]]
        return statistics.fmean(values) if values else None

    first = mean_density([r.first_quarter[TREATMENT] for r in replicates])
    last = mean_density([r.last_quarter[TREATMENT] for r in replicates])
    figures: dict[str, Any] = {
        "ladder_seeds": len(seeds),
        "median_reversal_rate": statistics.median(turned) if turned else None,
        "thrash_share": sum(1 for s in busy if s["reversal_rate"] > 0.7) / len(busy) if busy else None,
        "mean_density": statistics.fmean(s["density"] for s in seeds),
        "settled_share": sum(1 for s in moved if s["settled"]) / len(moved),
        "density_first_quarter": first,
        "density_last_quarter": last,
    }
    tests = [
        figures["median_reversal_rate"] is None or figures["median_reversal_rate"] <= MEDIAN_REVERSAL_CEILING,
        figures["thrash_share"] is None or figures["thrash_share"] <= THRASH_SHARE_CEILING,
        figures["mean_density"] <= DENSITY_CEILING,
        figures["settled_share"] >= SETTLED_FLOOR,
        first is None or last is None or last <= first + DENSITY_DRIFT,
    ]
    return _check(PASS if all(tests) else FAIL, **figures)


def a7_plumbing(replicates: Sequence[Replicate]) -> dict[str, Any]:
    widths = {
        arm: {
            "records": sum(r.widths[arm]["records"] for r in replicates),
            "wrong": sum(r.widths[arm]["wrong"] for r in replicates),
        }
        for arm in (CONTROL, TREATMENT)
    }
    post_op = [r.whole[TREATMENT]["post_op"] for r in replicates]
    ok = all(w["wrong"] == 0 and w["records"] > 0 for w in widths.values()) and all(post_op)
    return _check(PASS if ok else FAIL, observation_widths=widths, post_op_deltas=post_op)


def ladder_verdict(replicates: Sequence[Replicate]) -> dict[str, Any]:
    """A1–A7 over all replicates, each with its figures."""
    if not replicates:
        raise ValueError("a ladder verdict needs at least one replicate")
    checks = {
        "A1_usage": a1_usage(replicates),
        "A2_validity": a2_validity(replicates),
        "A3_dominance": a3_dominance(replicates),
        "A4_roi": a4_roi(replicates),
        "A5_stability": a5_stability(replicates),
        "A6_thrash": a6_thrash(replicates),
        "A7_plumbing": a7_plumbing(replicates),
    }
    final_accuracy = (
        {
            arm: bootstrap_interval([p[arm]["final_accuracy"] for p in _paired_eval(replicates)]).as_dict()
            for arm in (CONTROL, TREATMENT, WAIT)
        }
        if _paired_eval(replicates)
        else {}
    )
    return {"checks": checks, "final_accuracy": final_accuracy, "replicates": len(replicates)}
