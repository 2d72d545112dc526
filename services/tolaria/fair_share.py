"""Fair leasing: the env workers present split the unfinished envs of running runs between them.

Every worker announces itself in ESPER_RUNS (`WorkerPresence`, renewed each poll) and, from what it reads there,
computes the same split as every other worker: `shares` fills the workers up to their `max_envs`, evenly. A worker
leases no more than its share, and one holding more than its share (a worker joined) gives an env back at the end
of an episode, the unit of recovery, so nothing is run twice. A worker that leaves stops renewing; once its presence
expires the others' shares grow and they lease what it held.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from leyline_schemas import EnvLease, LeylineDecodeError, RunSpec, WorkerPresence, decode, encode, subjects
from services.runtime.bus import BUS_ERRORS
from services.tolaria import leases


def shares(unfinished_envs: int, workers: Sequence[WorkerPresence], held: Mapping[str, int]) -> dict[str, int]:
    """How many envs each worker may hold: water-filling `unfinished_envs` over the workers' capacities.

    The smallest capacities are filled first and every remaining worker gets an even part of what is left, rounded
    up, so the shares sum to at least the envs that capacity allows. Among equal capacities the workers that `held`
    says hold more come first and get the larger parts (no env moves only to even out a remainder); the last ties
    are broken by worker id, so every worker that reads the same KV computes the same split.
    """
    split: dict[str, int] = {}
    remaining = max(0, unfinished_envs)
    ordered = sorted(workers, key=lambda w: (max(0, w.max_envs), -held.get(w.worker_id, 0), w.worker_id))
    for index, worker in enumerate(ordered):
        left = len(ordered) - index
        given = min(max(0, worker.max_envs), -(-remaining // left))
        split[worker.worker_id] = given
        remaining -= given
    return split


@dataclass(frozen=True)
class Split:
    """One worker's view of the split: its share, and whether another present worker holds less than its own (so an
    env given back would be taken up)."""

    share: int
    room_elsewhere: bool


async def announce(kv: KeyValue, worker_id: str, max_envs: int, ttl: float) -> None:
    presence = WorkerPresence(worker_id=worker_id, max_envs=max_envs, expires_at=time.time() + ttl)
    await kv.put(subjects.worker_key(worker_id), encode(presence))


async def withdraw(kv: KeyValue, worker_id: str) -> None:
    """Leave the split at once (a clean stop), instead of after the presence expires."""
    with contextlib.suppress(KeyNotFoundError, *BUS_ERRORS):
        await kv.delete(subjects.worker_key(worker_id))


async def present_workers(kv: KeyValue, keys: Sequence[str]) -> list[WorkerPresence]:
    """The workers whose presence has not expired; an expired or unreadable presence is deleted."""
    now = time.time()
    present = []
    for key in keys:
        if not key.startswith("worker."):
            continue
        try:
            entry = await kv.get(key)
        except KeyNotFoundError:
            continue
        try:
            presence = decode(entry.value or b"", WorkerPresence)
        except LeylineDecodeError:
            presence = None
        if presence is None or presence.expires_at <= now:
            with contextlib.suppress(KeyNotFoundError, KeyWrongLastSequenceError):
                await kv.delete(key, last=entry.revision)
            continue
        present.append(presence)
    return present


async def held_envs(kv: KeyValue, specs: Sequence[RunSpec]) -> tuple[int, Counter[str]]:
    """The envs of these runs with episodes still to run (never leased, or leased and not done), and how many of
    them each worker holds now (a live lease, not released)."""
    now = time.time()
    unfinished, held = 0, Counter[str]()
    for spec in specs:
        for env_id in range(spec.n_envs):
            try:
                entry = await kv.get(subjects.lease_key(spec.run_id, env_id))
                lease: EnvLease | None = decode(entry.value or b"", EnvLease)
            except (KeyNotFoundError, LeylineDecodeError):
                lease = None
            if lease is not None and leases.env_finished(spec, lease):
                continue
            unfinished += 1
            if lease is not None and leases.held_now(lease, now):
                held[lease.worker_id] += 1
    return unfinished, held


async def split_for(kv: KeyValue, keys: Sequence[str], specs: Sequence[RunSpec], me: WorkerPresence) -> Split:
    """This worker's split now (`keys`: the bucket's keys), itself counted present before its presence is read."""
    workers = {w.worker_id: w for w in await present_workers(kv, keys)}
    workers[me.worker_id] = me
    unfinished, held = await held_envs(kv, specs)
    split = shares(unfinished, list(workers.values()), held)
    room = any(held.get(worker, 0) < share for worker, share in split.items() if worker != me.worker_id)
    return Split(share=split[me.worker_id], room_elsewhere=room)
