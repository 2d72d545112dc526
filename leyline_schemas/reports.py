"""What Tolaria measured at the end of one epoch."""

from __future__ import annotations

from leyline_schemas.base import Record


class SlotReport(Record, frozen=True, kw_only=True):
    """Measurements of one slot this epoch; None means not measured."""

    slot_id: str
    contribution: float | None = None
    solo_on_accuracy: float | None = None
    interaction_sum: float = 0.0
    boost_received: float = 0.0
    upstream_alpha_sum: float = 0.0
    downstream_alpha_sum: float = 0.0
    gradient_norm: float | None = None
    gradient_health: float | None = None
    seed_gradient_norm_ratio: float | None = None
    has_vanishing: bool | None = None
    has_exploding: bool | None = None
    seed_param_count: int = 0


class PairInteraction(Record, frozen=True, kw_only=True):
    slot_a: str
    slot_b: str
    interaction: float


class TrainingSignals(Record, frozen=True, kw_only=True):
    """Host-level signals the heuristic reads (reference/tamiyo_simic.md §3.3–3.4)."""

    plateau_epochs: int = 0
    host_stabilized: bool = False
    accuracy_delta: float = 0.0
    loss_delta: float = 0.0


class GovernorReport(Record, frozen=True, kw_only=True):
    """A rollback the governor performed this epoch (reference/tolaria_karn.md §4)."""

    reason: str
    loss_at_panic: float | None
    loss_threshold: float | None
    pruned_slots: list[str] = []


class EpochCompute(Record, frozen=True, kw_only=True):
    """What one epoch cost (plans/proof-baselines.md §4): FLOPs by torch's FlopCounterMode (a multiply-add is 2).

    `params_in_forward` counts the host and every seed that runs forward (TRAINING, BLENDING, HOLDING, FOSSILIZED).
    Training FLOPs are 3 × forward FLOPs per sample × samples (backward ≈ 2× forward); counterfactual validation
    adds (configs − 1) × forward × validation samples.
    """

    params_in_forward: int
    train_samples: int
    val_samples: int
    fwd_flops_per_sample: int
    train_flops: int
    val_flops_main: int
    val_flops_counterfactual: int = 0
    validation_configs: int = 1
    train_seconds: float = 0.0
    validate_seconds: float = 0.0
    #: sha256 prefix of the epoch's sample order: equal across the cohorts of a pair (same seed, same data order).
    data_order_hash: str = ""


class EpochReport(Record, frozen=True, kw_only=True):
    """Host metrics after one train + fused validation pass, with a report per slot."""

    epoch: int
    max_epochs: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    val_loss_history: list[float] = []
    val_accuracy_history: list[float] = []
    committed_val_accuracy: float | None = None
    all_off_accuracy: float | None = None
    host_params: int = 0
    total_params: int = 0
    slots: list[SlotReport] = []
    interactions: list[PairInteraction] = []
    signals: TrainingSignals = TrainingSignals()
    governor: GovernorReport | None = None
    epoch_seconds: float = 0.0
    compute: EpochCompute | None = None
