"""Simic's operator commands: `esper bench learning` and `esper experiment` (ab, reward-efficiency, ...)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from leyline_schemas import ArmSpec, RewardFamily, RewardMode


def policy_size_env(hidden: int) -> dict[str, str]:
    """Simic's settings for the size of the lines it creates (`--hidden`; the heads get half)."""
    return {"ESPER_POLICY_HIDDEN": str(hidden), "ESPER_POLICY_HEAD_HIDDEN": str(max(8, hidden // 2))}


def add_reward_family_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--reward-family",
        default=RewardFamily.CONTRIBUTION.value,
        choices=[f.value for f in RewardFamily],
        help="loss: rewards from validation-loss deltas (only with --reward-mode shaped)",
    )


def register_proof(esub: Any) -> None:
    from services.experiments.proof_command import add_proof_parser

    add_proof_parser(esub, policy_size_env)


def _print(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))


def cmd_bench_learning(args: argparse.Namespace) -> int:
    """PPO vs heuristic vs random (and the oracle) on held-out seeds; sandbox in-process, or a real task on a bus."""
    import torch

    from services.operator.run_client import reward_choice

    try:
        mode, family = reward_choice(args.reward_mode, args.reward_family)
    except ValueError as exc:
        print(f"esper bench learning: {exc}", file=sys.stderr)
        return 2
    torch.set_num_threads(max(1, args.threads))
    if args.task in ("sandbox", "sandbox-ladder"):
        from services.experiments.learning_bench import BenchSettings, bench_learning
        from services.experiments.sandbox import SandboxConfig

        settings = BenchSettings(
            rounds=args.rounds,
            n_envs=args.envs,
            eval_episodes=args.eval_episodes,
            seed=args.seed,
            reward_mode=mode,
            reward_family=family,
            hidden=args.hidden,
            head_hidden=max(8, args.hidden // 2),
            sandbox=SandboxConfig(ladder=args.task == "sandbox-ladder"),
        )
        progress = None if args.json else (lambda line: print(line, file=sys.stderr, flush=True))
        result = bench_learning(settings, progress)
    else:
        from services.experiments.training import TrainingPlan, train_and_evaluate

        plan = TrainingPlan(
            arms=(
                ArmSpec(
                    arm_id="ppo", policy_id=f"bench-ppo-{int(time.time())}", reward_mode=mode, reward_family=family
                ),
            ),
            task=args.task,
            rounds=args.rounds,
            n_envs_per_arm=args.envs,
            episode_length=args.episode_length,
            seed=args.seed,
            eval_episodes=args.eval_episodes,
            max_batches=args.max_batches,
            run_prefix="bench",
        )
        hidden = policy_size_env(args.hidden)
        result = train_and_evaluate(
            plan, nats_url=args.nats, out_dir=Path(args.out or "runs/bench-learning"), learner_env=hidden
        )
    if args.json:
        _print(result)
    else:
        for name, figures in result.get("policies", result.get("evaluation", {})).items():
            ret, acc = figures.get("mean_return", figures.get("episode_return")), figures["final_accuracy"]
            print(
                f"{name:<13} return {ret['mean']:+.3f} [{ret['low']:+.3f}, {ret['high']:+.3f}]  "
                f"accuracy {acc['mean']:.2f}% [{acc['low']:.2f}, {acc['high']:.2f}]"
            )
        if "ladder" in result:
            ladder = result["ladder"]
            print(f"ladder usage U {ladder['usage']:.3f}, germinations {ladder['germinations']}, {ladder['checks']}")
        if "total_seconds" in result:
            print(f"trained in {result['train_seconds']}s, {result['total_seconds']}s in all")
    return 0


def cmd_experiment_ab(args: argparse.Namespace) -> int:
    """Train one PPO line per reward mode concurrently, per seed replicate; write verdict.json and curves.png."""
    from services.experiments.ab import ExperimentPlan, mean_curves, plot_curves, verdict
    from services.experiments.training import train_and_evaluate

    try:
        plan = ExperimentPlan(
            arms=tuple(RewardMode(a.strip()) for a in args.arms.split(",") if a.strip()),
            episodes=args.episodes,
            envs=args.envs,
            task=args.task,
            seeds=args.seeds,
            base_seed=args.seed,
            episode_length=args.episode_length,
            eval_episodes=args.eval_episodes or args.envs,
            max_batches=args.max_batches,
        )
    except ValueError as exc:
        print(f"esper experiment ab: {exc}", file=sys.stderr)
        return 2
    experiment_id = plan.experiment_id
    out = Path(args.out or f"runs/{experiment_id}")
    out.mkdir(parents=True, exist_ok=True)
    hidden = policy_size_env(args.hidden)
    replicates = []
    for replicate in range(plan.seeds):
        result = train_and_evaluate(
            plan.training_plan(experiment_id, replicate),
            nats_url=args.nats,
            out_dir=out,
            timeout=args.timeout,
            learner_env=hidden,
        )
        replicates.append(result)
        (out / f"replicate-{replicate}.json").write_text(json.dumps(result, indent=2) + "\n")
    arms = [mode.value for mode in plan.arms]
    report: dict[str, Any] = {
        "experiment": experiment_id,
        "arms": arms,
        "task": plan.task,
        "seeds": plan.seeds,
        "episodes_per_arm": plan.episodes,
        "envs_per_arm": plan.envs,
        "eval_episodes": plan.eval_episodes,
        "verdict": verdict(arms, replicates),
        "curves": mean_curves(arms, replicates),
    }
    (out / "verdict.json").write_text(json.dumps(report, indent=2) + "\n")
    plot_curves(report["curves"], out / "curves.png")
    if args.json:
        _print(report)
    else:
        for arm, decision in report["verdict"]["decisions"].items():
            print(f"{arm}: {decision}")
        print(f"wrote {out / 'verdict.json'} and {out / 'curves.png'}")
    return 0


def cmd_experiment_ladder(args: argparse.Namespace) -> int:
    """Control (no conv_ladder) vs treatment (every CNN blueprint), paired per seed replicate; A1–A7 to the out dir."""
    from services.experiments.ladder_experiment import LadderPlan, run_ladder_experiment

    try:
        plan = LadderPlan(
            task=args.task,
            rounds=args.rounds,
            envs=args.envs,
            seeds=args.seeds,
            base_seed=args.seed,
            eval_episodes=args.eval_episodes,
            max_seeds=args.max_seeds,
            episode_length=args.episode_length,
            max_batches=args.max_batches,
            reward_mode=RewardMode(args.reward_mode),
            internal_op_cooldown_epochs=args.internal_op_cooldown,
            internal_ops_require_alpha_hold=args.require_alpha_hold,
            internal_op_cost=args.internal_op_cost,
        )
    except ValueError as exc:
        print(f"esper experiment ladder: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out or f"runs/{plan.experiment_id}")
    verdict = run_ladder_experiment(
        plan, out=out, nats_url=args.nats, timeout=args.timeout, learner_env=policy_size_env(args.hidden)
    )
    if args.json:
        print(json.dumps(verdict, indent=2))
    else:
        for name, check in verdict["checks"].items():
            bulky = ("status", "post_op_deltas", "entropy_runs_below_floor")
            figures = {k: v for k, v in check.items() if k not in bulky}
            print(f"{name:<13} {check['status']:<12} {json.dumps(figures)[:200]}")
        print(f"-> {out / 'ladder_verdict.json'} ({verdict['wall_seconds']}s)")
    return 0


def cmd_experiment_reward_efficiency(args: argparse.Namespace) -> int:
    """§7.6 final exam: Control, SHAPED, SIMPLIFIED, SPARSE on paired seeds; verdict.json, report.md, plots."""
    from services.experiments.exam import ExamSettings, run_exam

    settings = ExamSettings(
        task=args.task,
        episodes=args.episodes,
        envs=args.envs,
        seeds=args.seeds,
        base_seed=args.seed,
        episode_length=args.episode_length,
        eval_episodes=args.eval_episodes,
        max_batches=args.max_batches,
        max_seeds=args.max_seeds,
        synthetic=args.synthetic,
    )
    out = Path(args.out or f"runs/reward-efficiency-{time.strftime('%Y%m%d-%H%M%S')}")
    hidden = policy_size_env(args.hidden)
    result = run_exam(
        settings,
        out,
        nats_url=args.nats,
        timeout=args.timeout,
        learner_env=hidden,
        progress=lambda line: print(line, file=sys.stderr, flush=True),
    )
    if args.json:
        _print(result["verdict"])
    else:
        for name, criterion in result["verdict"]["criteria"].items():
            print(f"{name}: {criterion['status']}")
        print(f"verdict {result['verdict']['overall']}; wrote {out / 'verdict.json'}, {out / 'report.md'}")
    return 0


def cmd_experiment_tinystories(args: argparse.Namespace) -> int:
    """Static host vs heuristic-grown vs PPO-grown on the same token budget and seeds; per-epoch val loss."""
    from services.experiments.tinystories import BaselineSettings, run_baseline
    from services.operator.run_client import reward_choice

    settings = BaselineSettings(
        task=args.task,
        data=args.data,
        episode_length=args.episode_length,
        max_batches=args.max_batches,
        batch_size=args.batch_size,
        seeds=args.seeds,
        base_seed=args.seed,
        ppo_rounds=args.ppo_rounds,
        ppo_envs=args.ppo_envs,
        max_seeds=args.max_seeds,
        reward_mode=args.reward_mode,
        reward_family=args.reward_family,
    )
    try:
        reward_choice(settings.reward_mode, settings.reward_family)
    except ValueError as exc:
        print(f"esper experiment tinystories-baseline: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out or f"runs/tinystories-baseline-{time.strftime('%Y%m%d-%H%M%S')}")
    hidden = policy_size_env(args.hidden)
    result = run_baseline(settings, out, nats_url=args.nats, timeout=args.timeout, learner_env=hidden)
    if args.json:
        _print(result["summary"])
    else:
        for name, row in result["summary"].items():
            print(
                f"{name:<10} final val loss {row['final_val_loss']:.4f} (ppl {row['final_perplexity']:.2f}), "
                f"params added {row['params_added']}, rollbacks {row['rollbacks']}"
            )
        print(f"wrote {out / 'results.json'} and {out / 'report.md'}")
    return 0


def register_bench(bench_commands: Any) -> None:
    """Add `learning` to `esper bench` (services.operator.bench owns the parser and calls this)."""
    p = bench_commands.add_parser("learning", help="train PPO, then compare it with the heuristic and random")
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--task",
        default="sandbox",
        help="sandbox (in-process, known optimum), sandbox-ladder (its conv_ladder variant) or a task over the bus",
    )
    p.add_argument("--rounds", type=int, default=60)
    p.add_argument("--envs", type=int, default=8)
    p.add_argument("--eval-episodes", type=int, default=40)
    p.add_argument("--episode-length", type=int, default=None, help="bus tasks only (default: the task's)")
    p.add_argument("--max-batches", type=int, default=0, help="bus tasks only")
    p.add_argument("--reward-mode", default="simplified", choices=[m.value for m in RewardMode])
    add_reward_family_argument(p)
    p.add_argument("--hidden", type=int, default=64, help="LSTM width (the reference uses 512)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--nats", default=None, help="bus tasks: an existing bus (default: an embedded one)")
    p.add_argument("--out", default=None)
    p.set_defaults(func=cmd_bench_learning)


def register(sub: Any) -> None:
    p = sub.add_parser("experiment", help="reward-mode experiments")
    esub = p.add_subparsers(dest="experiment_command", required=True)
    ab = esub.add_parser("ab", help="A/B reward modes: concurrent arms, paired seeds, bootstrap verdict")
    ab.add_argument("--arms", default="shaped,simplified", help="comma-separated reward modes, first is the baseline")
    ab.add_argument("--episodes", type=int, default=8, help="training episodes per arm and seed")
    ab.add_argument("--envs", type=int, default=2, help="envs per arm")
    ab.add_argument("--task", default="digits")
    ab.add_argument("--seeds", type=int, default=1, help="seed replicates (arms of one replicate run concurrently)")
    ab.add_argument("--seed", type=int, default=42)
    ab.add_argument("--episode-length", type=int, default=None)
    ab.add_argument("--eval-episodes", type=int, default=0, help="held-out evaluation episodes (default: --envs)")
    ab.add_argument("--max-batches", type=int, default=0)
    ab.add_argument("--hidden", type=int, default=64)
    ab.add_argument("--nats", default=None)
    ab.add_argument("--timeout", type=float, default=7200.0)
    ab.add_argument("--out", default=None)
    ab.add_argument("--json", action="store_true")
    ab.set_defaults(func=cmd_experiment_ab)

    ex = esub.add_parser("reward-efficiency", help="§7.6 final exam: Control vs SHAPED vs SIMPLIFIED vs SPARSE")
    ex.add_argument("--task", default="digits", help="the reference exam uses cifar_impaired")
    ex.add_argument("--episodes", type=int, default=6, help="training episodes per PPO cohort and seed replicate")
    ex.add_argument("--envs", type=int, default=2, help="envs per PPO cohort")
    ex.add_argument("--seeds", type=int, default=1, help="seed replicates")
    ex.add_argument("--seed", type=int, default=42)
    ex.add_argument("--episode-length", type=int, default=None)
    ex.add_argument("--eval-episodes", type=int, default=4, help="held-out episodes per cohort and replicate")
    ex.add_argument("--max-batches", type=int, default=0)
    ex.add_argument("--max-seeds", type=int, default=2)
    ex.add_argument("--synthetic", action="store_true")
    ex.add_argument("--hidden", type=int, default=64)
    ex.add_argument("--nats", default=None)
    ex.add_argument("--timeout", type=float, default=7200.0)
    ex.add_argument("--out", default=None)
    ex.add_argument("--json", action="store_true")
    ex.set_defaults(func=cmd_experiment_reward_efficiency)

    register_proof(esub)

    ld = esub.add_parser("ladder", help="kasmina2 phase 0: PPO with and without conv_ladder, A1-A7 (§12)")
    ld.add_argument("--task", default="digits_tiny", help="a CNN task with headroom (digits_tiny or mnist1d)")
    ld.add_argument("--rounds", type=int, default=40, help="PPO rounds of --envs episodes per arm and replicate")
    ld.add_argument("--envs", type=int, default=4, help="envs per arm")
    ld.add_argument("--seeds", type=int, default=3, help="seed replicates (seed, seed+1000, ...)")
    ld.add_argument("--seed", type=int, default=42)
    ld.add_argument("--eval-episodes", type=int, default=8, help="held-out greedy episodes per contender")
    ld.add_argument("--max-seeds", type=int, default=2)
    ld.add_argument("--episode-length", type=int, default=None)
    ld.add_argument("--max-batches", type=int, default=0)
    ld.add_argument("--reward-mode", default="shaped", choices=[m.value for m in RewardMode])
    ld.add_argument(
        "--require-alpha-hold", action="store_true", help="pivot lever (§12.5): internal ops only while alpha holds"
    )
    ld.add_argument(
        "--internal-op-cooldown", type=int, default=0, help="pivot lever (§12.5): epochs masked after a level change"
    )
    ld.add_argument(
        "--internal-op-cost", type=float, default=None, help="pivot lever (§12.5): reward cost of an internal op"
    )
    ld.add_argument("--hidden", type=int, default=64)
    ld.add_argument("--nats", default=None)
    ld.add_argument("--timeout", type=float, default=7200.0)
    ld.add_argument("--out", default=None)
    ld.add_argument("--json", action="store_true")
    ld.set_defaults(func=cmd_experiment_ladder)

    ts = esub.add_parser("tinystories-baseline", help="static vs heuristic- vs PPO-grown TransformerHost curves")
    ts.add_argument("--task", default="tinystories_small")
    ts.add_argument("--data", default=None, help="story text file (default: $ESPER_TINYSTORIES_PATH)")
    ts.add_argument("--episode-length", type=int, default=None, help="epochs per run (default: the task's)")
    ts.add_argument("--max-batches", type=int, default=20, help="train/val batches per epoch (the token budget)")
    ts.add_argument("--batch-size", type=int, default=None)
    ts.add_argument("--seeds", type=int, default=2, help="held-out seeds, the same for every condition")
    ts.add_argument("--seed", type=int, default=42)
    ts.add_argument("--ppo-rounds", type=int, default=2, help="PPO training rounds before evaluation")
    ts.add_argument("--ppo-envs", type=int, default=2)
    ts.add_argument("--max-seeds", type=int, default=2)
    ts.add_argument("--reward-mode", default="simplified", choices=[m.value for m in RewardMode])
    add_reward_family_argument(ts)
    ts.add_argument("--hidden", type=int, default=64)
    ts.add_argument("--nats", default=None)
    ts.add_argument("--timeout", type=float, default=7200.0)
    ts.add_argument("--out", default=None)
    ts.add_argument("--json", action="store_true")
    ts.set_defaults(func=cmd_experiment_tinystories)
