"""The policy book: which policy ids this Tamiyo serves, and the decide call behind each."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass

from leyline_schemas import Decision, DecisionRequest, PolicyKind
from services.tamiyo.heuristic import decide_heuristic
from services.tamiyo.simple_policies import random_decision, wait_decision

DecideFn = Callable[[DecisionRequest], Decision]


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


@dataclass
class ServedPolicy:
    policy_id: str
    kind: PolicyKind
    version: int
    decide: DecideFn
    sha256: str = ""


class PolicyBook:
    """Several policy ids served at once; learned lines are added and replaced between requests."""

    def __init__(self) -> None:
        self._policies: dict[str, ServedPolicy] = {}
        self.add(ServedPolicy("heuristic", PolicyKind.HEURISTIC, 0, decide_heuristic))
        self.add(ServedPolicy("random", PolicyKind.RANDOM, 0, lambda r: random_decision(r, request_rng(r))))
        self.add(ServedPolicy("wait", PolicyKind.WAIT, 0, wait_decision))

    def add(self, policy: ServedPolicy) -> None:
        # Replacing the dict entry is atomic for the event loop: a request already inside `decide`
        # keeps the version it started with.
        self._policies[policy.policy_id] = policy

    def get(self, policy_id: str) -> ServedPolicy:
        try:
            return self._policies[policy_id]
        except KeyError:
            raise UnknownPolicy(policy_id, sorted(self._policies)) from None

    def ids(self) -> list[str]:
        return sorted(self._policies)

    def served(self) -> list[ServedPolicy]:
        return [self._policies[k] for k in sorted(self._policies)]
