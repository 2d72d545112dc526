"""Env leases in the ESPER_RUNS bucket, kept by compare-and-set (ARCHITECTURE.md §6), and the keeper that holds one."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import msgspec
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError
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
from services.runtime.bus import BUS_ERRORS, retry_while_bus_fails
from services.runtime.kv import read_message

log = logging.getLogger("esper.tolaria.leases")


@dataclass
class HeldLease:
    lease: EnvLease
    revision: int


def env_finished(spec: RunSpec, lease: EnvLease) -> bool:
    """Whether the env of this lease has run every episode it owes the run."""
    return lease.episodes_done >= len(env_episodes(spec, lease.env_id))


def held_now(lease: EnvLease, now: float) -> bool:
    """Whether a worker holds this lease at `now`: not given back, not expired."""
    return not lease.released and lease.expires_at > now


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
    if env_finished(spec, held) or held_now(held, now):
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
    if stored.worker_id != lease.worker_id or entry.revision is None:
        return None
    return HeldLease(stored, entry.revision)


async def release(kv: KeyValue, held: HeldLease, **changes: object) -> HeldLease:
    lease = msgspec.structs.replace(held.lease, expires_at=0.0, released=True, **changes)
    revision = await kv.update(subjects.lease_key(lease.run_id, lease.env_id), encode(lease), last=held.revision)
    return HeldLease(lease, revision)


async def run_specs(kv: KeyValue, keys: Sequence[str]) -> list[RunSpec]:
    """Every run in the bucket whose status is RUNNING (`keys`: the bucket's keys, `runtime.kv.bucket_keys`)."""
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
    return await read_message(kv, subjects.run_status_key(run_id), RunStatus)


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
        if not env_finished(spec, decode(entry.value, EnvLease)):
            return False
    return True


def lease_name(held: HeldLease) -> str:
    """run/env, for log lines."""
    return f"{held.lease.run_id}/{held.lease.env_id}"


class LeaseLost(RuntimeError):
    """Another worker took this env (our lease expired): stop driving it at once."""


@dataclass
class LeaseKeeper:
    """Holds one env lease: renews it in the background, applies progress updates with compare-and-set.

    Progress updates and the release wait out a bus outage for up to `bus_deadline` seconds (unless `stopping` is
    set): the compare-and-set keeps a lease taken over meanwhile safe, and giving the env back over a bus blip would
    run its episode again.
    """

    kv: KeyValue
    held: HeldLease
    ttl: float
    bus_deadline: float = 0.0
    stopping: asyncio.Event | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    lost: bool = False

    async def update(self, **changes: object) -> None:
        await self._while_bus_fails(lambda: self._renew(**changes), "updating")

    async def _renew(self, **changes: object) -> None:
        async with self.lock:
            await self._write(lambda held: renew(self.kv, held, self.ttl, **changes))

    async def _while_bus_fails(self, write: Callable[[], Awaitable[None]], what: str) -> None:
        await retry_while_bus_fails(
            write,
            what=f"{what} the lease on {lease_name(self.held)}",
            stopping=self.stopping,
            deadline=self.bus_deadline,
        )

    async def _write(
        self,
        write: Callable[[HeldLease], Awaitable[HeldLease]],
        landed: Callable[[EnvLease], bool] = lambda stored: False,
    ) -> None:
        """Apply a compare-and-set write to the held lease; raise LeaseLost (and remember it) once it is not ours.

        A write whose reply the bus lost may have landed (the client sends it again after reconnecting), leaving the
        keeper a revision behind: if the stored lease is still ours, the write is made once more on top of it, unless
        `landed` says the stored lease already is what the write wanted.
        """
        try:
            self.held = await write(self.held)
            return
        except KeyWrongLastSequenceError as exc:
            mine = await held_by(self.kv, self.held.lease)
            if mine is not None and landed(mine.lease):
                self.held = mine
                return
            if mine is not None and not mine.lease.released:
                with contextlib.suppress(KeyWrongLastSequenceError):
                    self.held = await write(mine)
                    return
            self.lost = True
            raise LeaseLost(f"lease on {lease_name(self.held)} was taken over") from exc

    async def keep_alive(self) -> None:
        """Renew every ttl/3 until the lease is lost. A renewal the bus failed is retried sooner, never given up:
        the env is still being driven, and a lapsed lease would let another worker run the same episode."""
        delay = self.ttl / 3
        while not self.lost:
            await asyncio.sleep(delay)
            try:
                await self._renew()
            except LeaseLost:
                return
            except BUS_ERRORS as exc:
                log.warning(
                    "lease on %s not renewed (%s: %s); retrying", lease_name(self.held), type(exc).__name__, exc
                )
                delay = min(0.5, self.ttl / 6)
            else:
                delay = self.ttl / 3

    async def release(self, **changes: object) -> None:
        """Give the env back; a lease taken over meanwhile is left to its new holder."""
        with contextlib.suppress(LeaseLost):
            await self._while_bus_fails(lambda: self._release(**changes), "releasing")

    async def _release(self, **changes: object) -> None:
        async with self.lock:
            await self._write(lambda held: release(self.kv, held, **changes), landed=lambda stored: stored.released)
