"""`esper bench learning` on the sandbox: train PPO, then compare it with the heuristic, random and the oracle.

Training uses Simic's ArmLearner exactly as the service does (step records → rewards → rollouts → PPO → safetensors
blob) and acts through Tamiyo's LearnedPolicy decoded from each published blob; evaluation runs every policy on the
same held-out seeds, so the comparison is paired. `--task sandbox-ladder` runs the ladder variant and adds the
ladder oracle and the usage figures of plans/kasmina2-phase0.md §12.3 item 5.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from leyline_schemas import INTERNAL_OPS, ArmSpec, BlueprintAction, LifecycleOp, RewardFamily, RewardMode, RunSpec
from leyline_schemas.steps import StepRecord
from services.experiments.sandbox import (
    DecideFn,
    SandboxConfig,
    SandboxEpisode,
    oracle_decision,
    oracle_ladder_decision,
)
from services.experiments.statistics import bootstrap_interval, paired_difference
from services.policy.weights import decode_policy
from services.simic.episodes import score_episode
from services.simic.learner import ArmLearner, LearnerConfig, RoundUpdate
from services.simic.ppo import PPOConfig
from services.simic.reward_config import RewardConfig
from services.tamiyo.learned import LearnedPolicy
from services.tamiyo.policies import PolicyBook
from services.tolaria.tasks import env_seed

HELD_OUT_SEED_BASE = 1_000_000  # training seeds come from env_seed(seed, round, env), far below this
#: §12.3 item 5: the ladder's usage and germination shares are read over the last 20 training rounds.
LADDER_USAGE_ROUNDS = 20


@dataclass(frozen=True)
class BenchSettings:
    """A few minutes on two cores at the defaults."""

    rounds: int = 60
    n_envs: int = 8
    eval_episodes: int = 40
    seed: int = 0
    reward_mode: RewardMode = RewardMode.SIMPLIFIED
    reward_family: RewardFamily = RewardFamily.CONTRIBUTION
    hidden: int = 64
    head_hidden: int = 32
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)
    ppo: PPOConfig = field(
        default_factory=lambda: PPOConfig(learning_rate=5e-3, epochs=8, minibatches=4, entropy_coef=0.01)
    )

    @property
    def task(self) -> str:
        return "sandbox-ladder" if self.sandbox.ladder else "sandbox"

    def run_spec(self) -> RunSpec:
        return RunSpec(
            run_id="bench-learning",
            task=self.task,
            slots=list(self.sandbox.slots),
            episodes=self.rounds * self.n_envs,
            episode_length=self.sandbox.episode_length,
            n_envs=self.n_envs,
            arms=[
                ArmSpec(
                    arm_id="main", policy_id="ppo-bench", reward_mode=self.reward_mode, reward_family=self.reward_family
                )
            ],
            seed=self.seed,
            learn=True,
        )


@dataclass
class LadderUsage:
    """§12.1–12.3: U = internal ops / non-WAIT ops over sampled, ladder-present steps, and applied germinations by
    blueprint, both over the training rounds from `since_round` on."""

    since_round: int
    internal_ops: int = 0
    acting_ops: int = 0
    germinations: dict[str, int] = field(default_factory=dict)

    def add(self, round_index: int, records: list[StepRecord]) -> None:
        if round_index < self.since_round:
            return
        for record in records:
            directive = record.directive
            op = directive.effective_op if record.applied else LifecycleOp.WAIT
            masks = directive.masks
            present = masks is not None and any(masks.op[internal] for internal in INTERNAL_OPS)
            if directive.decision is not None and present and op is not LifecycleOp.WAIT:
                self.acting_ops += 1
                self.internal_ops += int(op in INTERNAL_OPS)
            if op is LifecycleOp.GERMINATE:
                name = BlueprintAction(directive.raw_action.blueprint).name.lower()
                self.germinations[name] = self.germinations.get(name, 0) + 1

    @property
    def usage(self) -> float:
        return self.internal_ops / self.acting_ops if self.acting_ops else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "since_round": self.since_round,
            "usage": round(self.usage, 4),
            "internal_ops": self.internal_ops,
            "acting_ops": self.acting_ops,
            "germinations": dict(sorted(self.germinations.items())),
        }


def learned_policy(blob: bytes, policy_id: str) -> LearnedPolicy:
    return LearnedPolicy.from_weights(decode_policy(blob), policy_id=policy_id)


def train(
    settings: BenchSettings,
    on_round: Callable[[RoundUpdate], None] | None = None,
    on_episode: Callable[[int, list[StepRecord]], None] | None = None,
) -> ArmLearner:
    """Round after round: act with the published version, then update on the round's episodes."""
    spec = settings.run_spec()
    learner = ArmLearner.fresh(
        spec, 0, LearnerConfig(hidden=settings.hidden, head_hidden=settings.head_hidden, ppo=settings.ppo)
    )
    blob = learner.policy_blob()
    for round_index in range(settings.rounds):
        policy = learned_policy(blob, learner.policy_id)
        for env in range(settings.n_envs):
            episode = SandboxEpisode(
                settings.sandbox,
                seed=env_seed(spec.seed, round_index, spec.n_envs, env),
                run_id=spec.run_id,
                env_id=env,
                episode=round_index * spec.n_envs + env,
                policy_id=learner.policy_id,
            )
            records = episode.run(policy.decide)
            if on_episode is not None:
                on_episode(round_index, records)
            learner.accept(score_episode(records, learner.reward_config))
        update = learner.update()
        blob = update.blob
        if on_round is not None:
            on_round(update)
    return learner


def evaluate(decide: DecideFn, settings: BenchSettings, *, deterministic: bool = False) -> dict[str, list[float]]:
    """Returns, final accuracies and fossil counts of `decide` on the held-out seeds."""
    reward = RewardConfig(mode=settings.reward_mode, family=settings.reward_family)
    results: dict[str, list[float]] = {"returns": [], "accuracies": [], "fossilized": []}
    for index in range(settings.eval_episodes):
        episode = SandboxEpisode(
            settings.sandbox,
            seed=HELD_OUT_SEED_BASE + index,
            run_id="bench-eval",
            episode=index,
            deterministic=deterministic,
        )
        records = episode.run(decide)
        summary = records[-1].summary
        assert summary is not None
        results["returns"].append(score_episode(records, reward).episode_return)
        results["accuracies"].append(summary.final_accuracy)
        results["fossilized"].append(float(summary.seeds_fossilized))
    return results


def bench_learning(settings: BenchSettings, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train on the sandbox and report every policy's mean return and accuracy with bootstrap 95% intervals."""
    started = time.perf_counter()
    curve: list[dict[str, float]] = []

    def on_round(update: RoundUpdate) -> None:
        curve.append({"round": update.round_index, "mean_return": round(update.mean_return, 4)})
        if progress is not None and (update.round_index + 1) % 10 == 0:
            progress(f"round {update.round_index + 1}/{settings.rounds}: mean return {update.mean_return:+.3f}")

    ladder = settings.sandbox.ladder
    usage = LadderUsage(since_round=max(0, settings.rounds - LADDER_USAGE_ROUNDS))
    learner = train(settings, on_round, usage.add if ladder else None)
    trained_seconds = time.perf_counter() - started
    policy = learned_policy(learner.policy_blob(), learner.policy_id)
    book = PolicyBook()

    contenders: dict[str, tuple[DecideFn, bool]] = {
        "ppo": (policy.decide, False),
        "ppo_greedy": (policy.decide, True),
        "heuristic": (book.get("heuristic").decide, False),
        "random": (book.get("random").decide, False),
        "oracle": (oracle_decision, False),
    }
    if ladder:
        contenders["oracle_ladder"] = (oracle_ladder_decision, False)
    raw = {name: evaluate(decide, settings, deterministic=greedy) for name, (decide, greedy) in contenders.items()}
    policies = {
        name: {
            "mean_return": bootstrap_interval(values["returns"]).as_dict(),
            "final_accuracy": bootstrap_interval(values["accuracies"]).as_dict(),
            "seeds_fossilized": bootstrap_interval(values["fossilized"]).as_dict(),
        }
        for name, values in raw.items()
    }
    versus = {
        f"{a}_minus_{b}": {
            "return": paired_difference(raw[a]["returns"], raw[b]["returns"]).as_dict(),
            "final_accuracy": paired_difference(raw[a]["accuracies"], raw[b]["accuracies"]).as_dict(),
        }
        for a, b in (("ppo", "random"), ("ppo_greedy", "random"), ("ppo", "heuristic"), ("ppo_greedy", "heuristic"))
    }
    result: dict[str, Any] = {
        "task": settings.task,
        "reward_mode": settings.reward_mode.value,
        "rounds": settings.rounds,
        "n_envs": settings.n_envs,
        "episode_length": settings.sandbox.episode_length,
        "eval_episodes": settings.eval_episodes,
        "network": {"hidden": settings.hidden, "head_hidden": settings.head_hidden},
        "train_seconds": round(trained_seconds, 1),
        "total_seconds": round(time.perf_counter() - started, 1),
        "policies": policies,
        "paired_differences": versus,
        "training_curve": curve,
        "ppo_beats_random": versus["ppo_minus_random"]["return"]["low"] > 0,
    }
    if ladder:
        result["ladder"] = ladder_checks(usage, raw)
    return result


def ladder_checks(usage: LadderUsage, raw: dict[str, dict[str, list[float]]]) -> dict[str, Any]:
    """§12.3 item 5's sandbox check: U ≥ 0.10, ladder germinations ≥ conv_heavy's late in training, and PPO's
    mean return at least the conv_heavy oracle's minus 0.1."""
    figures = usage.as_dict()
    ppo_return = sum(raw["ppo"]["returns"]) / len(raw["ppo"]["returns"])
    oracle_return = sum(raw["oracle"]["returns"]) / len(raw["oracle"]["returns"])
    germinations = figures["germinations"]
    figures["oracle_ladder_minus_oracle"] = paired_difference(
        raw["oracle_ladder"]["returns"], raw["oracle"]["returns"]
    ).as_dict()
    figures["checks"] = {
        "usage_at_least_0_10": usage.usage >= 0.10,
        "ladder_germinations_at_least_conv_heavy": germinations.get("conv_ladder", 0)
        >= germinations.get("conv_heavy", 0),
        "return_within_0_1_of_conv_heavy_oracle": ppo_return >= oracle_return - 0.1,
    }
    return figures
