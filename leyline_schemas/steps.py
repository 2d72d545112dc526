"""The durable record of one step (one host epoch of one env), published to the STEPS stream."""

from __future__ import annotations

from leyline_schemas.base import Message, Record
from leyline_schemas.directives import StepDirective
from leyline_schemas.lifecycle import TopologyManifest
from leyline_schemas.reports import EpochReport


class EpisodeSummary(Record, frozen=True, kw_only=True):
    """Tolaria's facts about an episode, attached to its last step."""

    final_accuracy: float
    host_params: int
    seed_params_added: int
    seeds_germinated: int
    seeds_fossilized: int
    seeds_pruned: int
    rollbacks: int = 0
    #: Host plus committed seeds (full amplitude at the end); seeds at 0 < α < 1 are uncommitted, at α = 0 dead.
    committed_params: int = 0
    uncommitted_params: int = 0
    dead_params: int = 0
    topology: TopologyManifest | None = None
    #: Σ over epochs of params_in_forward, and of training FLOPs (plans/proof-baselines.md §4).
    parameter_epochs: int = 0
    train_flops: int = 0
    #: sha256 over the final model's state dict (services/tolaria/host_checkpoint.py `state_sha256`): two episodes
    #: that end in the same weights, e.g. one resumed from a host checkpoint and one run straight through, agree.
    state_sha256: str = ""


class StepRecord(Message, frozen=True, kw_only=True):
    """One RL transition as Tolaria executed it; dedup id is `run/env/episode/attempt/step`.

    `attempt` is 0 for an episode's first run. An episode whose worker died, lost the bus or was stopped is taken
    up by whichever worker leases the env next, with `attempt` one higher; consumers keep the records of the
    highest attempt of an episode. The new attempt resumes from the episode's latest host checkpoint (epoch
    `resumed_from`, 0 for none) and first stores again, under its own attempt, the records of steps
    1..`resumed_from` that the checkpoint carries, so the highest attempt is always a whole trajectory of one
    model's training.
    """

    run_id: str
    arm: str
    env_id: int
    episode: int
    step: int
    policy_id: str
    policy_version: int
    report: EpochReport
    directive: StepDirective
    applied: bool
    refused_reason: str = ""
    done: bool = False
    truncated: bool = False
    summary: EpisodeSummary | None = None
    worker_id: str = ""
    attempt: int = 0
    resumed_from: int = 0

    @property
    def dedup_id(self) -> str:
        return f"{self.run_id}/{self.env_id}/{self.episode}/{self.attempt}/{self.step}"
