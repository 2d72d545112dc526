"""Training runs driven over the bus: `train_and_evaluate` trains PPO lines on a real task, then evaluates them.

A training run is a RunSpec with `learn=True`: Simic publishes version 0 of each arm's line, Tolaria acts round by
round, Simic publishes version r+1 after round r. Evaluation runs (`learn=False`) then play the trained lines, and
any baselines, on the same held-out seeds, so every comparison is paired env by env. Trained lines are evaluated
through their `+greedy` view (argmax decisions, §4.9) unless `greedy_eval` is off. An evaluation of version N of a
line requires N, and its report counts the steps that another version decided (`version_check`, expected 0); a
training run reports its version lag per round from the step records it wrote (`step_audit`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from nats.aio.client import Client

from leyline_schemas import ArmSpec, BlueprintAction, PolicyKind, RemoteError, RewardFamily, RewardMode, RunSpec
from leyline_schemas.policy_ids import GREEDY_SUFFIX
from services.experiments.statistics import bootstrap_interval
from services.experiments.step_audit import evaluation_version_check, read_step_records, round_version_lags
from services.operator.run_client import RunFollower, bus_session, episode_rows, follow_run
from services.policy.pointers import read_pointer
from services.runtime import jetstream

EVAL_SEED_OFFSET = 100_003  # held-out: far from the training seeds (env seeds stride 1009 per env and round)


@dataclass(frozen=True)
class TrainingPlan:
    """What to train and how to judge it; `arms` name fresh policy ids (one learning line each), or existing lines
    trained on from the version each is at when `continue_lines` is set."""

    arms: tuple[ArmSpec, ...]
    task: str = "digits"
    rounds: int = 4
    n_envs_per_arm: int = 2
    episode_length: int | None = None
    seed: int = 42
    eval_episodes: int = 4
    eval_seed: int | None = None
    baselines: tuple[str, ...] = ("heuristic", "random")
    greedy_eval: bool = True
    slots: tuple[str, ...] = ()
    max_batches: int = 0
    batch_size: int | None = None
    max_seeds: int = 0
    run_ahead: bool = False
    strict_gates: bool = False
    continue_lines: bool = False
    synthetic: bool = False
    run_prefix: str = "train"
    extra: dict[str, Any] = field(default_factory=dict)
    #: Per arm id, the blueprints its runs may germinate (RunSpec.blueprints; absent: the task's full set). The
    #: ladder experiment's control and treatment differ only by this (plans/kasmina2-phase0.md Choice 14).
    arm_blueprints: dict[str, tuple[BlueprintAction, ...]] = field(default_factory=dict)
    #: The internal-op pivot levers (RunSpec), the same for training and evaluation runs so masks do not change.
    internal_op_cooldown_epochs: int = 0
    internal_ops_require_alpha_hold: bool = False

    def __post_init__(self) -> None:
        if not self.arms:
            raise ValueError("a training plan needs at least one arm")
        if len({a.policy_id for a in self.arms}) != len(self.arms):
            raise ValueError("every arm needs its own policy id")
        if self.rounds < 1 or self.n_envs_per_arm < 1:
            raise ValueError("rounds and n_envs_per_arm must be at least 1")


def replicate_plan(
    experiment_id: str,
    replicate: int,
    cohorts: Sequence[RewardMode | str],
    *,
    task: str,
    episodes: int,
    envs: int,
    episode_length: int | None,
    base_seed: int,
    eval_episodes: int,
    baselines: tuple[str, ...],
    max_batches: int,
    max_seeds: int = 0,
    synthetic: bool = False,
) -> TrainingPlan:
    """One seed replicate of a paired comparison: a fresh policy line per reward cohort, all on the replicate's seed
    (base + 1000·replicate), so every cohort sees the same hosts, data order and budget."""
    modes = [RewardMode(cohort) for cohort in cohorts]
    return TrainingPlan(
        arms=tuple(
            ArmSpec(arm_id=mode.value, policy_id=f"{experiment_id}-{mode.value}-s{replicate}", reward_mode=mode)
            for mode in modes
        ),
        task=task,
        rounds=max(1, -(-episodes // envs)),
        n_envs_per_arm=envs,
        episode_length=episode_length,
        seed=base_seed + 1000 * replicate,
        eval_episodes=eval_episodes,
        baselines=baselines,
        max_batches=max_batches,
        max_seeds=max_seeds,
        synthetic=synthetic,
        run_prefix=experiment_id,
    )


def _task_defaults(plan: TrainingPlan) -> tuple[list[str], int, int]:
    from services.tolaria.tasks import get_task

    task = get_task(plan.task)
    slots = list(plan.slots) or list(task.default_slots)
    return slots, plan.episode_length or task.episode_length, plan.batch_size or task.batch_size


def training_spec(plan: TrainingPlan, arm: ArmSpec, run_id: str) -> RunSpec:
    """One learning run per arm, all with the same seed, so env i of every arm sees the same hosts (paired seeds)."""
    slots, length, batch = _task_defaults(plan)
    return RunSpec(
        run_id=run_id,
        task=plan.task,
        slots=slots,
        episodes=plan.rounds * plan.n_envs_per_arm,
        episode_length=length,
        n_envs=plan.n_envs_per_arm,
        arms=[arm],
        seed=plan.seed,
        max_seeds=plan.max_seeds,
        max_batches=plan.max_batches,
        batch_size=batch,
        synthetic=plan.synthetic,
        permissive_gates=not plan.strict_gates,
        learn=True,
        run_ahead=plan.run_ahead,
        created_at=time.time(),
        blueprints=list(plan.arm_blueprints.get(arm.arm_id, ())),
        internal_op_cooldown_epochs=plan.internal_op_cooldown_epochs,
        internal_ops_require_alpha_hold=plan.internal_ops_require_alpha_hold,
    )


def evaluation_spec(
    plan: TrainingPlan,
    policy_id: str,
    reward_mode: RewardMode,
    run_id: str,
    *,
    version: int = 0,
    reward_family: RewardFamily = RewardFamily.CONTRIBUTION,
    blueprints: Sequence[BlueprintAction] = (),
    internal_op_cost: float | None = None,
) -> RunSpec:
    """An evaluation run of `policy_id` on the held-out seeds, decided by `version` of the line (0: any version)."""
    slots, length, batch = _task_defaults(plan)
    return RunSpec(
        run_id=run_id,
        task=plan.task,
        slots=slots,
        episodes=plan.eval_episodes,
        episode_length=length,
        n_envs=plan.eval_episodes,
        arms=[
            ArmSpec(
                arm_id="eval",
                policy_id=policy_id,
                reward_mode=reward_mode,
                reward_family=reward_family,
                from_version=version,
                internal_op_cost=internal_op_cost,
            )
        ],
        seed=plan.eval_seed if plan.eval_seed is not None else plan.seed + EVAL_SEED_OFFSET,
        max_seeds=plan.max_seeds,
        max_batches=plan.max_batches,
        batch_size=batch,
        permissive_gates=not plan.strict_gates,
        synthetic=plan.synthetic,
        created_at=time.time(),
        blueprints=list(blueprints),
        internal_op_cooldown_epochs=plan.internal_op_cooldown_epochs,
        internal_ops_require_alpha_hold=plan.internal_ops_require_alpha_hold,
    )


def _trained(follower: RunFollower, policy_id: str, rounds: int) -> bool:
    """Every round's update is announced and the pointer of the last one is out."""
    versions = [v for pid, v in follower.updates if pid == policy_id]
    return len(versions) >= rounds and follower.versions.get(policy_id, -1) >= max(versions)


def summarize(episodes: list[dict[str, Any]]) -> dict[str, Any]:
    """Bootstrap 95% intervals of the mean of each metric over episodes."""
    if not episodes:
        return {"episodes": 0}
    metrics = ("episode_return", "final_accuracy", "seeds_fossilized", "seed_params_added")
    return {
        "episodes": len(episodes),
        **{m: bootstrap_interval([float(e[m]) for e in episodes]).as_dict() for m in metrics},
    }


def learning_curve(follower: RunFollower) -> list[dict[str, Any]]:
    """Per round: mean return and final accuracy of its episodes, with the update's diagnostics."""
    episodes = episode_rows(follower)
    rounds = sorted({e["round"] for e in episodes})
    by_version = {v: u for (_, v), u in follower.updates.items()}
    curve = []
    for r in rounds:
        members = [e for e in episodes if e["round"] == r]
        update = next((u for u in by_version.values() if int(u.diagnostics.get("round", -1)) == r), None)
        curve.append(
            {
                "round": r,
                "mean_return": round(sum(e["episode_return"] for e in members) / len(members), 4),
                "mean_final_accuracy": round(sum(e["final_accuracy"] for e in members) / len(members), 4),
                "approx_kl": round(update.approx_kl, 5) if update else None,
                "explained_variance": round(update.explained_variance, 4) if update else None,
                "version_lag_mean": round(update.version_lag_mean, 3) if update else None,
                "head_entropies": dict(update.head_entropies) if update else {},
                "skipped": update.skipped if update else None,
            }
        )
    return curve


async def train_on(nc: Client, plan: TrainingPlan, *, timeout: float = 3600.0) -> dict[str, dict[str, Any]]:
    """Train every arm concurrently on one bus; returns per arm its run id, curve and final version."""
    stamp = time.strftime("%Y%m%d-%H%M%S")

    async def one(arm: ArmSpec) -> tuple[str, dict[str, Any]]:
        run_id = f"{plan.run_prefix}-{stamp}-{arm.arm_id}-{uuid.uuid4().hex[:4]}"
        if plan.continue_lines:
            arm = msgspec.structs.replace(arm, from_version=await line_version(nc, arm.policy_id))
        spec = training_spec(plan, arm, run_id)
        _, follower, wall = await follow_run(
            nc,
            spec,
            timeout=timeout,
            show_progress=False,
            until=lambda f: _trained(f, arm.policy_id, plan.rounds),
        )
        records = await read_step_records(nc, run_id, expected=spec.episodes * spec.episode_length)
        lags = {row["round"]: row for row in round_version_lags(spec, records)}
        curve = learning_curve(follower)
        for row in curve:
            lag = lags.get(row["round"], {})
            row["version_lag"] = {k: lag.get(k) for k in ("lag_mean", "lag_max", "steps", "undecided_steps")}
        return arm.arm_id, {
            "run_id": run_id,
            "policy_id": arm.policy_id,
            "reward_mode": arm.reward_mode.value,
            "reward_family": arm.reward_family.value,
            "run_ahead": spec.run_ahead,
            "from_version": arm.from_version,
            "state": "failed" if follower.failed else ("completed" if follower.done else "incomplete"),
            "final_version": follower.versions.get(arm.policy_id, -1),
            "updates": len([1 for pid, _ in follower.updates if pid == arm.policy_id]),
            "wall_seconds": round(wall, 1),
            "curve": curve,
            "episodes": episode_rows(follower),
        }

    return dict(await asyncio.gather(*(one(arm) for arm in plan.arms)))


async def line_version(nc: Client, policy_id: str) -> int:
    """The version a trained line points at now; a line without a learned version cannot be continued."""
    pointer = await read_pointer(await jetstream.policies_bucket(nc.jetstream()), policy_id)
    if pointer is None or pointer.kind is not PolicyKind.LEARNED:
        raise ValueError(f"{policy_id!r} is not a trained policy line on this bus (no learned version to resume)")
    return pointer.version


async def evaluate_on(
    nc: Client,
    plan: TrainingPlan,
    policies: dict[str, tuple[str, RewardMode]],
    *,
    timeout: float = 3600.0,
    versions: dict[str, int] | None = None,
) -> dict[str, dict[str, Any]]:
    """Play each `name → (policy id, reward mode)` on the held-out seeds, concurrently; summaries per name.

    A name in `versions` is evaluated at that version of its line, and its summary carries `version_check`: how many
    of its steps were decided by another version, or by none (both expected 0).
    """
    if plan.eval_episodes <= 0:
        return {}
    stamp = time.strftime("%Y%m%d-%H%M%S")
    families = {arm.arm_id: arm.reward_family for arm in plan.arms}
    costs = {arm.arm_id: arm.internal_op_cost for arm in plan.arms}

    async def one(name: str, policy_id: str, mode: RewardMode) -> tuple[str, dict[str, Any]]:
        run_id = f"eval-{stamp}-{name.replace('+', '-')}-{uuid.uuid4().hex[:4]}"
        version = (versions or {}).get(name)
        # Baselines are scored like the first arm, so that their returns compare with its line's.
        family = (
            families.get(name, plan.arms[0].reward_family) if mode is RewardMode.SHAPED else RewardFamily.CONTRIBUTION
        )
        spec = evaluation_spec(
            plan,
            policy_id,
            mode,
            run_id,
            version=version or 0,
            reward_family=family,
            blueprints=plan.arm_blueprints.get(name, ()),
            internal_op_cost=costs.get(name, plan.arms[0].internal_op_cost),
        )
        _, follower, _ = await follow_run(nc, spec, timeout=timeout, show_progress=False)
        episodes = episode_rows(follower)
        result = {"run_id": run_id, "policy_id": policy_id, **summarize(episodes), "per_episode": episodes}
        if version is not None:
            records = await read_step_records(nc, run_id, expected=spec.episodes * spec.episode_length)
            result["version_check"] = evaluation_version_check(records, version)
        return name, result

    return dict(await asyncio.gather(*(one(name, pid, mode) for name, (pid, mode) in policies.items())))


async def train_and_evaluate_on(nc: Client, plan: TrainingPlan, *, timeout: float = 3600.0) -> dict[str, Any]:
    """Train, then evaluate the trained lines and the baselines on the same held-out seeds."""
    started = time.monotonic()
    training = await train_on(nc, plan, timeout=timeout)
    mode = plan.arms[0].reward_mode
    suffix = GREEDY_SUFFIX if plan.greedy_eval else ""
    contenders = {arm.arm_id: (arm.policy_id + suffix, arm.reward_mode) for arm in plan.arms}
    contenders.update({name: (name, mode) for name in plan.baselines})
    versions = {name: int(trained["final_version"]) for name, trained in training.items()}
    evaluation = await evaluate_on(nc, plan, contenders, timeout=timeout, versions=versions)
    return {
        "task": plan.task,
        "rounds": plan.rounds,
        "n_envs_per_arm": plan.n_envs_per_arm,
        "seed": plan.seed,
        "eval_seed": plan.eval_seed if plan.eval_seed is not None else plan.seed + EVAL_SEED_OFFSET,
        "greedy_eval": plan.greedy_eval,
        "training": training,
        "evaluation": evaluation,
        "wall_seconds": round(time.monotonic() - started, 1),
    }


def train_and_evaluate(
    plan: TrainingPlan,
    *,
    nats_url: str | None = None,
    out_dir: Path | None = None,
    timeout: float = 3600.0,
    learner_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Synchronous entry point: on `nats_url`, or on an embedded bus whose services get `learner_env`.

    With the embedded bus, Tolaria is sized to drive every env at once (ESPER_MAX_ENVS) unless `learner_env`
    says otherwise.
    """
    directory = out_dir or Path(f"runs/{plan.run_prefix}-{time.strftime('%Y%m%d-%H%M%S')}")
    envs = max(plan.n_envs_per_arm * len(plan.arms), plan.eval_episodes * (len(plan.arms) + len(plan.baselines)))
    env = {"ESPER_MAX_ENVS": str(max(4, math.ceil(envs))), **(learner_env or {})}

    async def go() -> dict[str, Any]:
        async with bus_session(nats_url, directory, extra_env=env) as nc:
            return await train_and_evaluate_on(nc, plan, timeout=timeout)

    return asyncio.run(go())


def train_from_args(args: argparse.Namespace, nats_url: str | None) -> int:
    """`esper run --policy ppo`: train a fresh policy line (or, with `--resume-line`, an existing one from its latest
    version) on the bus, then evaluate it against the heuristic."""
    from services.operator.run_client import reward_choice

    try:
        mode, family = reward_choice(args.reward_mode, args.reward_family)
    except ValueError as exc:
        print(f"esper run: {exc}", file=sys.stderr)
        return 2
    stamp = time.strftime("%Y%m%d-%H%M%S")
    policy_id = args.resume_line or f"ppo-{mode.value}-{stamp}-{uuid.uuid4().hex[:4]}"
    plan = TrainingPlan(
        arms=(ArmSpec(arm_id="main", policy_id=policy_id, reward_mode=mode, reward_family=family),),
        task=args.task,
        rounds=args.rounds,
        n_envs_per_arm=args.envs,
        episode_length=args.episode_length,
        seed=args.seed,
        eval_episodes=args.eval_episodes,
        slots=tuple(s.strip() for s in args.slots.split(",")) if args.slots else (),
        max_batches=args.max_batches,
        batch_size=args.batch_size,
        max_seeds=args.max_seeds,
        run_ahead=args.run_ahead,
        strict_gates=args.strict_gates,
        continue_lines=bool(args.resume_line),
        synthetic=args.synthetic,
    )
    out_dir = Path(args.out or f"runs/train-{stamp}")
    out_dir.mkdir(parents=True, exist_ok=True)
    print(
        f"esper run: training {policy_id} for {args.rounds} rounds x {args.envs} envs on {args.task}", file=sys.stderr
    )
    try:
        result = train_and_evaluate(plan, nats_url=nats_url, out_dir=out_dir, timeout=args.timeout)
    except RemoteError as exc:
        print(f"esper run: the run was refused: {exc.reply.message}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"esper run: {exc}", file=sys.stderr)
        return 2
    training = result["training"]["main"]
    report = {
        "run_id": training["run_id"],
        "task": args.task,
        "policy": policy_id,
        "reward_mode": mode.value,
        "reward_family": family.value,
        "run_ahead": training["run_ahead"],
        "strict_gates": args.strict_gates,
        "from_version": training["from_version"],
        "state": training["state"],
        "final_version": training["final_version"],
        "rounds": training["curve"],
        "episodes": training["episodes"],
        "evaluation": result["evaluation"],
        "wall_seconds": result["wall_seconds"],
    }
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    for row in training["curve"]:
        accuracy, lag = row["mean_final_accuracy"], row["version_lag"]
        lag_text = "" if lag["lag_mean"] is None else f", version lag mean {lag['lag_mean']:.2f} max {lag['lag_max']}"
        print(f"round {row['round']}: mean return {row['mean_return']:+.3f}, mean accuracy {accuracy:.2f}%{lag_text}")
    for name, summary in result["evaluation"].items():
        if summary.get("episodes"):
            ret, acc = summary["episode_return"], summary["final_accuracy"]
            print(
                f"eval {name:<10} return {ret['mean']:+.3f} [{ret['low']:+.3f}, {ret['high']:+.3f}]  "
                f"accuracy {acc['mean']:.2f}% [{acc['low']:.2f}, {acc['high']:.2f}]"
            )
        if "version_check" in summary:
            check = summary["version_check"]
            print(
                f"eval {name:<10} v{check['evaluated_version']}: {check['version_mismatches']} of {check['steps']} "
                f"steps decided by another version, {check['undecided_steps']} undecided"
            )
    print(f"-> {out_dir / 'report.json'} ({report['wall_seconds']}s)")
    return 0 if training["state"] == "completed" else 1
