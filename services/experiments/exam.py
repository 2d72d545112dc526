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
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nats.aio.client import Client

from leyline_schemas import PPOUpdateCompleted, RewardMode, TelemetryEvent, decode, subjects
from leyline_schemas.policy_ids import GREEDY_SUFFIX
from services.experiments.exam_verdict import (
    BASELINES,
    PPO_COHORTS,
    REPORTED,
    entropy_slope,
    exam_verdict,
    mean_curves,
    mean_head_entropy,
)
from services.experiments.plots import pyplot
from services.experiments.provenance import provenance, provenance_markdown
from services.experiments.training import TrainingPlan, evaluate_on, replicate_plan, train_on

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
        return replicate_plan(
            experiment_id,
            replicate,
            PPO_COHORTS,
            task=self.task,
            episodes=self.episodes,
            envs=self.envs,
            episode_length=self.episode_length,
            base_seed=self.base_seed,
            eval_episodes=self.eval_episodes,
            baselines=BASELINES,
            max_batches=self.max_batches,
            max_seeds=self.max_seeds,
            synthetic=self.synthetic,
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
    versions = {name: int(arm["final_version"]) for name, arm in training.items()}
    evaluation = await evaluate_on(nc, plan, contenders, timeout=timeout, versions=versions)
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
