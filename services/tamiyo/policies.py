"""The policy book: which policy ids this Tamiyo serves, and the decide call behind each."""

from __future__ import annotations

import functools
import hashlib
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import msgspec

from leyline_schemas import ActivePolicy, Decision, DecisionRequest, PolicyKind
from leyline_schemas.policy_ids import BUILTIN_POLICY_IDS, GREEDY_SUFFIX
from services.tamiyo.heuristic import HEURISTIC_VARIANTS, decide_heuristic
from services.tamiyo.schedules import schedule_decision
from services.tamiyo.simple_policies import random_decision, wait_decision

DecideFn = Callable[[DecisionRequest], Decision]
#: Many requests at once, each answered with its Decision or the ValueError it alone raises (dynamic batching).
DecideManyFn = Callable[[Sequence[DecisionRequest]], Sequence[Decision | ValueError]]


class UnknownPolicy(KeyError):
    def __init__(self, policy_id: str, known: list[str]) -> None:
        super().__init__(policy_id)
        self.policy_id = policy_id
        self.known = known

    def __str__(self) -> str:
        return f"unknown policy id {self.policy_id!r}; served here: {', '.join(self.known)}"


def request_rng(request: DecisionRequest) -> random.Random:
    """A generator seeded from the request alone, so the random policy stays stateless and reproducible."""
    key = f"{request.run_id}/{request.env_id}/{request.episode}/{request.epoch}".encode()
    return random.Random(int.from_bytes(hashlib.sha256(key).digest()[:8], "little"))


def _random(request: DecisionRequest) -> Decision:
    return random_decision(request, request_rng(request))


#: The rule-based policies every Tamiyo serves under their own ids, and what a pointer of that kind means.
BUILTIN_DECIDERS: dict[PolicyKind, DecideFn] = {
    PolicyKind.HEURISTIC: decide_heuristic,
    PolicyKind.RANDOM: _random,
    PolicyKind.WAIT: wait_decision,
    PolicyKind.SCHEDULE: schedule_decision,
}


def resolve_view(request: DecisionRequest) -> DecisionRequest:
    """A request for `<line>+greedy` becomes a deterministic request for `<line>`; others pass unchanged."""
    if request.policy_id.endswith(GREEDY_SUFFIX) and len(request.policy_id) > len(GREEDY_SUFFIX):
        return msgspec.structs.replace(request, policy_id=request.policy_id[: -len(GREEDY_SUFFIX)], deterministic=True)
    return request


@dataclass
class ServedPolicy:
    policy_id: str
    kind: PolicyKind
    version: int
    decide: DecideFn
    decide_many: DecideManyFn | None = None
    sha256: str = ""
    object_name: str = ""
    loaded_at: float = field(default_factory=time.time)

    def matches(self, active: ActivePolicy) -> bool:
        """Whether this is already the version (and blob) the pointer names."""
        return self.kind is active.kind and self.version == active.version and self.sha256 == active.sha256


def builtin_policy(policy_id: str, kind: PolicyKind, version: int = 0) -> ServedPolicy:
    """A rule-based policy under any id (a pointer of kind heuristic, random or wait)."""
    if kind not in BUILTIN_DECIDERS:
        raise ValueError(f"policy kind {kind.value} has no built-in decider")
    decide = BUILTIN_DECIDERS[kind]
    if kind is PolicyKind.HEURISTIC and policy_id in HEURISTIC_VARIANTS:
        decide = functools.partial(decide_heuristic, config=HEURISTIC_VARIANTS[policy_id], policy_id=policy_id)
    return ServedPolicy(policy_id, kind, version, decide)


class PolicyBook:
    """Several policy ids served at once; learned lines are added and replaced between requests."""

    def __init__(self) -> None:
        self._policies: dict[str, ServedPolicy] = {}
        for policy_id, kind in BUILTIN_POLICY_IDS.items():
            self.add(builtin_policy(policy_id, kind))

    def add(self, policy: ServedPolicy) -> None:
        # Replacing the dict entry is atomic for the event loop: a request already inside `decide`
        # keeps the version it started with.
        self._policies[policy.policy_id] = policy

    def remove(self, policy_id: str) -> None:
        """Forget a line; a built-in id falls back to its rule-based policy."""
        if policy_id in BUILTIN_POLICY_IDS:
            self.add(builtin_policy(policy_id, BUILTIN_POLICY_IDS[policy_id]))
        else:
            self._policies.pop(policy_id, None)

    def get(self, policy_id: str) -> ServedPolicy:
        try:
            return self._policies[policy_id]
        except KeyError:
            raise UnknownPolicy(policy_id, sorted(self._policies)) from None

    def find(self, policy_id: str) -> ServedPolicy | None:
        return self._policies.get(policy_id)

    def ids(self) -> list[str]:
        return sorted(self._policies)

    def served(self) -> list[ServedPolicy]:
        return [self._policies[k] for k in sorted(self._policies)]
