"""Per-env episode buffers: step records grouped until an episode is whole, then scored under the arm's reward."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from leyline_schemas import EpisodeOutcome, RewardMode, StepRecord
from services.simic.reward_config import RewardBreakdown, RewardConfig
from services.simic.reward_inputs import reward_inputs_from_step
from services.simic.reward_ledgers import EpisodeRewardState
from services.simic.rewards import compute_reward, episode_rollback_rewrite

EpisodeKey = tuple[str, int, int]


@dataclass
class EpisodeBuffer:
    """The records of one (run, env, episode) with the bus messages to acknowledge once it is consumed."""

    key: EpisodeKey
    records: dict[int, StepRecord] = field(default_factory=dict)
    messages: list[Any] = field(default_factory=list)
    attempt: int = 0
    superseded: int = 0  # records dropped because a later attempt of the episode replaced them

    def add(self, record: StepRecord, message: Any) -> bool:
        """Keep the first copy of each step of the latest attempt; False for a record that is not kept.

        A record of a later attempt (the episode restarted on another lease) drops everything kept from earlier
        attempts, so the scored trajectory is one run of the episode; records of an earlier attempt that arrive
        late, and redeliveries, are not kept. Every message is held for acknowledgement either way.
        """
        self.messages.append(message)
        if record.attempt < self.attempt:
            return False
        if record.attempt > self.attempt:
            self.superseded += len(self.records)
            self.records.clear()
            self.attempt = record.attempt
        if record.step in self.records:
            return False
        self.records[record.step] = record
        return True

    @property
    def complete(self) -> bool:
        last = max(self.records, default=0)
        return last > 0 and self.records[last].done and all(step in self.records for step in range(1, last + 1))

    def ordered(self) -> list[StepRecord]:
        return [self.records[step] for step in sorted(self.records)]


@dataclass(frozen=True)
class ScoredEpisode:
    """Raw rewards per step; `rewritten` marks rollback-forfeited rewards (already in normalised units, §6.11) and
    `terminal` the true terminals a rollback creates (the last executed transition before it)."""

    records: list[StepRecord]
    rewards: list[float]
    breakdowns: list[RewardBreakdown]
    rewritten: list[bool]
    terminal: list[bool]
    config: RewardConfig  # what the rewards were computed under; a learner checks its γ against PPO's

    @property
    def episode_return(self) -> float:
        return sum(self.rewards)


def score_episode(records: list[StepRecord], config: RewardConfig) -> ScoredEpisode:
    """Rewards of every step from the pre-action state; a governor rollback zeroes the prefix and puts the
    death penalty on the last executed transition before it (reference/tamiyo_simic.md §6.11, ARCHITECTURE.md §11)."""
    state = EpisodeRewardState()
    rewards: list[float] = []
    breakdowns: list[RewardBreakdown] = []
    rewritten: list[bool] = []
    terminal: list[bool] = []
    previous: StepRecord | None = None
    segment_start = 0
    for index, record in enumerate(records):
        if record.report.governor is not None and index > segment_start:
            rewards[segment_start:index] = episode_rollback_rewrite(rewards[segment_start:index])
            rewritten[segment_start:index] = [True] * (index - segment_start)
            terminal[index - 1] = True
            segment_start = index
        breakdown = compute_reward(config, reward_inputs_from_step(record, previous), state)
        rewards.append(breakdown.total)
        breakdowns.append(breakdown)
        rewritten.append(False)
        terminal.append(record.done and not record.truncated)
        previous = record
    return ScoredEpisode(records, rewards, breakdowns, rewritten, terminal, config)


def episode_outcome(scored: ScoredEpisode, mode: RewardMode) -> EpisodeOutcome:
    last = scored.records[-1]
    summary = last.summary
    if summary is None:
        raise ValueError(f"episode {last.episode} of env {last.env_id} ended without a summary")
    return EpisodeOutcome(
        env_id=last.env_id,
        episode=last.episode,
        final_accuracy=summary.final_accuracy,
        host_params=summary.host_params,
        seed_params_added=summary.seed_params_added,
        seeds_germinated=summary.seeds_germinated,
        seeds_fossilized=summary.seeds_fossilized,
        seeds_pruned=summary.seeds_pruned,
        episode_return=scored.episode_return,
        reward_mode=mode,
        length=len(scored.records),
        policy_id=last.policy_id,
        rollbacks=summary.rollbacks,
        committed_params=summary.committed_params,
        uncommitted_params=summary.uncommitted_params,
        dead_params=summary.dead_params,
        topology=summary.topology,
        parameter_epochs=summary.parameter_epochs,
        train_flops=summary.train_flops,
    )
