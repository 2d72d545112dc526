"""The phase-1 "final exam" (reference/tamiyo_simic.md §7.6): `esper experiment reward-efficiency`.

Cohorts: Control (the heuristic) and one PPO line per reward mode (SHAPED, SIMPLIFIED, SPARSE), at most two active
seeds per env. Every replicate trains the three lines concurrently on the same seed (env i of every line sees the
same hosts), then plays the trained lines (greedy), the heuristic, `random` and `wait` (the host-only baseline) on
the same held-out seeds, so every comparison is paired episode by episode.

Metrics per evaluation episode: final accuracy, accuracy ROI = (acc_final − acc_wait on the same env) per 1,000
added parameters (0 when the episode added none), fossilized and pruned seeds. Per PPO line: decisiveness = the
least-squares slope of the mean head entropy over its updates (negative = more decisive).

Criteria (§7.6): SIMPLIFIED beats SHAPED on ROI (essential); SIMPLIFIED beats Control on final accuracy
(essential); SPARSE beats `random` on final accuracy (stretch). Each is a paired bootstrap 95% interval of the
difference: above 0 passes, below 0 fails, otherwise (or with fewer than two pairs) inconclusive.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nats.aio.client import Client

from leyline_schemas import ArmSpec, PPOUpdateCompleted, RewardMode, TelemetryEvent, decode, subjects
from leyline_schemas.policy_ids import GREEDY_SUFFIX
from services.experiments.plots import pyplot
from services.experiments.statistics import bootstrap_interval, paired_difference
from services.experiments.training import TrainingPlan, evaluate_on, train_on

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


# ------------------------------------------------------------------------------------------------ provenance


def provenance(command: Sequence[str] | None = None) -> dict[str, str]:
    """The exact command and the versions (python, torch, esper commit) that produced a result."""
    import torch

    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True).stdout.strip()
        )
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = "unknown", False
    argv = list(command if command is not None else sys.argv)
    if argv and argv[0].endswith("esper"):
        argv[0] = "esper"
    return {
        "command": " ".join(argv),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "esper_commit": commit + (" (working tree had uncommitted changes)" if dirty else ""),
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} CPU cores",
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
    }


def provenance_markdown(info: dict[str, str]) -> str:
    return "\n".join(
        [
            "## Reproduce",
            "",
            "```",
            info["command"],
            "```",
            "",
            f"python {info['python']}, torch {info['torch']}, esper commit `{info['esper_commit']}`, "
            f"{info['machine']}, {info['date_utc']} UTC.",
        ]
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


# ------------------------------------------------------------------------------------------------ report


def _cell(interval: dict[str, Any] | None, digits: int = 2) -> str:
    if not interval:
        return "–"
    return f"{interval['mean']:.{digits}f} [{interval['low']:.{digits}f}, {interval['high']:.{digits}f}]"


def report_markdown(result: dict[str, Any]) -> str:
    verdict = result["verdict"]
    settings = result["settings"]
    lines = [
        "# Reward-efficiency exam (tamiyo_simic.md §7.6)",
        "",
        f"**Verdict: {verdict['overall']}** — task `{settings['task']}`, {settings['seeds']} seed replicate(s), "
        f"{settings['episodes']} training episodes per cohort and replicate on {settings['envs']} envs, "
        f"{settings['eval_episodes']} held-out evaluation episodes per cohort and replicate, "
        f"episode length {settings['episode_length']}, max_seeds {settings['max_seeds']}.",
        "",
        "| criterion | essential | paired difference, 95% CI | status |",
        "|---|---|---|---|",
    ]
    for name, c in verdict["criteria"].items():
        diff = _cell(c.get("difference"), 3) if "difference" in c else c.get("reason", "")
        lines.append(f"| {name} ({c['metric']}) | {'yes' if c['essential'] else 'stretch'} | {diff} | {c['status']} |")
    lines += [
        "",
        "| cohort | final accuracy % | ROI (acc pts / 1k params) | params added | fossilized:pruned | entropy slope |",
        "|---|---|---|---|---|---|",
    ]
    for name, s in verdict["cohorts"].items():
        if not s.get("episodes"):
            continue
        life = s["lifecycle"]
        ratio = f"{life['fossilized']}:{life['pruned']}"
        lines.append(
            f"| {name} | {_cell(s['final_accuracy'])} | {_cell(s['roi'], 3)} | {_cell(s['seed_params_added'], 0)} | "
            f"{ratio} | {_cell(s.get('entropy_slope'), 4)} |"
        )
    lines += [
        "",
        "Intervals are percentile bootstrap 95% intervals of the mean over evaluation episodes; criteria use the",
        "paired difference (same replicate, same held-out env). A criterion passes when its interval lies above 0,",
        "fails below 0, and is inconclusive otherwise. ROI is (final accuracy − `wait` accuracy on the same env) per",
        "1,000 added parameters, 0 for an episode that added none. Entropy slope: change of the mean head entropy per",
        "PPO update (negative = more decisive). Control = heuristic; `random` is the chance reference for SPARSE.",
        "",
        "![learning curves](curves.png)",
        "",
        "![ROI per cohort](roi.png)",
        "",
        provenance_markdown(result["provenance"]),
        "",
    ]
    return "\n".join(lines)


def plot_results(result: dict[str, Any], out: Path) -> list[Path]:
    plt = pyplot()
    paths = []
    figure, axis = plt.subplots(figsize=(6, 4))
    for name, points in result["curves"].items():
        if points:
            axis.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name.upper())
    cohorts = result["verdict"]["cohorts"]
    for name, style in (("control", "--"), ("wait", ":")):
        if cohorts.get(name, {}).get("episodes"):
            axis.axhline(cohorts[name]["final_accuracy"]["mean"], linestyle=style, color="grey", label=f"{name} (eval)")
    axis.set(title="training: mean final accuracy per round", xlabel="round", ylabel="accuracy (%)")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(out / "curves.png", dpi=100)
    plt.close(figure)
    paths.append(out / "curves.png")

    names = [n for n in REPORTED if cohorts.get(n, {}).get("episodes") and n != "wait"]
    figure, axis = plt.subplots(figsize=(6, 4))
    means = [cohorts[n]["roi"]["mean"] for n in names]
    errors = [
        [cohorts[n]["roi"]["mean"] - cohorts[n]["roi"]["low"] for n in names],
        [cohorts[n]["roi"]["high"] - cohorts[n]["roi"]["mean"] for n in names],
    ]
    axis.bar(names, means, yerr=errors, capsize=4, color="tab:blue")
    axis.axhline(0, color="black", linewidth=0.8)
    axis.set(title="accuracy ROI per cohort (95% CI)", ylabel="accuracy points per 1k added params")
    figure.tight_layout()
    figure.savefig(out / "roi.png", dpi=100)
    plt.close(figure)
    paths.append(out / "roi.png")
    return paths


# ------------------------------------------------------------------------------------------------ running


@dataclass(frozen=True)
class ExamSettings:
    task: str = "digits"
    episodes: int = 6
    envs: int = 2
    seeds: int = 1
    base_seed: int = 42
    episode_length: int | None = None
    eval_episodes: int = 4
    max_batches: int = 0
    max_seeds: int = 2
    synthetic: bool = False

    def plan(self, experiment_id: str, replicate: int) -> TrainingPlan:
        return TrainingPlan(
            arms=tuple(
                ArmSpec(arm_id=mode, policy_id=f"{experiment_id}-{mode}-s{replicate}", reward_mode=RewardMode(mode))
                for mode in PPO_COHORTS
            ),
            task=self.task,
            rounds=max(1, -(-self.episodes // self.envs)),
            n_envs_per_arm=self.envs,
            episode_length=self.episode_length,
            seed=self.base_seed + 1000 * replicate,
            eval_episodes=self.eval_episodes,
            baselines=BASELINES,
            max_batches=self.max_batches,
            max_seeds=self.max_seeds,
            synthetic=self.synthetic,
            run_prefix=experiment_id,
        )


async def read_updates(nc: Client, run_id: str, expected: int, *, wait: float = 10.0) -> list[dict[str, Any]]:
    """The PPOUpdateCompleted events a run published (replayed from the telemetry stream)."""
    updates: dict[int, dict[str, Any]] = {}

    async def on_message(msg: Any) -> None:
        payload = decode(msg.data, TelemetryEvent).payload
        if isinstance(payload, PPOUpdateCompleted):
            updates[payload.version] = {
                "version": payload.version,
                "entropy": payload.entropy,
                "head_entropies": dict(payload.head_entropies),
                "skipped": payload.skipped,
            }

    sub = await nc.jetstream().subscribe(
        subjects.telemetry_subject(run_id, "ppo_update_completed"), cb=on_message, ordered_consumer=True
    )
    deadline = time.monotonic() + wait
    while len(updates) < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    with contextlib.suppress(Exception):
        await sub.unsubscribe()
    return [updates[v] for v in sorted(updates)]


async def run_replicate(
    nc: Client, settings: ExamSettings, experiment_id: str, replicate: int, *, timeout: float
) -> dict[str, Any]:
    plan = settings.plan(experiment_id, replicate)
    training = await train_on(nc, plan, timeout=timeout)
    decisiveness: dict[str, float | None] = {}
    for name, arm in training.items():
        arm["updates_detail"] = await read_updates(nc, arm["run_id"], plan.rounds)
        decisiveness[name] = entropy_slope([mean_head_entropy(u) for u in arm["updates_detail"] if not u["skipped"]])
    contenders = {a.arm_id: (a.policy_id + GREEDY_SUFFIX, a.reward_mode) for a in plan.arms}
    contenders.update({name: (name, RewardMode.SIMPLIFIED) for name in BASELINES})
    evaluation = await evaluate_on(nc, plan, contenders, timeout=timeout)
    return {
        "replicate": replicate,
        "seed": plan.seed,
        "training": training,
        "evaluation": evaluation,
        "decisiveness": decisiveness,
    }


def run_exam(
    settings: ExamSettings,
    out: Path,
    *,
    nats_url: str | None = None,
    timeout: float = 7200.0,
    learner_env: dict[str, str] | None = None,
    progress: Any = None,
) -> dict[str, Any]:
    """Run every replicate on one bus, then write verdict.json, report.md, curves.png and roi.png into `out`."""
    import json

    from services.operator.run_client import bus_session
    from services.tolaria.tasks import get_task

    out.mkdir(parents=True, exist_ok=True)
    experiment_id = f"exam-{time.strftime('%Y%m%d-%H%M%S')}"
    info = provenance()
    started = time.monotonic()
    concurrent = max(settings.envs * len(PPO_COHORTS), settings.eval_episodes * (len(PPO_COHORTS) + len(BASELINES)))
    env = {"ESPER_MAX_ENVS": str(max(4, concurrent)), **(learner_env or {})}

    async def go() -> list[dict[str, Any]]:
        replicates = []
        async with bus_session(nats_url, out, extra_env=env) as nc:
            for r in range(settings.seeds):
                if progress:
                    progress(f"replicate {r + 1}/{settings.seeds}: training {', '.join(PPO_COHORTS)}")
                result = await run_replicate(nc, settings, experiment_id, r, timeout=timeout)
                (out / f"replicate-{r}.json").write_text(json.dumps(result, indent=2) + "\n")
                replicates.append(result)
        return replicates

    replicates = asyncio.run(go())
    task = get_task(settings.task)
    result = {
        "experiment": "reward-efficiency",
        "experiment_id": experiment_id,
        "settings": {
            **settings.__dict__,
            "episode_length": settings.episode_length or task.episode_length,
            "rounds": settings.plan(experiment_id, 0).rounds,
        },
        "verdict": exam_verdict(replicates),
        "curves": mean_curves(replicates),
        "wall_seconds": round(time.monotonic() - started, 1),
        "provenance": info,
    }
    write_exam_outputs(result, out)
    return result


def write_exam_outputs(result: dict[str, Any], out: Path) -> None:
    import json

    out.mkdir(parents=True, exist_ok=True)
    (out / "verdict.json").write_text(json.dumps(result, indent=2, default=_json_default) + "\n")
    (out / "report.md").write_text(report_markdown(result))
    plot_results(result, out)


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)
