"""Runs, env leases and active policies: what lives in the ESPER_RUNS and ESPER_POLICIES KV buckets."""

from __future__ import annotations

from leyline_schemas.base import Message, Record
from leyline_schemas.enums import BlueprintAction, PolicyKind, RewardFamily, RewardMode, RunState
from leyline_schemas.lifecycle import TopologyManifest


class ArmSpec(Record, frozen=True, kw_only=True):
    """One arm of a run: a policy id trained (or evaluated) under one reward mode."""

    arm_id: str
    policy_id: str
    reward_mode: RewardMode = RewardMode.SIMPLIFIED
    #: LOSS scores by validation-loss deltas; it exists only with reward mode SHAPED (reference §6.1).
    reward_family: RewardFamily = RewardFamily.CONTRIBUTION
    #: The line's version this arm starts from. An evaluation arm is decided by this version or a newer one (the
    #: version it evaluates); a learning arm that continues a line trains it from here, so round r needs
    #: `from_version + r` (leyline_schemas.rounds.required_policy_version). 0: a fresh line, or any version.
    from_version: int = 0
    #: What a GROW/SHRINK_INTERNAL costs in reward (plans/kasmina2-phase0.md §8.1; a §12.5 pivot lever); None:
    #: Simic's default.
    internal_op_cost: float | None = None


class RunSpec(Message, frozen=True, kw_only=True):
    """What a run is: task, slots, episode length, envs, arms, seed and budgets (ARCHITECTURE.md §6)."""

    run_id: str
    task: str = "digits"
    slots: list[str] = []
    episodes: int = 1
    episode_length: int = 40
    n_envs: int = 1
    arms: list[ArmSpec] = []
    seed: int = 42
    max_seeds: int = 0
    max_batches: int = 0
    batch_size: int = 64
    permissive_gates: bool = True
    auto_forward_gates: list[int] = []
    synthetic: bool = False
    learn: bool = False
    run_ahead: bool = False
    created_at: float = 0.0
    #: The off-switch control (plans/proof-baselines.md §3.1): False builds the host with no slots and never asks
    #: Kasmina; every step is a synthetic WAIT with outcome `morphogenesis_off`.
    morphogenesis: bool = True
    #: The static-final control (§3.3): env index → the architecture to build from scratch before epoch 1 (seeds
    #: with fresh weights, FOSSILIZED at α = 1).
    env_topologies: dict[int, TopologyManifest] = {}
    #: A label carried into reports (e.g. "static-final"); it changes nothing.
    cohort: str = ""
    #: Tolaria writes a host checkpoint of each env after every `checkpoint_every` epochs (0: never), and a worker
    #: that takes an interrupted episode over resumes it from there: the default loses at most one epoch.
    checkpoint_every: int = 1
    #: The blueprints germinations may use (plans/kasmina2-phase0.md §4.4); empty means the topology's full set.
    blueprints: list[BlueprintAction] = []
    #: The internal-op pivot levers (plans/kasmina2-phase0.md §12.5), passed to every step's LifecycleConfig:
    #: epochs after a level change during which internal ops are masked, and internal ops only while alpha holds.
    internal_op_cooldown_epochs: int = 0
    internal_ops_require_alpha_hold: bool = False


class RunAccepted(Message, frozen=True, kw_only=True):
    run_id: str
    n_envs: int
    episodes: int
    slot_ids: list[str]
    host_params: int


class RunStopRequest(Message, frozen=True, kw_only=True):
    run_id: str
    reason: str = ""


class RunStatusRequest(Message, frozen=True, kw_only=True):
    run_id: str


class RunResumeRequest(Message, frozen=True, kw_only=True):
    """Put a STOPPED or FAILED run back to RUNNING: its envs are leased again and go on from the episodes done."""

    run_id: str
    by: str = ""


class RunAttachment(Message, frozen=True, kw_only=True):
    """A client following a run, under `attach.<run_id>` in ESPER_RUNS, renewed well before `expires_at`.

    A run with an attachment belongs to that client: once the attachment has lapsed (the client was killed or lost
    the bus for longer than `ttl`), Tolaria stops the run with the reason instead of running it on. A run without
    one is detached and runs until it ends or is stopped.
    """

    run_id: str
    client_id: str
    ttl: float
    expires_at: float


class EnvProgress(Record, frozen=True, kw_only=True):
    env_id: int
    episodes_done: int = 0
    current_episode: int = -1
    epoch: int = 0
    worker_id: str = ""


class RunStatus(Message, frozen=True, kw_only=True):
    run_id: str
    state: RunState
    episodes_total: int = 0
    episodes_done: int = 0
    envs: list[EnvProgress] = []
    message: str = ""
    updated_at: float = 0.0


class EnvLease(Message, frozen=True, kw_only=True):
    """A worker's claim on one env of a run, kept by compare-and-set and renewed before `expires_at`."""

    run_id: str
    env_id: int
    worker_id: str
    expires_at: float
    episode: int = -1
    episodes_done: int = 0
    released: bool = False
    attempt: int = 0  # of `episode`: one more each time the episode restarts under a new lease
    #: Set just before the final step record of (`episode`, `attempt`) is published: the STEPS sequence it is
    #: stored after. A worker that takes the lease over looks there before running the episode again.
    final_from: int = 0


class WorkerPresence(Message, frozen=True, kw_only=True):
    """A Tolaria env worker present on the bus, under `worker.<worker_id>` in ESPER_RUNS, renewed every poll until
    `expires_at`: the workers present split the unfinished envs of running runs between them (fair leasing)."""

    worker_id: str
    max_envs: int
    expires_at: float


class ActivePolicy(Message, frozen=True, kw_only=True):
    """The version a policy id currently points at; weights are in ESPER_WEIGHTS under `object_name`."""

    policy_id: str
    kind: PolicyKind
    version: int = 0
    sha256: str = ""
    object_name: str = ""
    updated_at: float = 0.0
    config: dict[str, int] = {}
    #: The learner checkpoint (ESPER_WEIGHTS object) that produced this version, so that a later run can continue
    #: the line with its optimiser and normalisers; empty for a repointed or imported version.
    checkpoint: str = ""


class PolicyListRequest(Message, frozen=True, kw_only=True):
    """Asks every Tamiyo instance which policy lines it serves; `policy_id` filters (empty = all)."""

    policy_id: str = ""


class ServedPolicyInfo(Record, frozen=True, kw_only=True):
    """One policy line as a Tamiyo instance serves it right now."""

    policy_id: str
    kind: PolicyKind
    version: int = 0
    sha256: str = ""
    loaded_at: float = 0.0


class ServedPolicies(Message, frozen=True, kw_only=True):
    """A Tamiyo instance's answer to PolicyListRequest."""

    instance: str
    policies: list[ServedPolicyInfo] = []
