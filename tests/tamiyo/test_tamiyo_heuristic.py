"""Heuristic Tamiyo rules (reference/tamiyo_simic.md §3, invariants §12.19)."""

from __future__ import annotations

import pytest

from leyline_schemas.decisions import ActionMasks, Decision, DecisionRequest, HeadValues
from leyline_schemas.enums import AlphaMode, BlueprintAction, LifecycleOp, SeedStage, Topology, blueprints_for
from leyline_schemas.lifecycle import AlphaControllerState, SeedMetrics, SlotState
from leyline_schemas.reports import TrainingSignals
from services.tamiyo.heuristic import (
    HeuristicConfig,
    HeuristicMemory,
    decide_heuristic,
    decode_memory,
    encode_memory,
    validate_rotation,
)

SLOT_IDS = ["r0c0", "r0c1", "r0c2"]


def masks(germinate_slots: tuple[bool, ...] = (True, True, True), topology: Topology = Topology.CNN) -> ActionMasks:
    n = len(SLOT_IDS)
    none = [False] * n
    return ActionMasks(
        op=[True, any(germinate_slots), False, False, False, False, False, False],
        slot_by_op=[[True] * n, list(germinate_slots), none, none, none, none, none, none],
        blueprint=[bp is not BlueprintAction.NOOP and bp in blueprints_for(topology) for bp in BlueprintAction],
        style=[False, False, True, False],
        tempo=[True, True, True],
        alpha_target=[False, False, True],
        alpha_speed=[True] * 4,
        alpha_curve=[True] * 5,
    )


def request(
    *,
    epoch: int = 10,
    plateau: int = 3,
    stabilized: bool = True,
    slots: list[SlotState] | None = None,
    memory: HeuristicMemory | bytes = b"",
    germinate_slots: tuple[bool, ...] = (True, True, True),
    topology: Topology = Topology.CNN,
) -> DecisionRequest:
    states = {s.slot_id: s for s in slots or []}
    return DecisionRequest(
        run_id="run",
        env_id=0,
        episode=0,
        epoch=epoch,
        policy_id="heuristic",
        topology=topology,
        slot_ids=SLOT_IDS,
        observation=[],
        blueprint_indices=[-1, -1, -1],
        masks=masks(germinate_slots, topology),
        slots=[states.get(slot_id, SlotState(slot_id=slot_id)) for slot_id in SLOT_IDS],
        signals=TrainingSignals(plateau_epochs=plateau, host_stabilized=stabilized),
        policy_state=memory if isinstance(memory, bytes) else encode_memory(memory),
    )


def seed(
    stage: SeedStage,
    *,
    slot_id: str = "r0c1",
    blueprint: BlueprintAction = BlueprintAction.CONV_LIGHT,
    contribution: float | None = None,
    epochs_in_stage: int = 1,
    initial: float = 50.0,
    current: float = 55.0,
    stage_start: float = 55.0,
    controller: AlphaControllerState | None = None,
) -> SlotState:
    return SlotState(
        slot_id=slot_id,
        stage=stage,
        seed_id=f"seed-{slot_id}",
        blueprint=blueprint,
        controller=controller or AlphaControllerState(),
        metrics=SeedMetrics(
            epochs_in_current_stage=epochs_in_stage,
            initial_val_accuracy=initial,
            current_val_accuracy=current,
            accuracy_at_stage_start=stage_start,
            counterfactual_contribution=contribution,
        ),
    )


def memory_of(decision: Decision) -> HeuristicMemory:
    return decode_memory(decision.policy_state)


def test_germinates_first_rotation_blueprint_in_first_available_slot() -> None:
    decision = decide_heuristic(request(epoch=5, plateau=3, germinate_slots=(False, True, True)))
    assert decision.action.op is LifecycleOp.GERMINATE
    assert decision.action.slot == 1
    assert decision.action.blueprint is BlueprintAction.CONV_LIGHT
    assert decision.confidence == pytest.approx(0.6)
    assert "germinate conv_light in r0c1" in decision.reason
    assert decision.policy_id == "heuristic" and decision.policy_version == 0
    assert decision.log_probs == HeadValues() and decision.value == 0.0


def test_confidence_saturates_at_five_plateau_epochs() -> None:
    assert decide_heuristic(request(plateau=8)).confidence == 1.0


@pytest.mark.parametrize(
    ("epoch", "plateau", "stabilized", "germinate_slots"),
    [
        (4, 10, True, (True, True, True)),  # before epoch 5
        (20, 10, False, (True, True, True)),  # host not stabilized
        (20, 2, True, (True, True, True)),  # plateau too short
        (20, 10, True, (False, False, False)),  # no slot available
    ],
)
def test_germination_branch_waits(
    epoch: int, plateau: int, stabilized: bool, germinate_slots: tuple[bool, ...]
) -> None:
    decision = decide_heuristic(
        request(epoch=epoch, plateau=plateau, stabilized=stabilized, germinate_slots=germinate_slots)
    )
    assert decision.action.op is LifecycleOp.WAIT
    assert decision.reason


def test_rotation_is_round_robin_and_persists_in_policy_state() -> None:
    state: bytes = b""
    chosen = []
    for epoch in range(10, 16):
        decision = decide_heuristic(request(epoch=epoch, memory=state))
        chosen.append(decision.action.blueprint)
        state = decision.policy_state
    assert chosen == [
        BlueprintAction.CONV_LIGHT,
        BlueprintAction.CONV_HEAVY,
        BlueprintAction.ATTENTION,
        BlueprintAction.NORM,
        BlueprintAction.DEPTHWISE,
        BlueprintAction.CONV_LIGHT,
    ]


def test_prune_starts_embargo_of_five_epochs() -> None:
    failing = seed(SeedStage.TRAINING, epochs_in_stage=5, current=50.0, stage_start=53.0)
    pruned = decide_heuristic(request(epoch=20, slots=[failing]))
    assert pruned.action.op is LifecycleOp.PRUNE and pruned.action.slot == 1
    assert memory_of(pruned).last_prune_epoch == 20
    state = pruned.policy_state
    for epoch in range(21, 25):
        decision = decide_heuristic(request(epoch=epoch, plateau=10, memory=state))
        assert decision.action.op is LifecycleOp.WAIT, epoch
        assert "embargo" in decision.reason
        state = decision.policy_state
    assert decide_heuristic(request(epoch=25, plateau=10, memory=state)).action.op is LifecycleOp.GERMINATE


def test_prune_penalty_adds_two_then_decays_by_half_per_epoch_and_is_deleted_below_tenth() -> None:
    failing = seed(
        SeedStage.TRAINING, blueprint=BlueprintAction.NORM, epochs_in_stage=6, current=40.0, stage_start=45.0
    )
    decision = decide_heuristic(request(epoch=20, slots=[failing]))
    assert memory_of(decision).penalties == {"norm": 2.0}
    state = decision.policy_state
    seen = []
    for epoch in range(21, 26):
        decision = decide_heuristic(request(epoch=epoch, plateau=0, memory=state))
        seen.append(memory_of(decision).penalties.get("norm"))
        state = decision.policy_state
    assert seen == [1.0, 0.5, 0.25, 0.125, None]


def test_penalty_decays_once_per_epoch_not_per_request() -> None:
    memory = HeuristicMemory(penalties={"norm": 2.0}, last_decided_epoch=9)
    first = decide_heuristic(request(epoch=10, plateau=0, memory=memory))
    again = decide_heuristic(request(epoch=10, plateau=0, memory=first.policy_state))
    assert memory_of(first).penalties == {"norm": 1.0}
    assert memory_of(again).penalties == {"norm": 1.0}


def test_second_prune_accumulates_penalty() -> None:
    memory = HeuristicMemory(penalties={"conv_light": 2.0}, last_decided_epoch=20)
    failing = seed(SeedStage.BLENDING, epochs_in_stage=5, current=40.0, stage_start=45.0)
    decision = decide_heuristic(request(epoch=20, slots=[failing], memory=memory))
    assert decision.action.op is LifecycleOp.PRUNE
    assert memory_of(decision).penalties == {"conv_light": 4.0}


@pytest.mark.parametrize(
    ("penalty", "expected"), [(2.99, BlueprintAction.CONV_LIGHT), (3.0, BlueprintAction.CONV_HEAVY)]
)
def test_blueprints_with_penalty_of_three_are_skipped(penalty: float, expected: BlueprintAction) -> None:
    memory = HeuristicMemory(penalties={"conv_light": penalty}, last_decided_epoch=10)
    decision = decide_heuristic(request(epoch=10, memory=memory))
    assert decision.action.blueprint is expected


def test_all_penalized_picks_by_penalty_then_name_at_the_rotation_index() -> None:
    penalties = {"conv_light": 5.0, "conv_heavy": 4.0, "attention": 4.0, "norm": 3.0, "depthwise": 6.0}
    ranked = [BlueprintAction.NORM, BlueprintAction.ATTENTION, BlueprintAction.CONV_HEAVY, BlueprintAction.CONV_LIGHT]
    for index in range(4):
        memory = HeuristicMemory(penalties=penalties, rotation_index=index, last_decided_epoch=10)
        decision = decide_heuristic(request(epoch=10, memory=memory))
        assert decision.action.blueprint is ranked[index]
        assert memory_of(decision).rotation_index == index + 1


def test_management_advances_germinated_and_healthy_training_seeds() -> None:
    germinated = decide_heuristic(request(slots=[seed(SeedStage.GERMINATED)]))
    training = decide_heuristic(request(slots=[seed(SeedStage.TRAINING, epochs_in_stage=4, current=40.0)]))
    assert (germinated.action.op, germinated.action.slot) == (LifecycleOp.ADVANCE, 1)
    assert training.action.op is LifecycleOp.ADVANCE


def test_should_prune_needs_five_epochs_and_a_drop_beyond_two_points() -> None:
    just_short = seed(SeedStage.TRAINING, epochs_in_stage=5, current=53.0, stage_start=55.0)  # −2.0, not < −2.0
    assert decide_heuristic(request(slots=[just_short])).action.op is LifecycleOp.ADVANCE


def test_blending_advances_only_when_fully_blended_in_hold() -> None:
    done = AlphaControllerState(alpha=1.0, alpha_target=1.0, mode=AlphaMode.HOLD)
    ramping = AlphaControllerState(alpha=0.6, alpha_target=1.0, mode=AlphaMode.UP)
    partial = AlphaControllerState(alpha=0.7, alpha_target=0.7, mode=AlphaMode.HOLD)
    assert decide_heuristic(request(slots=[seed(SeedStage.BLENDING, controller=done)])).action.op is LifecycleOp.ADVANCE
    for controller in (ramping, partial):
        decision = decide_heuristic(request(slots=[seed(SeedStage.BLENDING, controller=controller)]))
        assert decision.action.op is LifecycleOp.WAIT


@pytest.mark.parametrize(
    ("contribution", "current", "op"),
    [
        (2.0, 45.0, LifecycleOp.PRUNE),  # ransomware: the host needs it yet is worse than before it
        (0.2, 49.0, LifecycleOp.PRUNE),  # ransomware at the c > 0.1 edge
        (2.0, 55.0, LifecycleOp.FOSSILIZE),
        (0.51, 55.0, LifecycleOp.FOSSILIZE),
        (0.5, 55.0, LifecycleOp.PRUNE),  # fossilize threshold is strict: c > 0.5
        (None, 45.0, LifecycleOp.WAIT),  # contribution not measured yet
    ],
)
def test_holding_rules(contribution: float | None, current: float, op: LifecycleOp) -> None:
    holding = seed(SeedStage.HOLDING, contribution=contribution, initial=50.0, current=current)
    decision = decide_heuristic(request(epoch=30, slots=[holding]))
    assert decision.action.op is op
    if op is LifecycleOp.PRUNE:
        assert memory_of(decision).last_prune_epoch == 30
    if op is LifecycleOp.FOSSILIZE:
        assert decision.confidence == pytest.approx(min(1.0, contribution / 5.0))  # type: ignore[operator]


def test_ransomware_reason_is_named() -> None:
    holding = seed(SeedStage.HOLDING, contribution=2.0, initial=50.0, current=45.0)
    assert "ransomware" in decide_heuristic(request(slots=[holding])).reason


def test_first_live_seed_decides_and_fossils_do_not_block_germination() -> None:
    fossil = seed(SeedStage.FOSSILIZED, slot_id="r0c0")
    germinated = seed(SeedStage.GERMINATED, slot_id="r0c2")
    assert decide_heuristic(request(slots=[fossil, germinated])).action.slot == 2
    decision = decide_heuristic(request(slots=[fossil], germinate_slots=(False, True, True)))
    assert decision.action.op is LifecycleOp.GERMINATE and decision.action.slot == 1


def test_rotation_is_validated_against_the_topology() -> None:
    cnn_rotation = HeuristicConfig(rotation=(BlueprintAction.CONV_LIGHT, BlueprintAction.NORM))
    with pytest.raises(ValueError, match="transformer"):
        decide_heuristic(request(topology=Topology.TRANSFORMER), cnn_rotation)
    with pytest.raises(ValueError, match="empty"):
        validate_rotation((), Topology.CNN)
    lora = HeuristicConfig(rotation=(BlueprintAction.LORA, BlueprintAction.MLP_SMALL))
    decision = decide_heuristic(request(topology=Topology.TRANSFORMER), lora)
    assert decision.action.blueprint is BlueprintAction.LORA


def test_each_topology_gets_its_own_default_rotation() -> None:
    """The reference rotation is CNN-only; a transformer host germinates from the transformer set by default."""
    transformer = decide_heuristic(request(topology=Topology.TRANSFORMER))
    assert transformer.action.op is LifecycleOp.GERMINATE
    assert transformer.action.blueprint is BlueprintAction.LORA
    cnn = decide_heuristic(request(topology=Topology.CNN))
    assert cnn.action.blueprint is BlueprintAction.CONV_LIGHT


def test_garbage_policy_state_is_rejected() -> None:
    with pytest.raises(ValueError, match="heuristic memory"):
        decide_heuristic(request(memory=b"\x01\x02garbage"))
