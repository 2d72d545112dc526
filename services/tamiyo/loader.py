"""Turning an ActivePolicy pointer (and, for learned lines, its blob) into a ServedPolicy, or a reason why not.

The digest is verified before the blob is parsed; any failure leaves the book untouched (ARCHITECTURE.md §7).
"""

from __future__ import annotations

from leyline_schemas import ActivePolicy, PolicyKind
from services.policy.weights import PolicyBlobError, decode_policy
from services.tamiyo.learned import LearnedPolicy
from services.tamiyo.policies import ServedPolicy, builtin_policy


class PolicyLoadError(Exception):
    """A pointer that could not be served; the previous version of the line stays in place."""

    def __init__(self, active: ActivePolicy, reason: str) -> None:
        super().__init__(f"{active.policy_id} v{active.version}: {reason}")
        self.active = active
        self.reason = reason


def needs_blob(active: ActivePolicy) -> bool:
    return active.kind is PolicyKind.LEARNED


def served_policy(active: ActivePolicy, blob: bytes | None = None) -> ServedPolicy:
    """The policy a pointer names; a learned pointer needs its blob, whose sha256 must match the pointer."""
    if not needs_blob(active):
        return builtin_policy(active.policy_id, active.kind, active.version)
    if not active.sha256:
        raise PolicyLoadError(active, "learned pointer carries no sha256")
    if blob is None:
        raise PolicyLoadError(active, f"object {active.object_name!r} is missing from the weights store")
    try:
        weights = decode_policy(blob, expected_sha256=active.sha256)
    except PolicyBlobError as exc:
        raise PolicyLoadError(active, str(exc)) from exc
    if weights.version != active.version:
        raise PolicyLoadError(active, f"blob holds version {weights.version}, pointer names {active.version}")
    policy = LearnedPolicy.from_weights(weights, policy_id=active.policy_id, sha256=active.sha256)
    return ServedPolicy(
        policy_id=active.policy_id,
        kind=PolicyKind.LEARNED,
        version=active.version,
        decide=policy.decide,
        decide_many=policy.decide_many,
        sha256=active.sha256,
        object_name=active.object_name,
    )
