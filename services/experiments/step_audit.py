"""What a run's step records say about the policy versions that acted, read back from the STEPS stream.

A learning run reports its version lag per round: a step of round r is trained by the update that starts from
version `from_version + r`, so its lag is that minus the version that decided it (0 throughout a strictly on-policy
run; up to the learner's `max_version_lag` and beyond under `--async`). An evaluation of version N checks that every
one of its steps was decided by N. Only the latest attempt of each episode counts, as for every consumer.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from nats.aio.client import Client
from nats.errors import TimeoutError as NatsTimeoutError

from leyline_schemas import DecisionOutcome, RunSpec, StepRecord, decode, subjects
from leyline_schemas.rounds import arm_of_env, round_of_episode

UNDECIDED = frozenset({DecisionOutcome.POLICY_UNAVAILABLE, DecisionOutcome.POLICY_ERROR})


async def read_step_records(
    nc: Client, run_id: str, *, expected: int, idle: float = 2.0, timeout: float = 60.0
) -> list[StepRecord]:
    """The run's step records in stream order: read until at least `expected` are in and the stream stays quiet for
    `idle` seconds (or `timeout` passes, with what arrived by then)."""
    records: list[StepRecord] = []
    sub = await nc.jetstream().subscribe(subjects.steps_subject(run_id), ordered_consumer=True)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                msg = await sub.next_msg(timeout=idle)
            except (TimeoutError, NatsTimeoutError):
                if len(records) >= expected:
                    break
                continue
            records.append(decode(msg.data, StepRecord))
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
    return records


def latest_attempts(records: list[StepRecord]) -> list[StepRecord]:
    """The records of each episode's latest attempt, one per step (a redelivered copy counts once)."""
    latest: dict[tuple[int, int], int] = {}
    for r in records:
        latest[(r.env_id, r.episode)] = max(r.attempt, latest.get((r.env_id, r.episode), 0))
    kept = {(r.env_id, r.episode, r.step): r for r in records if r.attempt == latest[(r.env_id, r.episode)]}
    return [kept[key] for key in sorted(kept)]


def decided(record: StepRecord) -> bool:
    """Whether a policy decided the step (a step without a decision carries version −1)."""
    return record.directive.decision is not None and record.policy_version >= 0


def round_version_lags(spec: RunSpec, records: list[StepRecord]) -> list[dict[str, Any]]:
    """Per round of a learning run: its decided steps and their version lag (mean and max), and its undecided steps."""
    by_round: dict[int, list[StepRecord]] = {}
    for record in latest_attempts(records):
        by_round.setdefault(round_of_episode(spec, record.episode), []).append(record)
    rows = []
    for round_index, members in sorted(by_round.items()):
        lags = [arm_of_env(spec, r.env_id).from_version + round_index - r.policy_version for r in members if decided(r)]
        rows.append(
            {
                "round": round_index,
                "steps": len(lags),
                "undecided_steps": len(members) - len(lags),
                "lag_mean": round(sum(lags) / len(lags), 4) if lags else None,
                "lag_max": max(lags) if lags else None,
            }
        )
    return rows


def evaluation_version_check(records: list[StepRecord], version: int) -> dict[str, int]:
    """How many steps of an evaluation of `version` were decided by another version, or by none at all (both 0)."""
    kept = latest_attempts(records)
    return {
        "evaluated_version": version,
        "steps": len(kept),
        "version_mismatches": sum(1 for r in kept if decided(r) and r.policy_version != version),
        "undecided_steps": sum(1 for r in kept if not decided(r) or r.directive.outcome in UNDECIDED),
    }
