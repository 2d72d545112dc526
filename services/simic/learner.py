"""One learning arm of a run: its network, optimiser and normalisers, its round buffers, its updates and checkpoints.

Rounds follow ARCHITECTURE.md §6 (`leyline_schemas.rounds`): episode e belongs to round e // n_envs and env i to
arm i % len(arms). The update
of round r publishes version base + r + 1; Tolaria starts round r once a version ≥ r is out (strictly on-policy),
or at once with `run_ahead`, in which case steps acted with older versions. A step's version lag is the version the
learner holds when it trains on the step minus the version that acted. Lagging steps are importance-corrected: their
PPO ratio is taken against the behaviour log-probs their records carry (`ppo.stale_steps`), not against the weights
that start the update; an episode whose lag exceeds `max_version_lag` is left out of the update but still counted as
consumed. A run that continues a line (`ArmSpec.from_version`) starts from the checkpoint that produced the line's
latest version, optimiser and normalisers included, when there is one (`continue_line`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from leyline_schemas import ArmSpec, RunSpec, rounds
from services.policy.network import FactoredRecurrentActorCritic, NetworkConfig, seeded_network
from services.policy.normalization import ObservationNormalizer
from services.policy.weights import (
    PolicyBlobError,
    encode_policy,
    load_network,
    network_tensors,
    safetensors_metadata,
    sha256_hex,
)
from services.simic.episodes import ScoredEpisode
from services.simic.normalizers import RewardNormalizer, ValueNormalizer
from services.simic.ppo import PPOConfig, UpdateStats, ppo_update
from services.simic.reward_config import RewardConfig, require_matching_gamma
from services.simic.rollout import EpisodeRollout, build_rollout, collate

CHECKPOINT_FORMAT = "esper.simic.checkpoint/1"


@dataclass(frozen=True)
class LearnerConfig:
    """Network sizes and PPO settings of every arm a Simic instance trains."""

    hidden: int = 512
    head_hidden: int = 256
    lstm_layers: int = 1
    max_version_lag: int = 3
    ppo: PPOConfig = field(default_factory=PPOConfig)

    def network(self, num_slots: int) -> NetworkConfig:
        return NetworkConfig(
            num_slots=num_slots, hidden=self.hidden, head_hidden=self.head_hidden, lstm_layers=self.lstm_layers
        )

    def rewards(self, arm: ArmSpec) -> RewardConfig:
        """How `arm`'s episodes are scored: its mode, family and internal-op cost (when it sets one), at PPO's γ,
        read from here and nowhere else (§6.3)."""
        if arm.internal_op_cost is None:
            return RewardConfig(mode=arm.reward_mode, family=arm.reward_family, gamma=self.ppo.gamma)
        return RewardConfig(
            mode=arm.reward_mode, family=arm.reward_family, gamma=self.ppo.gamma, internal_op_cost=arm.internal_op_cost
        )


def arm_seed(run_seed: int, policy_id: str) -> int:
    """§7.3: base seed plus an md5-derived offset, so arms of one run start from different weights."""
    return run_seed + int(hashlib.md5(policy_id.encode()).hexdigest()[:8], 16) % 10000


def checkpoint_object(run_id: str, arm_id: str) -> str:
    return f"checkpoints/{run_id}/{arm_id}.safetensors"


@dataclass(frozen=True)
class RoundUpdate:
    """What one round's update produced: the new version's blob and the figures telemetry reports."""

    round_index: int
    version: int
    blob: bytes
    sha256: str
    stats: UpdateStats
    steps: int
    episodes: int
    stale_episodes: int
    lag_mean: float
    lag_max: int
    mean_return: float
    skipped: bool


class ArmLearner:
    """Trains one arm's policy line round by round; all state needed to resume lives in `checkpoint()`."""

    def __init__(
        self,
        spec: RunSpec,
        arm_index: int,
        config: LearnerConfig,
        network: FactoredRecurrentActorCritic,
        obs_normalizer: ObservationNormalizer,
        *,
        base_version: int = 0,
        rounds_done: int = 0,
        updates_done: int = 0,
        reward_normalizer: RewardNormalizer | None = None,
        value_normalizer: ValueNormalizer | None = None,
    ) -> None:
        if not 0 <= arm_index < len(spec.arms):
            raise ValueError(f"run {spec.run_id} has {len(spec.arms)} arms, not an arm {arm_index}")
        if network.config.num_slots != len(spec.slots):
            raise ValueError(f"network has {network.config.num_slots} slots, run {spec.run_id} has {len(spec.slots)}")
        self.spec = spec
        self.arm_index = arm_index
        self.config = config
        self.network = network
        self.obs_normalizer = obs_normalizer
        self.base_version = base_version
        self.rounds_done = rounds_done
        self.updates_done = updates_done
        self.reward_normalizer = reward_normalizer or RewardNormalizer()
        self.value_normalizer = value_normalizer or ValueNormalizer()
        self.reward_config = config.rewards(self.arm)
        self.optimizer = torch.optim.Adam(network.parameters(), lr=config.ppo.learning_rate, eps=config.ppo.adam_eps)
        self.pending: dict[int, dict[int, EpisodeRollout | None]] = {}
        self.note = ""

    @staticmethod
    def fresh(spec: RunSpec, arm_index: int, config: LearnerConfig) -> ArmLearner:
        """Version 0 of a new line: weights seeded from the run seed and the policy id."""
        net_config = config.network(len(spec.slots))
        network = seeded_network(net_config, arm_seed(spec.seed, spec.arms[arm_index].policy_id))
        return ArmLearner(spec, arm_index, config, network, ObservationNormalizer(net_config.obs_size))

    @property
    def arm(self) -> ArmSpec:
        return self.spec.arms[self.arm_index]

    @property
    def policy_id(self) -> str:
        return self.arm.policy_id

    @property
    def version(self) -> int:
        return self.base_version + self.rounds_done

    @property
    def total_rounds(self) -> int:
        return rounds.total_rounds(self.spec)

    @property
    def finished(self) -> bool:
        return self.rounds_done >= self.total_rounds

    def round_of(self, episode: int) -> int:
        return rounds.round_of_episode(self.spec, episode)

    def accept(self, scored: ScoredEpisode) -> bool:
        """Buffer a finished episode; False when its round is already in an applied update (a redelivery).

        An episode scored at another γ than PPO's is refused: its shaping would not telescope under this GAE (§6.3).
        """
        require_matching_gamma(scored.config, self.config.ppo.gamma)
        last = scored.records[-1]
        round_index = self.round_of(last.episode)
        if round_index < self.rounds_done:
            return False
        if last.episode not in rounds.round_episodes(self.spec, self.arm_index, round_index):
            raise ValueError(f"episode {last.episode} of env {last.env_id} is not one of arm {self.arm.arm_id}'s")
        episodes = self.pending.setdefault(round_index, {})
        if last.episode not in episodes:  # the first complete copy wins; a redelivered copy adds nothing
            episodes[last.episode] = build_rollout(scored, len(self.spec.slots))
        return True

    def accept_untrainable(self, episode: int) -> bool:
        """Count an episode whose records cannot be trained on as consumed, so its round can still complete."""
        round_index = self.round_of(episode)
        if round_index < self.rounds_done:
            return False
        self.pending.setdefault(round_index, {}).setdefault(episode, None)
        return True

    def ready(self) -> bool:
        """Whether every episode of the next round to train is buffered."""
        if self.finished:
            return False
        expected = rounds.round_episodes(self.spec, self.arm_index, self.rounds_done)
        return bool(expected) and expected <= set(self.pending.get(self.rounds_done, {}))

    def policy_blob(self) -> bytes:
        return encode_policy(
            self.network,
            self.obs_normalizer,
            policy_id=self.policy_id,
            version=self.version,
            value_scale=self.value_normalizer.scale,
        )

    def update(self) -> RoundUpdate:
        """Train on the next complete round and advance the version (the caller publishes and checkpoints)."""
        if not self.ready():
            raise RuntimeError(f"round {self.rounds_done} of arm {self.arm.arm_id} is not complete")
        round_index = self.rounds_done
        current = self.version
        buffered = self.pending.pop(round_index)
        rollouts = [r for _, r in sorted(buffered.items()) if r is not None]
        lags = [current - int(v) for r in rollouts for v, a in zip(r.policy_versions, r.acted, strict=True) if a]
        fresh = [r for r in rollouts if not r.acted.any() or self._max_lag(r, current) <= self.config.max_version_lag]
        stats = UpdateStats()
        skipped = not fresh
        if fresh:
            # Rewards in env order, so a replay after a restart normalises them identically.
            rewards = [self._normalized_rewards(r) for r in fresh]
            # The update reuses the rollout's frozen stats; the round's raw states are folded in right after (§1.18).
            obs = [self.obs_normalizer.normalize(r.obs) for r in fresh]
            boot = [self.obs_normalizer.normalize(r.bootstrap_obs) for r in fresh]
            batch = collate(fresh, obs, boot, rewards, chunk_length=self.spec.episode_length)
            self.obs_normalizer.update(torch.cat([r.obs for r in fresh]))
            stats = ppo_update(
                self.network,
                self.optimizer,
                batch,
                self.config.ppo,
                self.value_normalizer,
                updates_done=self.updates_done,
                total_updates=self.total_rounds,
                generator=torch.Generator().manual_seed(arm_seed(self.spec.seed, self.policy_id) + round_index),
                current_version=current,
            )
            skipped = stats.optimizer_steps == 0
            if not skipped:
                self.updates_done += 1  # §5.15: u advances only when a step was taken
        self.rounds_done += 1
        blob = self.policy_blob()
        return RoundUpdate(
            round_index=round_index,
            version=self.version,
            blob=blob,
            sha256=sha256_hex(blob),
            stats=stats,
            steps=sum(r.length for r in rollouts),
            episodes=len(rollouts),
            stale_episodes=len(rollouts) - len(fresh),
            lag_mean=sum(lags) / len(lags) if lags else 0.0,
            lag_max=max(lags, default=0),
            mean_return=sum(r.episode_return for r in rollouts) / len(rollouts) if rollouts else 0.0,
            skipped=skipped,
        )

    @staticmethod
    def _max_lag(rollout: EpisodeRollout, current: int) -> int:
        return current - int(rollout.policy_versions[rollout.acted].min())

    def _normalized_rewards(self, rollout: EpisodeRollout) -> torch.Tensor:
        # Rollback-forfeited rewards are already in normalised units and bypass the normaliser (§6.11).
        values = [
            float(r) if rewritten else self.reward_normalizer(float(r))
            for r, rewritten in zip(rollout.rewards, rollout.rewritten, strict=True)
        ]
        return torch.tensor(values, dtype=torch.float32)

    # Checkpoints: safetensors only, like the weights.

    def checkpoint(self, note: str = "") -> bytes:
        """Network, optimiser, every normaliser and the round counters, as safetensors bytes; `note` rides along."""
        tensors = {
            **network_tensors(self.network),
            **self.obs_normalizer.tensors(),
            **self.reward_normalizer.tensors(),
            **self.value_normalizer.tensors(),
        }
        for index, param in enumerate(self.network.parameters()):
            for name, value in self.optimizer.state.get(param, {}).items():
                tensors[f"optim.{index}.{name}"] = torch.as_tensor(value).detach().clone().contiguous()
        metadata = {
            "format": CHECKPOINT_FORMAT,
            "run_id": self.spec.run_id,
            "arm_id": self.arm.arm_id,
            "policy_id": self.policy_id,
            "network": json.dumps(self.network.config.as_dict(), sort_keys=True),
            "base_version": str(self.base_version),
            "rounds_done": str(self.rounds_done),
            "updates_done": str(self.updates_done),
            "ppo": json.dumps(asdict(self.config.ppo), sort_keys=True),
            "note": note,
        }
        return save_tensors(tensors, metadata=metadata)

    @staticmethod
    def restore(spec: RunSpec, arm_index: int, config: LearnerConfig, blob: bytes) -> ArmLearner:
        """Resume from `checkpoint()` bytes; a checkpoint of another run or arm is refused."""
        metadata = _checkpoint_metadata(blob)
        arm = spec.arms[arm_index]
        if (metadata.get("run_id"), metadata.get("arm_id")) != (spec.run_id, arm.arm_id):
            raise PolicyBlobError(f"checkpoint of {metadata.get('run_id')}/{metadata.get('arm_id')}, not this arm")
        learner = ArmLearner._from_checkpoint(
            spec, arm_index, config, blob, int(metadata["base_version"]), int(metadata["rounds_done"])
        )
        learner.note = metadata.get("note", "")
        return learner

    @staticmethod
    def continue_line(spec: RunSpec, arm_index: int, config: LearnerConfig, blob: bytes, version: int) -> ArmLearner:
        """A new run's learner for a line whose `version` another run's checkpoint `blob` produced: the same network,
        optimiser, normalisers and update count, with this run's rounds counted on from `version`."""
        metadata = _checkpoint_metadata(blob)
        policy_id = spec.arms[arm_index].policy_id
        produced = int(metadata.get("base_version", -1)) + int(metadata.get("rounds_done", 0))
        if metadata.get("policy_id") != policy_id or produced != version:
            raise PolicyBlobError(
                f"checkpoint of {metadata.get('policy_id')} v{produced}, not of {policy_id} v{version}"
            )
        return ArmLearner._from_checkpoint(spec, arm_index, config, blob, version, 0)

    @staticmethod
    def _from_checkpoint(
        spec: RunSpec, arm_index: int, config: LearnerConfig, blob: bytes, base_version: int, rounds_done: int
    ) -> ArmLearner:
        metadata = safetensors_metadata(blob)
        tensors = load_tensors(blob)
        network = load_network(tensors, NetworkConfig.from_dict(json.loads(metadata["network"])))
        learner = ArmLearner(
            spec,
            arm_index,
            config,
            network,
            ObservationNormalizer.from_tensors(tensors),
            base_version=base_version,
            rounds_done=rounds_done,
            updates_done=int(metadata["updates_done"]),
            reward_normalizer=RewardNormalizer.from_tensors(tensors),
            value_normalizer=ValueNormalizer.from_tensors(tensors),
        )
        state = learner.optimizer.state_dict()
        for index, _param in enumerate(network.parameters()):
            entries = {
                name.split(".", 2)[2]: tensor for name, tensor in tensors.items() if name.startswith(f"optim.{index}.")
            }
            if entries:
                state["state"][index] = entries
        learner.optimizer.load_state_dict(state)
        return learner


def _checkpoint_metadata(blob: bytes) -> dict[str, str]:
    metadata = safetensors_metadata(blob)
    if metadata.get("format") != CHECKPOINT_FORMAT:
        raise PolicyBlobError(f"format {metadata.get('format')!r} is not {CHECKPOINT_FORMAT}")
    return metadata
