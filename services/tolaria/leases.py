"""Env leases in the ESPER_RUNS bucket, kept by compare-and-set (ARCHITECTURE.md §6)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import msgspec
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NoKeysError, NotFoundError
from nats.js.kv import KeyValue

from leyline_schemas import (
    EnvLease,
    LeylineDecodeError,
    RunSpec,
    RunState,
    RunStatus,
    StepRecord,
    decode,
    encode,
    subjects,
)
from leyline_schemas.rounds import env_episodes


@dataclass
class HeldLease:
    lease: EnvLease
    revision: int


async def try_lease(kv: KeyValue, spec: RunSpec, env_id: int, worker_id: str, ttl: float) -> HeldLease | None:
    """Claim an env that nobody holds, or whose holder's lease expired or was released unfinished."""
    key = subjects.lease_key(spec.run_id, env_id)
    now = time.time()
    fresh = EnvLease(run_id=spec.run_id, env_id=env_id, worker_id=worker_id, expires_at=now + ttl)
    try:
        revision = await kv.create(key, encode(fresh))
        return HeldLease(fresh, revision)
    except KeyWrongLastSequenceError:
        pass
    try:
        entry = await kv.get(key)
    except KeyNotFoundError:
        return None
    if entry.value is None:
        return None
    try:
        held = decode(entry.value, EnvLease)
    except LeylineDecodeError:
        held = fresh
    if held.episodes_done >= len(env_episodes(spec, env_id)):
        return None
    if not held.released and held.expires_at > now:
        return None
    taken = msgspec.structs.replace(held, worker_id=worker_id, expires_at=now + ttl, released=False)
    try:
        revision = await kv.update(key, encode(taken), last=entry.revision)
    except KeyWrongLastSequenceError:
        return None
    return HeldLease(taken, revision)


def episode_attempt(lease: EnvLease, episode: int) -> int:
    """The attempt number for starting `episode` under this lease: 0 the first time, one more on each restart.

    The lease records the episode in progress; finding it there at the start of that same episode means the worker
    that held it died or gave it back mid-episode.
    """
    return lease.attempt + 1 if lease.episode == episode else 0


async def final_step_stored(js: JetStreamContext, lease: EnvLease) -> bool:
    """Whether the final step record of the lease's episode and attempt is in STEPS.

    A worker that dies after storing an episode's last record, before recording the episode done in its lease,
    leaves a whole episode behind. Running it again would make a second complete attempt that Simic never scores
    (it scored the first) while Karn's store shows it; the worker that takes over counts the episode done instead.
    Only the records stored after `final_from` are read: the dead worker's final step and whatever other envs of
    the run published since.
    """
    if lease.episode < 0 or lease.final_from <= 0:
        return False
    subject = subjects.steps_subject(lease.run_id)
    seq = lease.final_from + 1
    while True:
        try:
            stored = await js.get_msg(subjects.STEPS_STREAM, seq=seq, subject=subject, next=True)
        except NotFoundError:
            return False
        try:
            record = decode(stored.data or b"", StepRecord)
        except LeylineDecodeError:
            record = None
        if (
            record is not None
            and record.done
            and (record.env_id, record.episode, record.attempt) == (lease.env_id, lease.episode, lease.attempt)
        ):
            return True
        seq = (stored.seq or seq) + 1


async def renew(kv: KeyValue, held: HeldLease, ttl: float, **changes: object) -> HeldLease:
    """Extend (and update) a lease we hold; raises KeyWrongLastSequenceError when someone else took it."""
    lease = msgspec.structs.replace(held.lease, expires_at=time.time() + ttl, **changes)
    revision = await kv.update(subjects.lease_key(lease.run_id, lease.env_id), encode(lease), last=held.revision)
    return HeldLease(lease, revision)


async def held_by(kv: KeyValue, lease: EnvLease) -> HeldLease | None:
    """The stored lease with its revision while `lease.worker_id` is its worker (released or not), else None (taken
    over or gone)."""
    try:
        entry = await kv.get(subjects.lease_key(lease.run_id, lease.env_id))
    except KeyNotFoundError:
        return None
    try:
        stored = decode(entry.value or b"", EnvLease)
    except LeylineDecodeError:
        return None
    if stored.worker_id != lease.worker_id:
        return None
    return HeldLease(stored, entry.revision)


async def release(kv: KeyValue, held: HeldLease, **changes: object) -> HeldLease:
    lease = msgspec.structs.replace(held.lease, expires_at=0.0, released=True, **changes)
    revision = await kv.update(subjects.lease_key(lease.run_id, lease.env_id), encode(lease), last=held.revision)
    return HeldLease(lease, revision)


async def run_specs(kv: KeyValue) -> list[RunSpec]:
    """Every run in the bucket whose status is RUNNING."""
    try:
        keys = await kv.keys()
    except NoKeysError:
        return []
    specs = []
    for key in keys:
        if not key.startswith("run."):
            continue
        status = await read_status(kv, key.removeprefix("run."))
        if status is None or status.state is not RunState.RUNNING:
            continue
        try:
            entry = await kv.get(key)
        except KeyNotFoundError:
            continue
        if entry.value:
            try:
                specs.append(decode(entry.value, RunSpec))
            except LeylineDecodeError:
                continue
    return specs


async def read_status(kv: KeyValue, run_id: str) -> RunStatus | None:
    try:
        entry = await kv.get(subjects.run_status_key(run_id))
    except KeyNotFoundError:
        return None
    if not entry.value:
        return None
    try:
        return decode(entry.value, RunStatus)
    except LeylineDecodeError:
        return None


async def update_status(
    kv: KeyValue, run_id: str, change: Callable[[RunStatus], RunStatus | None], attempts: int = 20
) -> RunStatus | None:
    """Apply `change` to the run's status with compare-and-set, retrying on concurrent writers."""
    key = subjects.run_status_key(run_id)
    for _ in range(attempts):
        try:
            entry = await kv.get(key)
        except KeyNotFoundError:
            return None
        if not entry.value:
            return None
        current = decode(entry.value, RunStatus)
        updated = change(current)
        if updated is None:
            return current
        try:
            await kv.update(key, encode(updated), last=entry.revision)
        except KeyWrongLastSequenceError:
            continue
        return updated
    raise RuntimeError(f"could not update the status of {run_id} after {attempts} attempts")


async def all_envs_done(kv: KeyValue, spec: RunSpec) -> bool:
    for env_id in range(spec.n_envs):
        try:
            entry = await kv.get(subjects.lease_key(spec.run_id, env_id))
        except KeyNotFoundError:
            return False
        if not entry.value:
            return False
        lease = decode(entry.value, EnvLease)
        if lease.episodes_done < len(env_episodes(spec, env_id)):
            return False
    return True
