"""Learning runs in miniature for Simic's tests: sandbox episodes played by a tiny learned policy."""

from __future__ import annotations

import leyline_schemas as L
from leyline_schemas.rounds import round_episodes
from services.experiments.sandbox import SandboxConfig, SandboxEpisode
from services.policy.weights import decode_policy
from services.simic.episodes import ScoredEpisode, score_episode
from services.simic.learner import ArmLearner, LearnerConfig
from services.simic.ppo import PPOConfig
from services.simic.rollout import EpisodeRollout, RolloutBatch, collate
from services.tamiyo.learned import LearnedPolicy
from services.tolaria.tasks import env_seed

LENGTH = 12
SANDBOX = SandboxConfig(episode_length=LENGTH, slots=("r0c0", "r0c1"))


def run_spec(n_envs: int = 2, rounds: int = 2, arms: int = 1, seed: int = 5) -> L.RunSpec:
    return L.RunSpec(
        run_id="simic-test",
        task="sandbox",
        slots=list(SANDBOX.slots),
        episodes=n_envs * rounds,
        episode_length=LENGTH,
        n_envs=n_envs,
        arms=[L.ArmSpec(arm_id=f"arm{i}", policy_id=f"line-{i}", reward_mode=L.RewardMode.SHAPED) for i in range(arms)],
        seed=seed,
        learn=True,
    )


def learner_config(**ppo: object) -> LearnerConfig:
    return LearnerConfig(hidden=16, head_hidden=8, ppo=PPOConfig(**{"epochs": 2, "minibatches": 2, **ppo}))  # type: ignore[arg-type]


def play_round(learner: ArmLearner, round_index: int, *, version: int | None = None) -> list[ScoredEpisode]:
    """Every episode of the arm's round, acted by the learner's current published version."""
    spec = learner.spec
    weights = decode_policy(learner.policy_blob())
    policy = LearnedPolicy.from_weights(weights, policy_id=learner.policy_id)
    if version is not None:
        policy.version = version
    scored = []
    for episode in sorted(round_episodes(spec, learner.arm_index, round_index)):
        env = episode % spec.n_envs
        records = SandboxEpisode(
            SANDBOX,
            seed=env_seed(spec.seed, round_index, spec.n_envs, env),
            run_id=spec.run_id,
            arm_id=learner.arm.arm_id,
            env_id=env,
            episode=episode,
            policy_id=learner.policy_id,
        ).run(policy.decide)
        scored.append(score_episode(records, learner.reward_config))
    return scored


def collate_rollouts(learner: ArmLearner, rollouts: list[EpisodeRollout], chunk_length: int) -> RolloutBatch:
    """`rollouts` as one PPO batch, normalised by the learner's observation statistics."""
    norm = learner.obs_normalizer
    return collate(
        rollouts,
        [norm.normalize(r.obs) for r in rollouts],
        [norm.normalize(r.bootstrap_obs) for r in rollouts],
        [r.rewards for r in rollouts],
        chunk_length=chunk_length,
    )
