"""Telemetry events: one envelope with a tagged union of typed payloads (reference/tolaria_karn.md §7)."""

from __future__ import annotations

from leyline_schemas.base import Message, Record
from leyline_schemas.enums import BlueprintAction, RewardMode, SeedInternalKind, Severity
from leyline_schemas.lifecycle import TopologyManifest
from leyline_schemas.reports import EpochCompute


class SeedGerminated(Record, frozen=True, kw_only=True, tag="seed_germinated", tag_field="kind"):
    slot_id: str
    seed_id: str
    blueprint: BlueprintAction
    params: int = 0
    alpha: float = 0.0
    blend_tempo_epochs: int = 5
    alpha_curve: str = ""
    internal_level: int = 0
    internal_max_level: int = 1


class SeedStageChanged(Record, frozen=True, kw_only=True, tag="seed_stage_changed", tag_field="kind"):
    slot_id: str
    seed_id: str
    from_stage: str
    to_stage: str
    alpha: float = 0.0
    accuracy_delta: float = 0.0
    epochs_in_stage: int = 0


class SeedGateEvaluated(Record, frozen=True, kw_only=True, tag="seed_gate_evaluated", tag_field="kind"):
    slot_id: str
    gate: int
    passed: bool
    target_stage: str
    checks_passed: list[str] = []
    checks_failed: list[str] = []
    message: str = ""


class SeedFossilized(Record, frozen=True, kw_only=True, tag="seed_fossilized", tag_field="kind"):
    slot_id: str
    seed_id: str
    blueprint: BlueprintAction
    improvement: float = 0.0
    params_added: int = 0
    alpha: float = 1.0
    epochs_total: int = 0
    counterfactual: float | None = None
    #: The internal level frozen at fossilization (0 for seeds without internal structure).
    internal_level: int = 0


class SeedInternalLevelChanged(Record, frozen=True, kw_only=True, tag="seed_internal_level_changed", tag_field="kind"):
    """A microstructured seed grew or shrank one level (plans/kasmina2-phase0.md §4.6).

    Kasmina emits it with `active_params` 0; Tolaria, which holds the tensors, fills it in when it publishes.
    """

    slot_id: str
    seed_id: str
    blueprint: BlueprintAction
    internal_kind: SeedInternalKind
    from_level: int
    to_level: int
    max_level: int
    active_params: int = 0
    initiator: str = "policy"


class SeedPruned(Record, frozen=True, kw_only=True, tag="seed_pruned", tag_field="kind"):
    slot_id: str
    seed_id: str
    blueprint: BlueprintAction
    reason: str
    initiator: str
    improvement: float = 0.0
    auto_pruned: bool = False
    epochs_total: int = 0
    counterfactual: float | None = None


LifecyclePayload = (
    SeedGerminated | SeedStageChanged | SeedGateEvaluated | SeedFossilized | SeedPruned | SeedInternalLevelChanged
)


class EpochCompleted(Record, frozen=True, kw_only=True, tag="epoch_completed", tag_field="kind"):
    val_accuracy: float
    val_loss: float
    train_accuracy: float = 0.0
    train_loss: float = 0.0
    slots: dict[str, str] = {}
    contributions: dict[str, float] = {}
    op: str = "WAIT"
    target_slot: str = ""
    outcome: str = ""
    policy_id: str = ""
    policy_version: int = 0
    host_params: int = 0
    total_params: int = 0
    epoch_seconds: float = 0.0
    compute: EpochCompute | None = None


class CoalitionValue(Record, frozen=True, kw_only=True):
    slots: list[str]
    accuracy: float


class ShapleyComputed(Record, frozen=True, kw_only=True, tag="shapley_computed", tag_field="kind"):
    """Terminal attribution of an episode's seeds: coalition accuracies and Shapley values (telemetry only).

    Coalition members run at alpha 1.0 (reference/tamiyo_simic.md §8.2), so while a seed is still blending the
    grand coalition is not the main configuration and a Shapley value can differ from the leave-one-out one.
    """

    strategy: str
    slot_ids: list[str]
    coalitions: list[CoalitionValue] = []
    shapley: dict[str, float] = {}
    shapley_std: dict[str, float] = {}


class GovernorRollback(Record, frozen=True, kw_only=True, tag="governor_rollback", tag_field="kind"):
    reason: str
    loss_at_panic: float | None = None
    loss_threshold: float | None = None
    pruned_slots: list[str] = []


class MutationRefused(Record, frozen=True, kw_only=True, tag="mutation_refused", tag_field="kind"):
    slot_id: str
    mutation: str
    reason: str


class PPOUpdateCompleted(Record, frozen=True, kw_only=True, tag="ppo_update_completed", tag_field="kind"):
    policy_id: str
    version: int
    policy_loss: float = 0.0
    value_loss: float = 0.0
    entropy: float = 0.0
    approx_kl: float = 0.0
    clip_fraction: float = 0.0
    explained_variance: float = 0.0
    epochs_run: int = 0
    steps: int = 0
    head_entropies: dict[str, float] = {}
    version_lag_mean: float = 0.0
    update_seconds: float = 0.0
    skipped: bool = False
    diagnostics: dict[str, float] = {}
    #: The network the line trains: "lstm" (the factored recurrent actor-critic) or "slot_transformer" (tamiyo4),
    #: and for the latter the CLS → slot attention mass per slot id (plans/karn2-sanctum-v2.md §4.10, K14).
    architecture: str = "lstm"
    slot_attention: dict[str, float] = {}


class PolicyUpdated(Record, frozen=True, kw_only=True, tag="policy_updated", tag_field="kind"):
    policy_id: str
    version: int
    sha256: str = ""


class PolicyLoadFailed(Record, frozen=True, kw_only=True, tag="policy_load_failed", tag_field="kind"):
    policy_id: str
    version: int
    reason: str


class EpisodeOutcome(Record, frozen=True, kw_only=True, tag="episode_outcome", tag_field="kind"):
    """One finished episode: Tolaria's facts plus the learner's return under the run's reward mode."""

    env_id: int
    episode: int
    final_accuracy: float
    host_params: int
    seed_params_added: int
    seeds_germinated: int
    seeds_fossilized: int
    seeds_pruned: int
    episode_return: float
    reward_mode: RewardMode
    length: int
    policy_id: str = ""
    rollbacks: int = 0
    committed_params: int = 0
    uncommitted_params: int = 0
    dead_params: int = 0
    topology: TopologyManifest | None = None
    parameter_epochs: int = 0
    train_flops: int = 0


class ServiceStarted(Record, frozen=True, kw_only=True, tag="service_started", tag_field="kind"):
    service: str
    instance: str
    version: str
    device: str = "cpu"


class ServiceStopped(Record, frozen=True, kw_only=True, tag="service_stopped", tag_field="kind"):
    service: str
    instance: str
    reason: str = ""


class RunStarted(Record, frozen=True, kw_only=True, tag="run_started", tag_field="kind"):
    task: str
    n_envs: int
    episodes: int
    episode_length: int
    slot_ids: list[str]
    policy_id: str
    reward_mode: RewardMode


class RunFinished(Record, frozen=True, kw_only=True, tag="run_finished", tag_field="kind"):
    state: str
    message: str = ""


class RunResumed(Record, frozen=True, kw_only=True, tag="run_resumed", tag_field="kind"):
    """A stopped or failed run running again (`esper runs resume`)."""

    previous_state: str
    by: str = ""


class EpisodeResumed(Record, frozen=True, kw_only=True, tag="episode_resumed", tag_field="kind"):
    """An interrupted episode taken up again from its host checkpoint, not from epoch 1 (envelope: env, episode)."""

    from_epoch: int
    attempt: int
    checkpoint_attempt: int
    worker_id: str = ""


EventPayload = (
    SeedGerminated
    | SeedStageChanged
    | SeedGateEvaluated
    | SeedFossilized
    | SeedPruned
    | SeedInternalLevelChanged
    | EpochCompleted
    | ShapleyComputed
    | GovernorRollback
    | MutationRefused
    | PPOUpdateCompleted
    | PolicyUpdated
    | PolicyLoadFailed
    | EpisodeOutcome
    | ServiceStarted
    | ServiceStopped
    | RunStarted
    | RunFinished
    | RunResumed
    | EpisodeResumed
)


class TelemetryEvent(Message, frozen=True, kw_only=True):
    """The envelope every service publishes on `esper.v1.telemetry.<run>.<kind>`."""

    event_id: str
    run_id: str
    source: str
    timestamp: float
    payload: EventPayload
    env_id: int | None = None
    episode: int | None = None
    epoch: int | None = None
    severity: Severity = Severity.INFO
