"""What Sanctum shows, as immutable values: the aggregator builds one snapshot per frame, the widgets only read it."""

from __future__ import annotations

from dataclasses import dataclass

#: Data younger than this is LIVE, younger than SLOW_AFTER is SLOW, older is STALE (reference/tolaria_karn.md §9.2).
LIVE_WITHIN = 2.0
SLOW_WITHIN = 5.0


def freshness(age: float | None) -> str:
    if age is None:
        return "WAITING"
    if age < LIVE_WITHIN:
        return "LIVE"
    if age < SLOW_WITHIN:
        return "SLOW"
    return "STALE"


@dataclass(frozen=True)
class SlotCell:
    """One slot of one env now: its seed's stage and blueprint, alpha, contribution and gradient flags."""

    slot_id: str
    stage: str = "empty"
    blueprint: str = ""
    seed_id: str = ""
    alpha: float | None = None
    contribution: float | None = None
    solo_on_accuracy: float | None = None
    gradient_health: float | None = None
    gradient_ratio: float | None = None
    vanishing: bool = False
    exploding: bool = False
    epochs_in_stage: int = 0
    germinated_epoch: int = -1
    params: int = 0
    interaction_sum: float = 0.0
    #: A microstructured seed's kind (`CONV_LADDER`; "" for none), level k of L, the direction of its latest level
    #: change while unsettled (+1, −1; 0 once settled or never changed) and its reversal rate over the last 50
    #: epochs (plans/kasmina2-phase0.md §9 items 3 and 5).
    internal_kind: str = ""
    internal_level: int = 0
    internal_max_level: int = 1
    level_trend: int = 0
    level_reversal_rate: float = 0.0

    @property
    def occupied(self) -> bool:
        return self.stage not in ("empty", "DORMANT")

    @property
    def microstructured(self) -> bool:
        return self.occupied and bool(self.internal_kind)

    @property
    def label(self) -> str:
        return f"{self.stage}:{self.blueprint}" if self.occupied else "empty"


@dataclass(frozen=True)
class EnvRow:
    """One row of the env overview."""

    env_id: int
    episode: int
    epoch: int
    max_epochs: int
    accuracy: float | None
    best_accuracy: float | None
    accuracy_history: tuple[float, ...]
    last_return: float | None
    mean_return: float | None
    return_history: tuple[float, ...]
    slots: tuple[SlotCell, ...]
    last_action: str
    status: str
    rollback: bool
    episodes_done: int
    policy_id: str
    arm: str


@dataclass(frozen=True)
class HeaderView:
    """The one-line run header."""

    run_id: str
    task: str
    mode: str
    state: str
    freshness: str
    data_age: float | None
    episodes_done: int
    episodes_total: int
    epochs_per_second: float | None
    runtime: float | None
    source: str


@dataclass(frozen=True)
class Anomalies:
    """Counts behind the anomaly strip; all zero is ALL CLEAR."""

    stalled: int = 0
    degraded: int = 0
    vanishing: int = 0
    exploding: int = 0
    rollbacks: int = 0
    ppo_issues: int = 0
    load_failures: int = 0
    refusals: int = 0
    undecodable: int = 0

    @property
    def all_clear(self) -> bool:
        return not any(vars(self).values())


@dataclass(frozen=True)
class EpisodeScore:
    """One episode in the scoreboard: its peak, where it ended and what it cost."""

    env_id: int
    episode: int
    peak: float
    peak_epoch: int
    final: float
    growth_ratio: float
    end_reward: float | None
    fossilized: int
    finished: bool

    @property
    def regression(self) -> float:
        return self.peak - self.final


@dataclass(frozen=True)
class Scoreboard:
    """Best runs by peak accuracy, worst regressions from peak, and the Pareto reward-health figures."""

    best: tuple[EpisodeScore, ...] = ()
    worst: tuple[EpisodeScore, ...] = ()
    episodes_finished: int = 0
    mean_final: float | None = None
    hypervolume: float | None = None
    frontier_size: int = 0


@dataclass(frozen=True)
class PolicyView:
    """One Tamiyo panel: a policy line, what it decided, and its latest PPO update if it learns."""

    policy_id: str
    version: int
    decisions: int
    actions: tuple[tuple[str, int], ...]
    head_entropies: tuple[tuple[str, float], ...]
    entropy_source: str
    updates: int = 0
    policy_loss: float | None = None
    value_loss: float | None = None
    entropy: float | None = None
    approx_kl: float | None = None
    clip_fraction: float | None = None
    explained_variance: float | None = None
    version_lag: float | None = None
    kl_history: tuple[float, ...] = ()
    value_loss_history: tuple[float, ...] = ()
    load_failure: str = ""
    #: From the latest PPO update: "lstm" or "slot_transformer"; None before the first (a fixed policy has none).
    architecture: str | None = None
    #: The slot transformer's CLS → slot attention mass, per slot id (empty for the LSTM).
    slot_attention: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class LogLine:
    seq: int
    text: str
    severity: str
    env_id: int | None = None


@dataclass(frozen=True)
class EnvDetail:
    """Everything the env detail screen shows about one env's current episode."""

    env_id: int
    episode: int
    epoch: int
    accuracy: float | None
    all_off_accuracy: float | None
    seeds: tuple[SlotCell, ...]
    interactions: tuple[tuple[str, str, float], ...]
    accuracy_history: tuple[float, ...]
    recent_actions: tuple[str, ...]
    from_steps: bool
    shapley: tuple[tuple[str, float, float | None], ...] = ()
    shapley_episode: int | None = None


@dataclass(frozen=True)
class DecisionCard:
    """One decision as §4.9's card shows it; None is a value the policy did not send."""

    env_id: int
    episode: int
    epoch: int
    op: str
    slot: str
    confidence: float | None
    accuracy: float | None
    #: Mean normalised entropy over the op's causal heads.
    entropy: float | None
    #: The critic's V(s) at the decision (normalised units).
    value: float | None
    #: Causal heads that had one legal value: their choice was forced, not made.
    forced: tuple[str, ...]
    policy_id: str
    policy_version: int
    blueprint: str = ""
    tempo: str = ""
    style: str = ""
    reason: str = ""


@dataclass(frozen=True)
class SanctumSnapshot:
    """One frame's worth of state for the whole screen."""

    header: HeaderView
    anomalies: Anomalies
    envs: tuple[EnvRow, ...]
    scoreboard: Scoreboard
    policies: tuple[PolicyView, ...]
    log: tuple[LogLine, ...]
    slot_ids: tuple[str, ...] = ()
    decisions: tuple[DecisionCard, ...] = ()


@dataclass(frozen=True)
class RunInfo:
    """The `i` screen: every field of the run's spec, untruncated (`source` says which message it came from)."""

    run_id: str
    source: str
    fields: tuple[tuple[str, str], ...]
