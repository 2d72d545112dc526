"""Run arithmetic: which arm an env plays and which round an episode belongs to (ARCHITECTURE.md §6).

Episode e belongs to round e // n_envs and env i plays arm i % len(arms). Tolaria schedules episodes by it and Simic
gathers rounds by it, so both read it from here.
"""

from __future__ import annotations

import math

from leyline_schemas.runs import ArmSpec, RunSpec


def total_rounds(spec: RunSpec) -> int:
    """How many rounds the run's episodes fill (the last may be short)."""
    return math.ceil(spec.episodes / spec.n_envs)


def arm_index_of_env(spec: RunSpec, env_id: int) -> int:
    return env_id % len(spec.arms)


def arm_of_env(spec: RunSpec, env_id: int) -> ArmSpec:
    return spec.arms[arm_index_of_env(spec, env_id)]


def round_of_episode(spec: RunSpec, episode: int) -> int:
    return episode // spec.n_envs


def env_episodes(spec: RunSpec, env_id: int) -> list[int]:
    """The episode indices env `env_id` runs: round r of env i is episode r·n_envs + i."""
    return list(range(env_id, spec.episodes, spec.n_envs))


def round_episodes(spec: RunSpec, arm_index: int, round_index: int) -> set[int]:
    """The episodes of `round_index` that the arm's envs run."""
    first = round_index * spec.n_envs
    return {
        first + env
        for env in range(spec.n_envs)
        if arm_index_of_env(spec, env) == arm_index and first + env < spec.episodes
    }


def required_policy_version(spec: RunSpec, round_index: int, arm: ArmSpec | None = None) -> int:
    """The oldest policy version that may act for `arm` in round `round_index`.

    Counted from the arm's `from_version` (0 for a fresh line): strictly on-policy learning needs the version trained
    on the round before, `run_ahead` learning any version from the start on, and an evaluation exactly the version it
    evaluates (no newer one is published while it runs).
    """
    start = arm.from_version if arm is not None else 0
    return start + (round_index if spec.learn and not spec.run_ahead else 0)
