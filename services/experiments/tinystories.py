"""`esper experiment tinystories-baseline`: the static TransformerHost vs the host grown by the heuristic or by PPO.

Every condition plays the same held-out seeds with the same token budget (epochs × batches × batch × block); the
PPO line is first trained for a few rounds on other seeds, then evaluated through its greedy view. Per-epoch
validation loss comes from EpochCompleted telemetry; rollbacks from GovernorRollback events and EpisodeOutcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import statistics
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from nats.aio.client import Client

from leyline_schemas import (
    ArmSpec,
    EpisodeOutcome,
    EpochCompleted,
    GovernorRollback,
    RewardFamily,
    RewardMode,
    TelemetryEvent,
    decode,
    subjects,
)
from leyline_schemas.policy_ids import GREEDY_SUFFIX
from services.experiments.plots import Panel, line_panels
from services.experiments.provenance import provenance, provenance_markdown
from services.experiments.training import TrainingPlan, evaluation_spec, train_on
from services.operator.run_client import follow_run

CONDITIONS = ("static", "heuristic", "ppo")


@dataclass(frozen=True)
class BaselineSettings:
    task: str = "tinystories_small"
    data: str | None = None
    episode_length: int | None = None
    max_batches: int = 20
    batch_size: int | None = None
    seeds: int = 2
    base_seed: int = 42
    ppo_rounds: int = 2
    ppo_envs: int = 2
    max_seeds: int = 2
    reward_mode: str = "simplified"
    reward_family: str = "contribution"  # loss: only with reward mode shaped

    def plan(self, policy_id: str) -> TrainingPlan:
        family = RewardFamily(self.reward_family)
        arm = ArmSpec(arm_id="ppo", policy_id=policy_id, reward_mode=RewardMode(self.reward_mode), reward_family=family)
        return TrainingPlan(
            arms=(arm,),
            task=self.task,
            rounds=self.ppo_rounds,
            n_envs_per_arm=self.ppo_envs,
            episode_length=self.episode_length,
            seed=self.base_seed + 7,  # training seeds differ from the evaluation seeds below
            eval_episodes=self.seeds,
            eval_seed=self.base_seed,
            baselines=(),
            max_batches=self.max_batches,
            batch_size=self.batch_size,
            max_seeds=self.max_seeds,
            run_prefix="tinystories",
        )


async def follow_with_curves(nc: Client, spec: Any, *, timeout: float) -> dict[str, Any]:
    """Run `spec` to the end; collect per (env, epoch) val loss and parameter counts, and every rollback."""
    epochs: list[dict[str, Any]] = []
    rollbacks: list[dict[str, Any]] = []
    outcomes: dict[int, dict[str, Any]] = {}

    async def on_message(msg: Any) -> None:
        event = decode(msg.data, TelemetryEvent)
        payload = event.payload
        if isinstance(payload, EpochCompleted):
            epochs.append(
                {
                    "env": event.env_id,
                    "epoch": event.epoch,
                    "val_loss": payload.val_loss,
                    "train_loss": payload.train_loss,
                    "host_params": payload.host_params,
                    "total_params": payload.total_params,
                    "op": payload.op,
                    "outcome": payload.outcome,
                }
            )
        elif isinstance(payload, GovernorRollback):
            rollbacks.append({"env": event.env_id, "epoch": event.epoch, "reason": str(payload.reason)})
        elif isinstance(payload, EpisodeOutcome):
            outcomes[payload.env_id] = {
                "env": payload.env_id,
                "seed_params_added": payload.seed_params_added,
                "seeds_germinated": payload.seeds_germinated,
                "seeds_fossilized": payload.seeds_fossilized,
                "seeds_pruned": payload.seeds_pruned,
                "rollbacks": payload.rollbacks,
            }

    sub = await nc.jetstream().subscribe(
        f"{subjects.PREFIX}.telemetry.{spec.run_id}.>", cb=on_message, ordered_consumer=True
    )
    _, follower, wall = await follow_run(nc, spec, timeout=timeout, show_progress=False)
    expected = spec.episodes * spec.episode_length
    deadline = time.monotonic() + 10
    while (len(epochs) < expected or len(outcomes) < spec.episodes) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    with contextlib.suppress(Exception):
        await sub.unsubscribe()
    return {
        "run_id": spec.run_id,
        "wall_seconds": round(wall, 1),
        "state": "failed" if follower.failed else "completed",
        "epochs": sorted(epochs, key=lambda e: (e["env"], e["epoch"])),
        "rollback_events": rollbacks,
        "outcomes": [outcomes[k] for k in sorted(outcomes)],
    }


def curve(run: dict[str, Any]) -> list[dict[str, float]]:
    """Mean over envs (seeds) of the validation loss per epoch, with its perplexity."""
    by_epoch: dict[int, list[float]] = {}
    for e in run["epochs"]:
        by_epoch.setdefault(int(e["epoch"]), []).append(float(e["val_loss"]))
    return [
        {"epoch": ep, "val_loss": statistics.fmean(v), "perplexity": math.exp(statistics.fmean(v))}
        for ep, v in sorted(by_epoch.items())
    ]


def summarize_condition(run: dict[str, Any]) -> dict[str, Any]:
    points = curve(run)
    final = points[-1]["val_loss"] if points else float("nan")
    added = [o["seed_params_added"] for o in run["outcomes"]]
    rollbacks = max(len(run["rollback_events"]), sum(o["rollbacks"] for o in run["outcomes"]))
    return {
        # Decisions the policy could not make (e.g. a policy that refuses this topology): the env then waits.
        "policy_errors": sum(1 for e in run["epochs"] if e.get("outcome") in ("policy_error", "policy_unavailable")),
        "final_val_loss": final,
        "final_perplexity": math.exp(final) if math.isfinite(final) else float("nan"),
        "best_val_loss": min((p["val_loss"] for p in points), default=float("nan")),
        "params_added": round(statistics.fmean(added)) if added else 0,
        "seeds_fossilized": sum(o["seeds_fossilized"] for o in run["outcomes"]),
        "seeds_pruned": sum(o["seeds_pruned"] for o in run["outcomes"]),
        "rollbacks": rollbacks,
        "hit_rollback": rollbacks > 0,
        "state": run["state"],
    }


def report_markdown(result: dict[str, Any]) -> str:
    s = result["settings"]
    lines = [
        "# TinyStories baseline: static vs heuristic-grown vs PPO-grown TransformerHost",
        "",
        f"Task `{s['task']}` ({result['host_params']:,} host parameters), data `{result['data_source']}`; "
        f"{s['seeds']} held-out seed(s) per condition, {result['episode_length']} epochs of {s['max_batches']} "
        f"batches × {result['batch_size']} × {result['block_size']} tokens = {result['token_budget']:,} training "
        f"tokens per run (the same for every condition). PPO ({s['reward_mode']}): {s['ppo_rounds']} training "
        f"round(s) × {s['ppo_envs']} envs on other seeds, then evaluated greedily. max_seeds {s['max_seeds']}.",
        "",
        "| condition | final val loss | final perplexity | best val loss | params added (mean) | fossilized:pruned "
        "| governor rollbacks |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in result["summary"].items():
        lines.append(
            f"| {name} | {row['final_val_loss']:.4f} | {row['final_perplexity']:.2f} | {row['best_val_loss']:.4f} | "
            f"{row['params_added']:,} | {row['seeds_fossilized']}:{row['seeds_pruned']} | "
            f"{row['rollbacks']} ({'hit' if row['hit_rollback'] else 'none'}) |"
        )
    lines += [
        "",
        "Validation loss is the mean over held-out seeds of each epoch's EpochCompleted `val_loss` (nats per byte "
        "token); perplexity = exp(val loss).",
        *[
            f"\n**Warning:** `{name}` failed to decide at {row['policy_errors']} epoch(s) (policy_error: the env "
            "waited instead), so its curve is partly or wholly that of the static host."
            for name, row in result["summary"].items()
            if row.get("policy_errors")
        ],
        "",
        "![validation loss per epoch](curves.png)",
        "",
        provenance_markdown(result["provenance"]),
        "",
    ]
    return "\n".join(lines)


def plot_curves(result: dict[str, Any], path: Path) -> Path:
    return line_panels(
        result["curves"],
        "epoch",
        (
            Panel("val_loss", "validation loss per epoch", "epoch", "val loss (nats/byte)"),
            Panel("perplexity", "validation perplexity per epoch", "epoch", "perplexity"),
        ),
        path,
    )


def run_baseline(
    settings: BaselineSettings,
    out: Path,
    *,
    nats_url: str | None = None,
    timeout: float = 7200.0,
    learner_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    import json

    from services.operator.run_client import bus_session
    from services.tolaria.tasks import get_task

    out.mkdir(parents=True, exist_ok=True)
    data_path = settings.data or os.environ.get("ESPER_TINYSTORIES_PATH")
    env = dict(learner_env or {})
    if data_path:
        data_path = str(Path(data_path).resolve())
        os.environ["ESPER_TINYSTORIES_PATH"] = data_path
        env["ESPER_TINYSTORIES_PATH"] = data_path
    env["ESPER_MAX_ENVS"] = str(max(4, settings.ppo_envs, settings.seeds * len(CONDITIONS)))
    info = provenance()
    task = get_task(settings.task)
    policy_id = f"tinystories-ppo-{uuid.uuid4().hex[:6]}"
    plan = settings.plan(policy_id)
    started = time.monotonic()

    async def go() -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        async with bus_session(nats_url, out, extra_env=env) as nc:
            training = await train_on(nc, plan, timeout=timeout)
            stamp = time.strftime("%Y%m%d-%H%M%S")
            policies = {
                "static": ("wait", RewardMode.SIMPLIFIED),
                "heuristic": ("heuristic", RewardMode.SIMPLIFIED),
                "ppo": (policy_id + GREEDY_SUFFIX, RewardMode(settings.reward_mode)),
            }
            runs = await asyncio.gather(
                *(
                    follow_with_curves(
                        nc,
                        evaluation_spec(
                            plan,
                            pid,
                            mode,
                            f"tinystories-{stamp}-{name}",
                            version=int(training["ppo"]["final_version"]) if name == "ppo" else 0,
                            reward_family=plan.arms[0].reward_family if name == "ppo" else RewardFamily.CONTRIBUTION,
                        ),
                        timeout=timeout,
                    )
                    for name, (pid, mode) in policies.items()
                )
            )
            return training, dict(zip(policies, runs, strict=True))

    training, runs = asyncio.run(go())
    length = settings.episode_length or task.episode_length
    batch = settings.batch_size or task.batch_size
    host_params = sum(p.numel() for p in task.build_host().parameters())
    result = {
        "experiment": "tinystories-baseline",
        "settings": asdict(settings),
        "data_source": data_path or "(synthetic / HF cache)",
        "episode_length": length,
        "batch_size": batch,
        "block_size": task.block_size,
        "host_params": host_params,
        "token_budget": length * settings.max_batches * batch * int(task.block_size or 0),
        "ppo_training": {
            k: {kk: v[kk] for kk in ("run_id", "state", "final_version", "curve")} for k, v in training.items()
        },
        "summary": {name: summarize_condition(run) for name, run in runs.items()},
        "curves": {name: curve(run) for name, run in runs.items()},
        "runs": runs,
        "wall_seconds": round(time.monotonic() - started, 1),
        "provenance": info,
    }
    (out / "results.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    (out / "report.md").write_text(report_markdown(result))
    plot_curves(result, out / "curves.png")
    return result
