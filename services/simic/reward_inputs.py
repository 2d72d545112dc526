"""What a reward needs from one step (reference/tamiyo_simic.md §6.2), and how to read it out of a StepRecord.

Rewards are computed on the pre-action state (§0.6): the slot states Kasmina ticked and showed the policy.
"""

from __future__ import annotations

from dataclasses import dataclass

from leyline_schemas.enums import LifecycleOp, SeedStage
from leyline_schemas.lifecycle import SlotState
from leyline_schemas.reports import PairInteraction, SlotReport
from leyline_schemas.steps import StepRecord

# Stages in which a slot holds a seed that attribution and action terms talk about; pruned seeds matter only to PBRS.
SEED_STAGES = frozenset(
    {SeedStage.GERMINATED, SeedStage.TRAINING, SeedStage.BLENDING, SeedStage.HOLDING, SeedStage.FOSSILIZED}
)


@dataclass(frozen=True)
class SlotView:
    """One slot as the parameter-economics and ledger terms see it, now and at the previous step."""

    slot_id: str
    stage: SeedStage = SeedStage.DORMANT
    seed_id: str = ""
    alpha: float = 0.0
    previous_alpha: float = 0.0
    seed_params: int = 0
    previous_seed_params: int = 0
    contribution: float | None = None
    age: int = 0
    total_improvement: float = 0.0

    @property
    def has_seed(self) -> bool:
        return self.stage in SEED_STAGES


@dataclass(frozen=True)
class RewardInputs:
    """Everything of §6.2 for one step; accuracies in percent, `loss_delta` = previous − current (ARCHITECTURE §11).

    `target` is the target slot's pre-action state when the slot is occupied (pruned seeds included), else None.
    """

    effective_op: LifecycleOp
    val_accuracy: float
    epoch: int
    max_epochs: int
    target: SlotState | None = None
    contribution: float | None = None
    total_improvement: float | None = None
    progress: float | None = None
    escrow_progress: float | None = None
    interaction_sum: float = 0.0
    val_loss: float = 0.0
    loss_delta: float = 0.0
    committed_accuracy: float | None = None
    host_params: int = 0
    total_params: int = 0
    slots: tuple[SlotView, ...] = ()
    interactions: tuple[PairInteraction, ...] = ()
    new_auto_prunes: int = 0
    is_terminal: bool = False

    def __post_init__(self) -> None:
        if self.contribution is not None and self.total_improvement is None:
            raise ValueError("reward inputs: a contribution is given but the total improvement is not (§6.2)")
        if self.max_epochs <= 0:
            raise ValueError(f"reward inputs: max_epochs must be positive, got {self.max_epochs}")

    @property
    def seed(self) -> SlotState | None:
        """The target slot's seed, if it holds one rewards can attribute to."""
        if self.target is None or self.target.stage not in SEED_STAGES:
            return None
        return self.target

    @property
    def seed_age(self) -> int:
        return seed_age(self.target, self.epoch) if self.target is not None else 0


def seed_age(state: SlotState, epoch: int) -> int:
    """Epochs since germination, from the germination epoch when known."""
    if state.germinated_epoch >= 0:
        return max(0, epoch - state.germinated_epoch)
    return state.metrics.epochs_total


def seed_total_improvement(state: SlotState) -> float:
    return state.metrics.current_val_accuracy - state.metrics.initial_val_accuracy


def reward_inputs_from_step(record: StepRecord, previous: StepRecord | None) -> RewardInputs:
    """Read the §6.2 inputs out of a step record; `previous` is the env's prior step in the same episode, if any."""
    report = record.report
    directive = record.directive
    observed = directive.observed_slots
    slot_reports = {slot.slot_id: slot for slot in report.slots}
    epoch = report.epoch

    target_id = directive.target_slot
    if not target_id and 0 <= directive.raw_action.slot < len(observed):
        # A WAIT names no target; the reference rewards it against the canonical slot the policy sampled (§2.7).
        target_id = observed[directive.raw_action.slot].slot_id
    target_state = next((state for state in observed if state.slot_id == target_id), None)
    target = target_state if target_state is not None and target_state.occupied else None
    target_report = slot_reports.get(target_id) if target is not None else None
    contribution = target_report.contribution if target_report is not None else None
    interaction_sum = target_report.interaction_sum if target_report is not None else 0.0

    # §2.13: an action the governor refused was not executed, so it is rewarded as WAIT.
    effective_op = directive.effective_op if record.applied else LifecycleOp.WAIT

    progress: float | None = None
    escrow_progress: float | None = None
    if target is not None:
        at_germination = target.metrics.accuracy_at_germination
        progress = report.val_accuracy - at_germination
        # The history ends with this epoch's accuracy; ESCROW judges progress by the worst of the last three (§6.2).
        window = list(report.val_accuracy_history[-3:]) or [report.val_accuracy]
        escrow_progress = min(window) - at_germination

    previous_views = _previous_slot_values(previous)
    views = tuple(_slot_view(state, slot_reports.get(state.slot_id), previous_views, epoch) for state in observed)

    host_params = report.host_params
    total_params = report.total_params or host_params + sum(v.seed_params for v in views if v.has_seed)
    loss_delta = previous.report.val_loss - report.val_loss if previous is not None else report.signals.loss_delta

    return RewardInputs(
        effective_op=effective_op,
        val_accuracy=report.val_accuracy,
        epoch=epoch,
        max_epochs=report.max_epochs,
        target=target,
        contribution=contribution,
        total_improvement=_total_improvement(report.val_accuracy, report.all_off_accuracy, report.slots),
        progress=progress,
        escrow_progress=escrow_progress,
        interaction_sum=interaction_sum,
        val_loss=report.val_loss,
        loss_delta=loss_delta,
        committed_accuracy=report.committed_val_accuracy,
        host_params=host_params,
        total_params=total_params,
        slots=views,
        interactions=tuple(report.interactions),
        new_auto_prunes=_new_auto_prunes(observed, previous),
        is_terminal=record.done,
    )


def _total_improvement(val_accuracy: float, all_off: float | None, slots: list[SlotReport]) -> float | None:
    """§6.2: val_acc − acc(all seeds off); without that config, the lowest leave-one-out accuracy stands in."""
    if all_off is not None:
        return val_accuracy - all_off
    leave_one_out = [val_accuracy - slot.contribution for slot in slots if slot.contribution is not None]
    if not leave_one_out:
        return None
    return val_accuracy - min(leave_one_out)


def _seed_params(state: SlotState, report: SlotReport | None) -> int:
    if report is not None and report.seed_param_count > 0:
        return report.seed_param_count
    return state.metrics.seed_param_count


def _previous_slot_values(previous: StepRecord | None) -> dict[str, tuple[float, int]]:
    if previous is None:
        return {}
    reports = {slot.slot_id: slot for slot in previous.report.slots}
    return {
        state.slot_id: (state.controller.alpha, _seed_params(state, reports.get(state.slot_id)))
        for state in previous.directive.observed_slots
    }


def _slot_view(
    state: SlotState, report: SlotReport | None, previous: dict[str, tuple[float, int]], epoch: int
) -> SlotView:
    alpha = state.controller.alpha
    params = _seed_params(state, report)
    # Without a previous step (episode start) there is no alpha change to charge a shock for.
    previous_alpha, previous_params = previous.get(state.slot_id, (alpha, params))
    return SlotView(
        slot_id=state.slot_id,
        stage=state.stage,
        seed_id=state.seed_id,
        alpha=alpha,
        previous_alpha=previous_alpha,
        seed_params=params,
        previous_seed_params=previous_params,
        contribution=report.contribution if report is not None else None,
        age=seed_age(state, epoch) if state.occupied else 0,
        total_improvement=seed_total_improvement(state),
    )


def _new_auto_prunes(observed: list[SlotState], previous: StepRecord | None) -> int:
    """Seeds flagged auto-pruned now that were not flagged at the previous step (the flag may outlive one tick)."""
    before = (
        {(s.slot_id, s.seed_id) for s in previous.directive.observed_slots if s.auto_pruned}
        if previous is not None
        else set()
    )
    return sum(1 for s in observed if s.auto_pruned and (s.slot_id, s.seed_id) not in before)
