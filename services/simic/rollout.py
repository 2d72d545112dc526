"""From step records to training tensors: one EpisodeRollout per env episode, collated into a RolloutBatch.

Each episode is one contiguous BPTT sequence from the zero hidden state (reference/tamiyo_simic.md §5.10). Heads
are re-masked from the STORED op exactly as at sampling time (§2.7); credit uses the EFFECTIVE op (§2.8, §2.13).

The bootstrap of a truncated episode (§5.4) needs V(s_{T+1}), but a step record holds the PRE-action observation
of its step and no epoch T+1 is ever trained. As in the reference, the post-action state is the last epoch's report
seen through the post-mutation slot states and the executed op: Kasmina's `build_observation` is applied to it
here, and the learner evaluates it with the hidden state carried out of the full-sequence unroll.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from leyline_schemas import (
    HEAD_NAMES,
    DecisionOutcome,
    LifecycleConfig,
    LifecycleOp,
    SlotConfig,
    SlotSpec,
    StepRecord,
    StepRequest,
    Topology,
)
from leyline_schemas.heads import available_heads, causal_heads, conditioned_masks, head_sizes, is_forced
from services.observation.features import build_observation
from services.simic.episodes import ScoredEpisode


class RolloutError(ValueError):
    """Step records that cannot be trained on (no masks, an action outside its mask, a wrong slot count)."""


@dataclass
class EpisodeRollout:
    """One env episode as tensors of length T (raw observations; normalisation happens in the learner)."""

    env_id: int
    episode: int
    obs: torch.Tensor
    blueprints: torch.Tensor
    actions: dict[str, torch.Tensor]
    masks: dict[str, torch.Tensor]
    causal: dict[str, torch.Tensor]
    available: dict[str, torch.Tensor]
    forced: torch.Tensor
    acted: torch.Tensor
    rewards: torch.Tensor
    rewritten: torch.Tensor
    terminal: torch.Tensor
    starts: torch.Tensor
    bootstrap: bool
    bootstrap_obs: torch.Tensor
    bootstrap_blueprints: torch.Tensor
    contribution_targets: torch.Tensor
    contribution_mask: torch.Tensor
    policy_versions: torch.Tensor
    rollout_log_probs: dict[str, torch.Tensor]
    episode_return: float

    @property
    def length(self) -> int:
        return int(self.obs.shape[0])


def post_action_observation(record: StepRecord) -> tuple[list[float], list[int]]:
    """The observation of the state after the last step's action (see the module docstring)."""
    directive = record.directive
    slots = list(directive.slots or directive.observed_slots)
    # Only the slot count, max_epochs and the report feed the observation; topology and channels do not.
    slot_config = SlotConfig(
        topology=Topology.CNN,
        slots=[SlotSpec(slot_id=s.slot_id, channels=1, order=i) for i, s in enumerate(slots)],
    )
    succeeded = record.applied and directive.outcome in (DecisionOutcome.APPLIED, DecisionOutcome.WAITED)
    request = StepRequest(
        run_id=record.run_id,
        env_id=record.env_id,
        episode=record.episode,
        epoch=record.report.epoch,
        policy_id=record.policy_id,
        slot_config=slot_config,
        lifecycle=LifecycleConfig(max_epochs=record.report.max_epochs),
        report=record.report,
        slots=slots,
        last_op=directive.effective_op if record.applied else LifecycleOp.WAIT,
        last_action_succeeded=succeeded,
    )
    return build_observation(request, slots)


def _head_value(record: StepRecord, head: str) -> int:
    return int(getattr(record.directive.raw_action, head))


def build_rollout(scored: ScoredEpisode, num_slots: int) -> EpisodeRollout:
    """Tensors of one scored episode; raises RolloutError for records a policy could not have produced."""
    records = scored.records
    if not records:
        raise RolloutError("an episode needs at least one step")
    sizes = head_sizes(num_slots)
    obs: list[list[float]] = []
    blueprints: list[list[int]] = []
    actions: dict[str, list[int]] = {head: [] for head in HEAD_NAMES}
    masks: dict[str, list[list[bool]]] = {head: [] for head in HEAD_NAMES}
    causal: dict[str, list[bool]] = {head: [] for head in HEAD_NAMES}
    available: dict[str, list[bool]] = {head: [] for head in HEAD_NAMES}
    rollout_log_probs: dict[str, list[float]] = {head: [] for head in HEAD_NAMES}
    forced, acted, starts, versions = [], [], [], []
    targets: list[list[float]] = []
    target_mask: list[list[bool]] = []
    for t, record in enumerate(records):
        directive = record.directive
        where = f"env {record.env_id} episode {record.episode} step {record.step}"
        if directive.masks is None:
            raise RolloutError(f"{where}: the step record carries no action masks")
        if obs and len(directive.observation) != len(obs[0]):
            raise RolloutError(f"{where}: observation width changed within the episode")
        if len(directive.blueprint_indices) != num_slots or len(directive.masks.slot_by_op[0]) != num_slots:
            raise RolloutError(f"{where}: {len(directive.blueprint_indices)} slots, the policy has {num_slots}")
        obs.append(list(directive.observation))
        blueprints.append(list(directive.blueprint_indices))
        decision = directive.decision
        sampled = decision is not None
        op = _head_value(record, "op")
        rows = conditioned_masks(directive.masks, op)
        effective = directive.effective_op if record.applied else LifecycleOp.WAIT
        relevant = causal_heads(effective)
        usable = available_heads(directive.masks)
        for head in HEAD_NAMES:
            value = _head_value(record, head)
            if not 0 <= value < sizes[head] or (sampled and not rows[head][value]):
                raise RolloutError(f"{where}: head {head} value {value} is outside its op-conditioned mask")
            actions[head].append(value)
            masks[head].append(rows[head])
            causal[head].append(head in relevant)
            available[head].append(head in usable)
            rollout_log_probs[head].append(getattr(decision.log_probs, head) if decision is not None else 0.0)
        forced.append(is_forced(directive.masks))
        acted.append(sampled)
        # Tolaria resets the policy's memory at a governor rollback, as it does at an episode start.
        starts.append(t == 0 or record.report.governor is not None)
        versions.append(record.policy_version)
        contributions = {slot.slot_id: slot.contribution for slot in record.report.slots}
        slot_ids = [state.slot_id for state in directive.observed_slots] or [""] * num_slots
        measured = [contributions.get(slot_id) for slot_id in slot_ids]
        targets.append([0.0 if c is None else c for c in measured])
        target_mask.append([c is not None for c in measured])

    last = records[-1]
    terminal = list(scored.terminal)
    bootstrap = last.done and last.truncated and not terminal[-1]
    boot_obs, boot_blueprints = post_action_observation(last) if bootstrap else (obs[-1], blueprints[-1])
    return EpisodeRollout(
        env_id=last.env_id,
        episode=last.episode,
        obs=torch.tensor(obs, dtype=torch.float32),
        blueprints=torch.tensor(blueprints, dtype=torch.long),
        actions={head: torch.tensor(v, dtype=torch.long) for head, v in actions.items()},
        masks={head: torch.tensor(v, dtype=torch.bool) for head, v in masks.items()},
        causal={head: torch.tensor(v, dtype=torch.bool) for head, v in causal.items()},
        available={head: torch.tensor(v, dtype=torch.bool) for head, v in available.items()},
        forced=torch.tensor(forced, dtype=torch.bool),
        acted=torch.tensor(acted, dtype=torch.bool),
        rewards=torch.tensor(scored.rewards, dtype=torch.float32),
        rewritten=torch.tensor(scored.rewritten, dtype=torch.bool),
        terminal=torch.tensor(terminal, dtype=torch.bool),
        starts=torch.tensor(starts, dtype=torch.bool),
        bootstrap=bootstrap,
        bootstrap_obs=torch.tensor(boot_obs, dtype=torch.float32),
        bootstrap_blueprints=torch.tensor(boot_blueprints, dtype=torch.long),
        contribution_targets=torch.tensor(targets, dtype=torch.float32),
        contribution_mask=torch.tensor(target_mask, dtype=torch.bool),
        policy_versions=torch.tensor(versions, dtype=torch.long),
        rollout_log_probs={head: torch.tensor(v, dtype=torch.float32) for head, v in rollout_log_probs.items()},
        episode_return=scored.episode_return,
    )


@dataclass
class RolloutBatch:
    """E env sequences of equal length T, observations already normalised with the rollout's frozen stats."""

    obs: torch.Tensor
    blueprints: torch.Tensor
    actions: dict[str, torch.Tensor]
    masks: dict[str, torch.Tensor]
    causal: dict[str, torch.Tensor]
    available: dict[str, torch.Tensor]
    forced: torch.Tensor
    acted: torch.Tensor
    rewards: torch.Tensor
    terminal: torch.Tensor
    starts: torch.Tensor
    bootstrap: torch.Tensor
    bootstrap_obs: torch.Tensor
    bootstrap_blueprints: torch.Tensor
    contribution_targets: torch.Tensor
    contribution_mask: torch.Tensor
    policy_versions: torch.Tensor
    rollout_log_probs: dict[str, torch.Tensor]
    extras: dict[str, float] = field(default_factory=dict)

    @property
    def n_envs(self) -> int:
        return int(self.obs.shape[0])

    @property
    def length(self) -> int:
        return int(self.obs.shape[1])


def collate(
    rollouts: list[EpisodeRollout],
    normalized_obs: list[torch.Tensor],
    normalized_bootstrap_obs: list[torch.Tensor],
    rewards: list[torch.Tensor],
    chunk_length: int,
) -> RolloutBatch:
    """Stack whole episodes; every episode must fit one BPTT chunk and all must share one length (§5.10)."""
    if not rollouts:
        raise RolloutError("a batch needs at least one episode")
    lengths = {r.length for r in rollouts}
    if max(lengths) > chunk_length:
        raise ValueError(f"BPTT invariant: an episode has {max(lengths)} steps, more than chunk_length {chunk_length}")
    if len(lengths) != 1:
        raise RolloutError(f"episodes of one batch must share a length, got {sorted(lengths)}")

    def stack(values: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack(values)

    def stack_heads(name: str) -> dict[str, torch.Tensor]:
        return {head: stack([getattr(r, name)[head] for r in rollouts]) for head in HEAD_NAMES}

    return RolloutBatch(
        obs=stack(normalized_obs),
        blueprints=stack([r.blueprints for r in rollouts]),
        actions=stack_heads("actions"),
        masks=stack_heads("masks"),
        causal=stack_heads("causal"),
        available=stack_heads("available"),
        forced=stack([r.forced for r in rollouts]),
        acted=stack([r.acted for r in rollouts]),
        rewards=stack(rewards),
        terminal=stack([r.terminal for r in rollouts]),
        starts=stack([r.starts for r in rollouts]),
        bootstrap=torch.tensor([r.bootstrap for r in rollouts], dtype=torch.bool),
        bootstrap_obs=stack(normalized_bootstrap_obs),
        bootstrap_blueprints=stack([r.bootstrap_blueprints for r in rollouts]),
        contribution_targets=stack([r.contribution_targets for r in rollouts]),
        contribution_mask=stack([r.contribution_mask for r in rollouts]),
        policy_versions=stack([r.policy_versions for r in rollouts]),
        rollout_log_probs=stack_heads("rollout_log_probs"),
    )
