"""Builders for slot states and step requests shared by the Kasmina core tests."""

from __future__ import annotations

from hypothesis import strategies as st
from msgspec.structs import replace

from leyline_schemas.directives import StepRequest
from leyline_schemas.enums import AlphaMode, BlendId, BlueprintAction, LifecycleOp, SeedStage, Topology
from leyline_schemas.lifecycle import (
    AlphaControllerState,
    LifecycleConfig,
    SeedMetrics,
    SlotConfig,
    SlotSpec,
    SlotState,
    internal_spec,
)
from leyline_schemas.reports import EpochReport, SlotReport

SLOT_IDS = ("r0c0", "r0c1", "r0c2", "r0c3", "r0c4")


def slot_config(num_slots: int = 3, topology: Topology = Topology.CNN) -> SlotConfig:
    return SlotConfig(
        topology=topology,
        slots=[SlotSpec(slot_id=SLOT_IDS[i], channels=16, order=i) for i in range(num_slots)],
        host_param_count=1000,
    )


def empty_slots(num_slots: int = 3) -> list[SlotState]:
    return [SlotState(slot_id=SLOT_IDS[i]) for i in range(num_slots)]


def seed(
    stage: SeedStage,
    slot_id: str = "r0c0",
    *,
    alpha: float | None = None,
    target: float | None = None,
    mode: AlphaMode = AlphaMode.HOLD,
    epochs_total: int = 12,
    dwell: int = 12,
    accuracy: float = 60.0,
    stage_start_accuracy: float = 58.0,
    contribution: float | None = None,
    gradient_health: float | None = None,
    ratio: float | None = None,
    blueprint: BlueprintAction = BlueprintAction.CONV_LIGHT,
    blend: BlendId = BlendId.SIGMOID,
    level: int | None = None,
    level_changed_epoch: int = -1,
) -> SlotState:
    """A seed in `stage` with alpha consistent with the stage unless given; a ladder at `level` (default initial)."""
    if alpha is None:
        alpha = {SeedStage.HOLDING: 1.0, SeedStage.FOSSILIZED: 1.0, SeedStage.BLENDING: 0.5}.get(stage, 0.0)
    target = alpha if target is None else target
    ramping = mode is not AlphaMode.HOLD
    internals = internal_spec(blueprint)
    controller = AlphaControllerState(
        alpha=alpha,
        alpha_start=alpha,
        alpha_target=target,
        mode=mode,
        steps_total=5 if ramping else 0,
        steps_done=0,
    )
    return SlotState(
        slot_id=slot_id,
        stage=stage,
        seed_id=f"{slot_id}-{blueprint.name.lower()}-e1",
        blueprint=blueprint,
        blend=blend,
        controller=controller,
        germinated_epoch=1,
        isolate_gradients=stage in (SeedStage.TRAINING, SeedStage.BLENDING, SeedStage.HOLDING),
        metrics=SeedMetrics(
            epochs_total=epochs_total,
            epochs_in_current_stage=dwell,
            initial_val_accuracy=50.0,
            current_val_accuracy=accuracy,
            best_val_accuracy=accuracy,
            accuracy_at_stage_start=stage_start_accuracy,
            counterfactual_contribution=contribution,
            epochs_since_counterfactual=None if contribution is None else 0,
            gradient_health=gradient_health,
            seed_gradient_norm_ratio=ratio,
        ),
        internal_kind=internals.kind,
        internal_level=internals.initial_level if level is None else level,
        internal_max_level=internals.max_level,
        internal_level_changed_epoch=level_changed_epoch,
    )


def report(
    epoch: int = 10,
    *,
    val_accuracy: float = 61.0,
    val_loss: float = 1.2,
    slots: list[SlotReport] | None = None,
    max_epochs: int = 40,
    loss_history: list[float] | None = None,
    accuracy_history: list[float] | None = None,
) -> EpochReport:
    return EpochReport(
        epoch=epoch,
        max_epochs=max_epochs,
        train_loss=1.0,
        train_accuracy=65.0,
        val_loss=val_loss,
        val_accuracy=val_accuracy,
        val_loss_history=loss_history or [],
        val_accuracy_history=accuracy_history or [],
        host_params=1000,
        slots=slots or [],
    )


def request(
    slots: list[SlotState],
    *,
    epoch: int = 10,
    epoch_report: EpochReport | None = None,
    lifecycle: LifecycleConfig | None = None,
    topology: Topology = Topology.CNN,
    total_seeds: int = 0,
    last_op: LifecycleOp = LifecycleOp.WAIT,
    last_action_succeeded: bool = True,
) -> StepRequest:
    """A StepRequest whose slot config matches `slots` (ids taken in order)."""
    config = slot_config(len(slots), topology)
    config = replace(
        config, slots=[replace(spec, slot_id=s.slot_id) for spec, s in zip(config.slots, slots, strict=True)]
    )
    return StepRequest(
        run_id="run",
        env_id=0,
        episode=0,
        epoch=epoch,
        policy_id="heuristic",
        slot_config=config,
        lifecycle=lifecycle or LifecycleConfig(max_epochs=40),
        report=epoch_report or report(epoch),
        slots=slots,
        total_seeds=total_seeds,
        last_op=last_op,
        last_action_succeeded=last_action_succeeded,
    )


_unit = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
_maybe_unit = st.none() | _unit


@st.composite
def slot_states(draw: st.DrawFn, slot_id: str = "r0c0") -> SlotState:
    """Any consistent slot state: empty, or a seed in any stage with any controller and measurements."""
    stage = draw(st.sampled_from([s for s in SeedStage if s is not SeedStage.UNKNOWN]))
    if stage is SeedStage.DORMANT:
        return SlotState(slot_id=slot_id)
    mode = draw(st.sampled_from(list(AlphaMode)))
    value = draw(_unit)
    if mode is AlphaMode.HOLD:
        controller = AlphaControllerState(alpha=value, alpha_start=value, alpha_target=value)
    else:
        total = draw(st.integers(min_value=1, max_value=8))
        controller = AlphaControllerState(
            alpha=value,
            alpha_start=draw(_unit),
            alpha_target=draw(_unit),
            mode=mode,
            steps_total=total,
            steps_done=draw(st.integers(min_value=0, max_value=total - 1)),
        )
    epochs_total = draw(st.integers(min_value=0, max_value=30))
    contribution = draw(st.none() | st.floats(min_value=-20.0, max_value=20.0))
    blueprint = draw(st.sampled_from([b for b in BlueprintAction if b is not BlueprintAction.NOOP]))
    internals = internal_spec(blueprint)
    return SlotState(
        slot_id=slot_id,
        stage=stage,
        seed_id=f"{slot_id}-seed",
        blueprint=blueprint,
        internal_kind=internals.kind,
        internal_level=draw(st.integers(0, internals.max_level)) if internals.kind else 0,
        internal_max_level=internals.max_level,
        internal_level_changed_epoch=draw(st.just(-1) | st.integers(0, 9)) if internals.kind else -1,
        controller=controller,
        metrics=SeedMetrics(
            epochs_total=epochs_total,
            epochs_in_current_stage=draw(st.integers(min_value=0, max_value=epochs_total)),
            counterfactual_contribution=contribution,
            epochs_since_counterfactual=None if contribution is None else draw(st.integers(0, 200)),
            gradient_health=draw(_maybe_unit),
            previous_gradient_health=draw(_maybe_unit),
            gradient_norm=draw(st.none() | st.floats(allow_nan=True)),
            has_exploding=draw(st.none() | st.booleans()),
        ),
    )
