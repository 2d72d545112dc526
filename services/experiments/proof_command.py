"""`esper experiment proof`: the command line of the proof experiment (services/experiments/proof.py)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from leyline_schemas import RewardMode
from services.experiments.provenance import provenance


def add_proof_parser(esub: Any, policy_size_env: Callable[[int], dict[str, str]]) -> None:
    p = esub.add_parser("proof", help="does growth earn its parameters? a trained line against the control cohorts")
    p.add_argument("--task", default="mnist1d")
    p.add_argument("--seeds", type=int, default=5, help="replicates (a fresh PPO line each); < 5 is a rehearsal")
    p.add_argument("--episodes", type=int, default=32, help="training episodes of the treatment line per replicate")
    p.add_argument("--envs", type=int, default=4, help="envs per training round")
    p.add_argument("--eval-episodes", type=int, default=8, help="held-out pairs per replicate")
    p.add_argument("--episode-length", type=int, default=None, help="epochs per episode (default: the task's)")
    p.add_argument("--max-batches", type=int, default=0)
    p.add_argument("--max-seeds", type=int, default=2)
    p.add_argument("--reward-mode", default="simplified", choices=[m.value for m in RewardMode])
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--synthetic", action="store_true")
    p.add_argument("--hidden", type=int, default=64, help="LSTM hidden size of the trained policy")
    # The treatment line's PPO knobs; unset, Simic's own defaults apply (docs/results/growth-log.md: what was tried).
    p.add_argument("--learning-rate", type=float, default=None)
    p.add_argument("--entropy-coef", type=float, default=None)
    p.add_argument("--ppo-epochs", type=int, default=None)
    p.add_argument("--ppo-minibatches", type=int, default=None)
    p.add_argument("--nats", default=None)
    p.add_argument("--timeout", type=float, default=7200.0)
    p.add_argument("--out", default=None)
    p.set_defaults(func=lambda args: cmd_experiment_proof(args, policy_size_env))


def learner_env(args: argparse.Namespace, policy_size_env: Callable[[int], dict[str, str]]) -> dict[str, str]:
    """Simic's settings for the treatment line: its size and PPO knobs, as the embedded services read them."""
    knobs = {
        "ESPER_LEARNING_RATE": args.learning_rate,
        "ESPER_ENTROPY_COEF": args.entropy_coef,
        "ESPER_PPO_EPOCHS": args.ppo_epochs,
        "ESPER_PPO_MINIBATCHES": args.ppo_minibatches,
    }
    return {**policy_size_env(args.hidden), **{key: repr(value) for key, value in knobs.items() if value is not None}}


def cmd_experiment_proof(args: argparse.Namespace, policy_size_env: Callable[[int], dict[str, str]]) -> int:
    from services.experiments.proof import COHORT_ORDER, ProofSettings, run_proof
    from services.experiments.proof_report import write_report

    settings = ProofSettings(
        task=args.task,
        replicates=args.seeds,
        episodes=args.episodes,
        envs=args.envs,
        eval_episodes=args.eval_episodes,
        episode_length=args.episode_length,
        max_batches=args.max_batches,
        max_seeds=args.max_seeds,
        reward_mode=RewardMode(args.reward_mode),
        base_seed=args.seed,
        synthetic=args.synthetic,
    )
    if settings.episode_length is not None and settings.episode_length < 18:
        print("esper experiment proof: the fixed schedule needs episodes of at least 18 epochs", file=sys.stderr)
        return 2
    out = Path(args.out or f"runs/proof-{time.strftime('%Y%m%d-%H%M%S')}")
    info = provenance(sys.argv)
    result = run_proof(
        settings, out, nats_url=args.nats, timeout=args.timeout, learner_env=learner_env(args, policy_size_env)
    )
    verdict = write_report(result, COHORT_ORDER, out, info)
    for row in verdict["cohorts"]:
        if row["pairs"]:
            acc = row["final_accuracy"]
            print(
                f"{row['cohort']:<15} accuracy {acc['mean']:6.2f}% [{acc['low']:6.2f}, {acc['high']:6.2f}]  "
                f"seed params added {row['seed_params_added']:7.0f}  train GFLOPs {row['train_gflops']:.3f}"
            )
    for check in verdict["checks"]:
        if not check["passed"]:
            print(f"check failed: {check['check']}: {check['detail']}", file=sys.stderr)
    print(f"verdict {verdict['verdict']}; wrote {out / 'report.md'}, {out / 'verdict.json'}")
    return 0
