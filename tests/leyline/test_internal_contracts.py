"""The kasmina2 phase 0 contracts: appended enum values, the internal-structure table and the new messages
round-tripping (plans/kasmina2-phase0.md §4; invariants 1–4 of §11)."""

from __future__ import annotations

import msgspec
import pytest
from msgspec.structs import replace

import leyline_schemas as L
from leyline_schemas.lifecycle import _check_internals, internal_spec

#: Every value that existed before phase 0, as it was: appending must never renumber one.
GOLDEN_OPS = {"WAIT": 0, "GERMINATE": 1, "SET_ALPHA_TARGET": 2, "PRUNE": 3, "FOSSILIZE": 4, "ADVANCE": 5}
GOLDEN_BLUEPRINTS = {
    "NOOP": 0,
    "CONV_LIGHT": 1,
    "ATTENTION": 2,
    "NORM": 3,
    "DEPTHWISE": 4,
    "BOTTLENECK": 5,
    "CONV_SMALL": 6,
    "CONV_HEAVY": 7,
    "LORA": 8,
    "LORA_LARGE": 9,
    "MLP_SMALL": 10,
    "MLP": 11,
    "FLEX_ATTENTION": 12,
}


def test_enum_values_are_appended_and_old_ones_unchanged() -> None:
    ops = {op.name: op.value for op in L.LifecycleOp}
    assert ops == {**GOLDEN_OPS, "GROW_INTERNAL": 6, "SHRINK_INTERNAL": 7} and len(L.LifecycleOp) == 8
    blueprints = {bp.name: bp.value for bp in L.BlueprintAction}
    assert blueprints == {**GOLDEN_BLUEPRINTS, "CONV_LADDER": 13}
    assert L.BLUEPRINT_NULL_INDEX == 14 == len(L.BlueprintAction)
    assert {k.name: k.value for k in L.SeedInternalKind} == {"NONE": 0, "CONV_LADDER": 1}
    assert frozenset({L.LifecycleOp.GROW_INTERNAL, L.LifecycleOp.SHRINK_INTERNAL}) == L.INTERNAL_OPS
    assert frozenset({L.SeedStage.TRAINING, L.SeedStage.BLENDING, L.SeedStage.HOLDING}) == L.INTERNAL_OP_STAGES
    assert L.SCHEMA_VERSION == 2


def test_the_ladder_is_a_cnn_blueprint_with_its_spec() -> None:
    assert L.BlueprintAction.CONV_LADDER in L.CNN_BLUEPRINTS
    assert L.BlueprintAction.CONV_LADDER not in L.TRANSFORMER_BLUEPRINTS
    spec = L.SEED_INTERNALS[L.BlueprintAction.CONV_LADDER]
    assert (spec.kind, spec.max_level, spec.initial_level) == (L.SeedInternalKind.CONV_LADDER, 4, 1)
    for spec in L.SEED_INTERNALS.values():
        assert 1 <= spec.max_level <= 4 and 0 <= spec.initial_level <= spec.max_level
    plain = internal_spec(L.BlueprintAction.CONV_HEAVY)
    assert (plain.kind, plain.max_level, plain.initial_level) == (L.SeedInternalKind.NONE, 1, 0)


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        (L.InternalSpec(kind=L.SeedInternalKind.CONV_LADDER, max_level=5, initial_level=1), "max_level"),
        (L.InternalSpec(kind=L.SeedInternalKind.CONV_LADDER, max_level=0, initial_level=0), "max_level"),
        (L.InternalSpec(kind=L.SeedInternalKind.CONV_LADDER, max_level=2, initial_level=3), "initial_level"),
        (L.InternalSpec(kind=L.SeedInternalKind.NONE, max_level=1, initial_level=0), "kind NONE"),
    ],
)
def test_the_import_time_check_refuses_a_bad_table(
    monkeypatch: pytest.MonkeyPatch, spec: L.InternalSpec, words: str
) -> None:
    monkeypatch.setitem(L.SEED_INTERNALS, L.BlueprintAction.CONV_LADDER, spec)
    with pytest.raises(ValueError, match=words):
        _check_internals()


def test_the_new_messages_round_trip() -> None:
    state = L.SlotState(
        slot_id="r0c1",
        stage=L.SeedStage.HOLDING,
        seed_id="s",
        blueprint=L.BlueprintAction.CONV_LADDER,
        internal_kind=L.SeedInternalKind.CONV_LADDER,
        internal_level=3,
        internal_max_level=4,
        internal_level_changed_epoch=7,
    )
    assert L.decode(L.encode(state), L.SlotState) == state
    directive = L.StepDirective(
        run_id="r",
        env_id=0,
        episode=1,
        epoch=8,
        outcome=L.DecisionOutcome.APPLIED,
        effective_op=L.LifecycleOp.SHRINK_INTERNAL,
        raw_action=L.FactoredAction(op=L.LifecycleOp.SHRINK_INTERNAL, slot=1),
        mutations=[L.SetInternalLevel(slot_id="r0c1", seed_id="s", from_level=3, to_level=2)],
        slots=[state],
    )
    assert L.decode(L.encode(directive), L.StepDirective) == directive
    event = L.TelemetryEvent(
        event_id="e",
        run_id="r",
        source="tolaria",
        timestamp=1.0,
        payload=L.SeedInternalLevelChanged(
            slot_id="r0c1",
            seed_id="s",
            blueprint=L.BlueprintAction.CONV_LADDER,
            internal_kind=L.SeedInternalKind.CONV_LADDER,
            from_level=3,
            to_level=2,
            max_level=4,
            active_params=18_624,
        ),
    )
    assert L.decode(L.encode(event), L.TelemetryEvent) == event
    assert L.SCHEMA_PATH.read_text() == L.json_schema_text()


def test_a_slot_state_without_the_new_fields_decodes_to_no_structure() -> None:
    old = msgspec.msgpack.encode({"slot_id": "r0c0", "stage": int(L.SeedStage.TRAINING), "seed_id": "s"})
    state = L.decode(old, L.SlotState)
    fields = (state.internal_kind, state.internal_level, state.internal_max_level, state.internal_level_changed_epoch)
    assert fields == (L.SeedInternalKind.NONE, 0, 1, -1)
    assert replace(state, internal_level=0) == state
