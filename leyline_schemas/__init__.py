"""Leyline: the contracts between Esper's services. Imports nothing heavier than msgspec."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import msgspec

from leyline_schemas import enums as _enums
from leyline_schemas import subjects
from leyline_schemas.base import SCHEMA_VERSION, Message, Record
from leyline_schemas.codec import decode, decoder, encode, pack_float32, to_builtins, unpack_float32, warm
from leyline_schemas.decisions import (
    HEAD_NAMES,
    ActionMasks,
    Decision,
    DecisionRequest,
    FactoredAction,
    HeadValues,
)
from leyline_schemas.directives import (
    Advance,
    Fossilize,
    Germinate,
    Mutation,
    Prune,
    SetAlphaTarget,
    SetInternalLevel,
    StepDirective,
    StepRequest,
)
from leyline_schemas.enums import *  # noqa: F403 - the enums are part of the public surface
from leyline_schemas.errors import ErrorReply, LeylineDecodeError, RemoteError
from leyline_schemas.lifecycle import (
    SEED_INTERNALS,
    AlphaControllerState,
    CommittedSeed,
    InternalSpec,
    LifecycleConfig,
    SeedMetrics,
    SlotConfig,
    SlotSpec,
    SlotState,
    TopologyManifest,
)
from leyline_schemas.reports import (
    EpochCompute,
    EpochReport,
    GovernorReport,
    PairInteraction,
    SlotReport,
    TrainingSignals,
)
from leyline_schemas.runs import (
    ActivePolicy,
    ArmSpec,
    EnvLease,
    EnvProgress,
    PolicyListRequest,
    RunAccepted,
    RunAttachment,
    RunResumeRequest,
    RunSpec,
    RunStatus,
    RunStatusRequest,
    RunStopRequest,
    ServedPolicies,
    ServedPolicyInfo,
    WorkerPresence,
)
from leyline_schemas.steps import EpisodeSummary, StepRecord
from leyline_schemas.telemetry import (
    CoalitionValue,
    EpisodeOutcome,
    EpisodeResumed,
    EpochCompleted,
    EventPayload,
    GovernorRollback,
    LifecyclePayload,
    MutationRefused,
    PolicyLoadFailed,
    PolicyUpdated,
    PPOUpdateCompleted,
    RunFinished,
    RunResumed,
    RunStarted,
    SeedFossilized,
    SeedGateEvaluated,
    SeedGerminated,
    SeedInternalLevelChanged,
    SeedPruned,
    SeedStageChanged,
    ServiceStarted,
    ServiceStopped,
    ShapleyComputed,
    TelemetryEvent,
)

#: Every top-level message that crosses a process.
MESSAGES: tuple[type[Message], ...] = (
    StepRequest,
    StepDirective,
    DecisionRequest,
    Decision,
    StepRecord,
    TelemetryEvent,
    RunSpec,
    RunAccepted,
    RunStopRequest,
    RunStatusRequest,
    RunResumeRequest,
    RunStatus,
    EnvLease,
    RunAttachment,
    WorkerPresence,
    ActivePolicy,
    ErrorReply,
    PolicyListRequest,
    ServedPolicies,
)
# Every message's decoder is built here, once, while the import lock keeps other threads out (see codec.decoder).
warm(MESSAGES)

SCHEMA_PATH = Path(__file__).with_name("schema.json")


def _cleaned_descriptions(node: Any) -> Any:
    """``node`` with every docstring-derived description in ``inspect.cleandoc`` form.

    msgspec takes descriptions from docstrings and its releases trim them differently (0.23 dedents otherwise
    than 0.22), so the export normalises them itself: the committed schema then depends on the code alone.
    """
    if isinstance(node, dict):
        return {
            key: inspect.cleandoc(value)
            if key == "description" and isinstance(value, str)
            else _cleaned_descriptions(value)
            for key, value in node.items()
        }
    if isinstance(node, list | tuple):
        return [_cleaned_descriptions(item) for item in node]
    return node


def json_schema() -> dict[str, Any]:
    """The JSON Schema of every message, with shared definitions."""
    schemas, components = _cleaned_descriptions(msgspec.json.schema_components(MESSAGES, ref_template="#/$defs/{name}"))
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Esper Leyline messages",
        "schema_version": SCHEMA_VERSION,
        "messages": {cls.__name__: schema for cls, schema in zip(MESSAGES, schemas, strict=True)},
        "$defs": components,
    }


def json_schema_text() -> str:
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"


def export_schema(path: Path = SCHEMA_PATH) -> Path:
    path.write_text(json_schema_text())
    return path


__all__ = [
    "HEAD_NAMES",
    "MESSAGES",
    "SCHEMA_PATH",
    "SCHEMA_VERSION",
    "SEED_INTERNALS",
    "ActionMasks",
    "ActivePolicy",
    "Advance",
    "AlphaControllerState",
    "ArmSpec",
    "Decision",
    "DecisionRequest",
    "EnvLease",
    "WorkerPresence",
    "EnvProgress",
    "EpisodeOutcome",
    "CommittedSeed",
    "EpisodeSummary",
    "EpochCompleted",
    "EpochCompute",
    "EpochReport",
    "ErrorReply",
    "EventPayload",
    "FactoredAction",
    "Fossilize",
    "Germinate",
    "GovernorReport",
    "GovernorRollback",
    "HeadValues",
    "InternalSpec",
    "LeylineDecodeError",
    "LifecycleConfig",
    "LifecyclePayload",
    "Message",
    "Mutation",
    "MutationRefused",
    "PPOUpdateCompleted",
    "PairInteraction",
    "PolicyListRequest",
    "PolicyLoadFailed",
    "PolicyUpdated",
    "Prune",
    "Record",
    "RemoteError",
    "RunAccepted",
    "RunFinished",
    "RunResumed",
    "EpisodeResumed",
    "RunResumeRequest",
    "RunAttachment",
    "RunSpec",
    "RunStarted",
    "RunStatus",
    "RunStatusRequest",
    "RunStopRequest",
    "SeedFossilized",
    "SeedGateEvaluated",
    "SeedGerminated",
    "SeedMetrics",
    "SeedInternalLevelChanged",
    "SeedPruned",
    "SeedStageChanged",
    "ServedPolicies",
    "ServedPolicyInfo",
    "ServiceStarted",
    "ServiceStopped",
    "ShapleyComputed",
    "CoalitionValue",
    "SetAlphaTarget",
    "SetInternalLevel",
    "SlotConfig",
    "SlotReport",
    "SlotSpec",
    "SlotState",
    "TopologyManifest",
    "StepDirective",
    "StepRecord",
    "StepRequest",
    "TelemetryEvent",
    "TrainingSignals",
    "decode",
    "decoder",
    "encode",
    "export_schema",
    "json_schema",
    "json_schema_text",
    "pack_float32",
    "subjects",
    "to_builtins",
    "unpack_float32",
    *[name for name in vars(_enums) if name[:1].isupper() and name not in ("IntEnum", "StrEnum")],
]
