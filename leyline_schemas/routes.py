"""Every request/reply subject with the message it takes and the message it answers (ARCHITECTURE.md §4).

This is the one table both sides read: a service decodes requests on `route.subject` as `route.request`, and a
caller's `request(nc, route, message)` decodes the answer as `route.reply`, so no caller restates a reply type.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from leyline_schemas import subjects
from leyline_schemas.base import Message
from leyline_schemas.decisions import Decision, DecisionRequest
from leyline_schemas.directives import StepDirective, StepRequest
from leyline_schemas.runs import (
    PolicyListRequest,
    RunAccepted,
    RunResumeRequest,
    RunSpec,
    RunStatus,
    RunStatusRequest,
    RunStopRequest,
    ServedPolicies,
)

Req = TypeVar("Req", bound=Message)
Rep = TypeVar("Rep", bound=Message)


@dataclass(frozen=True)
class Route(Generic[Req, Rep]):
    """A request/reply subject: what is sent on it and what comes back (or an ErrorReply)."""

    subject: str
    request: type[Req]
    reply: type[Rep]


KASMINA_STEP = Route(subjects.KASMINA_STEP, StepRequest, StepDirective)
TAMIYO_DECIDE = Route(subjects.TAMIYO_DECIDE, DecisionRequest, Decision)
TAMIYO_POLICIES = Route(subjects.TAMIYO_POLICIES, PolicyListRequest, ServedPolicies)
RUNS_START = Route(subjects.RUNS_START, RunSpec, RunAccepted)
RUNS_STOP = Route(subjects.RUNS_STOP, RunStopRequest, RunStatus)
RUNS_STATUS = Route(subjects.RUNS_STATUS, RunStatusRequest, RunStatus)
RUNS_RESUME = Route(subjects.RUNS_RESUME, RunResumeRequest, RunStatus)

#: subject → route, for code that starts from a subject string (discovery, fuzzing, docs).
ROUTES: Mapping[str, Route[Any, Any]] = MappingProxyType(
    {
        route.subject: route
        for route in (KASMINA_STEP, TAMIYO_DECIDE, TAMIYO_POLICIES, RUNS_START, RUNS_STOP, RUNS_STATUS, RUNS_RESUME)
    }
)
