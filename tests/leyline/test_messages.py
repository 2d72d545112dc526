"""Leyline contracts: every message round-trips, decoding is strict on types and tolerant of unknown fields."""

from __future__ import annotations

import inspect
import subprocess
import sys
from enum import Enum
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import leyline_schemas as L

_cache: dict[Any, st.SearchStrategy[Any]] = {}


def strategy(info: msgspec.inspect.Type) -> st.SearchStrategy[Any]:
    """A hypothesis strategy for any msgspec type, built from msgspec's own type introspection."""
    inspect = msgspec.inspect
    if isinstance(info, inspect.IntType):
        return st.integers(min_value=-(2**31), max_value=2**31)
    if isinstance(info, inspect.FloatType):
        return st.floats(allow_nan=False, width=64)
    if isinstance(info, inspect.StrType):
        return st.text(max_size=12)
    if isinstance(info, inspect.BoolType):
        return st.booleans()
    if isinstance(info, inspect.BytesType):
        return st.binary(max_size=32)
    if isinstance(info, inspect.NoneType):
        return st.none()
    if isinstance(info, inspect.EnumType):
        return st.sampled_from(list(info.cls))
    if isinstance(info, inspect.ListType):
        return st.lists(strategy(info.item_type), max_size=3)
    if isinstance(info, inspect.DictType):
        return st.dictionaries(strategy(info.key_type), strategy(info.value_type), max_size=3)
    if isinstance(info, inspect.UnionType):
        return st.one_of(*[strategy(t) for t in info.types])
    if isinstance(info, inspect.StructType):
        cls = info.cls
        if cls not in _cache:
            fields = {f.name: strategy(f.type) for f in info.fields if not f.name.startswith("_")}
            _cache[cls] = st.deferred(lambda: st.builds(cls, **fields))
        return _cache[cls]
    raise TypeError(f"no strategy for {info!r}")


@pytest.mark.parametrize("message_type", L.MESSAGES, ids=lambda t: t.__name__)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_message_round_trips(message_type: type[L.Message], data: st.DataObject) -> None:
    message = data.draw(strategy(msgspec.inspect.type_info(message_type)))
    assert L.decode(L.encode(message), message_type) == message


def test_schema_json_matches_the_code() -> None:
    assert L.SCHEMA_PATH.read_text() == L.json_schema_text(), "run `esper schemas export` and commit schema.json"


def test_schema_descriptions_are_the_docstrings_cleaned_whatever_msgspec_does() -> None:
    """msgspec 0.22 kept docstring indentation, 0.23 dedents: the export normalises, so both give one schema.json."""
    defs = L.json_schema()["$defs"]
    documented = [cls for cls in L.MESSAGES if cls.__doc__ and "\n " in cls.__doc__]
    assert documented, "no message has a multi-line indented docstring to check against"
    for cls in documented:
        assert defs[cls.__name__]["description"] == inspect.cleandoc(cls.__doc__)


def test_schema_names_every_message_and_enum_values() -> None:
    schema = L.json_schema()
    assert set(schema["messages"]) == {cls.__name__ for cls in L.MESSAGES}
    assert schema["$defs"]["SeedStage"]["enum"] == [0, 1, 2, 3, 4, 6, 7, 8, 9, 10]


def test_importing_leyline_does_not_import_torch() -> None:
    code = "import sys, leyline_schemas; print('torch' in sys.modules, 'numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


def _step_request() -> L.StepRequest:
    return L.StepRequest(
        run_id="r",
        env_id=0,
        episode=0,
        epoch=1,
        policy_id="heuristic",
        slot_config=L.SlotConfig(topology=L.Topology.CNN, slots=[L.SlotSpec(slot_id="r0c0", channels=8, order=0)]),
        lifecycle=L.LifecycleConfig(),
        report=L.EpochReport(
            epoch=1, max_epochs=10, train_loss=1.0, train_accuracy=50.0, val_loss=1.0, val_accuracy=50.0
        ),
        slots=[L.SlotState(slot_id="r0c0")],
    )


def test_decode_error_names_type_and_field_for_reserved_stage() -> None:
    raw = msgspec.msgpack.decode(L.encode(_step_request()))
    raw["slots"][0]["stage"] = 5
    with pytest.raises(L.LeylineDecodeError) as err:
        L.decode(msgspec.msgpack.encode(raw), L.StepRequest)
    assert err.value.message_type == "StepRequest"
    assert err.value.field == "$.slots[0].stage"
    assert not err.value.wrong_type


def test_decode_error_flags_a_wrong_message_type() -> None:
    with pytest.raises(L.LeylineDecodeError) as err:
        L.decode(L.encode(_step_request()), L.Decision)
    assert err.value.wrong_type and err.value.field == "$.msg"
    assert "StepRequest" in str(err.value)


def test_decode_error_on_malformed_bytes() -> None:
    with pytest.raises(L.LeylineDecodeError) as err:
        L.decode(b"\xc1\xff garbage", L.StepRequest)
    assert "malformed" in err.value.detail


def test_types_are_strict() -> None:
    raw = msgspec.msgpack.decode(L.encode(_step_request()))
    raw["epoch"] = "1"
    with pytest.raises(L.LeylineDecodeError) as err:
        L.decode(msgspec.msgpack.encode(raw), L.StepRequest)
    assert err.value.field == "$.epoch"


def test_unknown_fields_from_a_newer_producer_are_ignored() -> None:
    raw = msgspec.msgpack.decode(L.encode(_step_request()))
    raw["a_field_from_the_future"] = {"x": 1}
    raw["report"]["another_new_field"] = [1, 2, 3]
    assert L.decode(msgspec.msgpack.encode(raw), L.StepRequest) == _step_request()


def test_messages_are_frozen_and_keyword_only() -> None:
    request = _step_request()
    with pytest.raises(AttributeError):
        request.epoch = 2  # type: ignore[misc]
    with pytest.raises(TypeError):
        L.ErrorReply("malformed", "x")  # type: ignore[misc]


def test_float32_state_packing_round_trips() -> None:
    values = [0.0, 1.5, -2.25, 2.0**40]
    assert L.unpack_float32(L.pack_float32(values)) == values
    with pytest.raises(ValueError):
        L.unpack_float32(b"\x00\x01\x02")


def test_mutation_union_is_tagged() -> None:
    directive_mutations = [
        L.Germinate(
            slot_id="r0c0",
            seed_id="s",
            blueprint=L.BlueprintAction.NORM,
            blend=L.BlendId.SIGMOID,
            alpha_algorithm=L.AlphaAlgorithm.ADD,
            blend_tempo_epochs=5,
            alpha_target=1.0,
        ),
        L.Fossilize(slot_id="r0c0"),
    ]
    encoded = msgspec.msgpack.decode(msgspec.msgpack.encode(directive_mutations))
    assert [m["kind"] for m in encoded] == ["germinate", "fossilize"]


def test_subject_tokens_are_validated() -> None:
    assert L.subjects.steps_subject("run-1") == "esper.v1.steps.run-1"
    for bad in ("a.b", "a b", "*", ">", ""):
        with pytest.raises(ValueError):
            L.subjects.steps_subject(bad)


def test_enum_values_match_the_reference() -> None:
    assert [int(s) for s in L.SeedStage] == [0, 1, 2, 3, 4, 6, 7, 8, 9, 10]
    assert int(L.LifecycleOp.ADVANCE) == 5 and int(L.BlueprintAction.FLEX_ATTENTION) == 12
    assert isinstance(L.RewardMode.SHAPED, Enum) and L.GateLevel.G5 == 5
    assert L.TEMPO_EPOCHS[L.TempoAction.SLOW] == 8 and L.ALPHA_SPEED_STEPS[L.AlphaSpeedAction.MEDIUM] == 5
