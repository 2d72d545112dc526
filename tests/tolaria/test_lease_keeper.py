"""The lease keeper on a real nats-server: a bus outage does not end the renewals (the lease would lapse while the
env is still being driven, and another worker would run the same episode), a takeover does."""

from __future__ import annotations

import asyncio
import time

import msgspec
import pytest

import leyline_schemas as L
from services.operator.embedded import EmbeddedNats
from services.runtime import jetstream
from services.runtime.bus import connect
from services.runtime.settings import RuntimeSettings
from services.tolaria import leases
from services.tolaria.leases import LeaseKeeper, LeaseLost

TTL = 1.5
SPEC = L.RunSpec(run_id="keeper", task="digits", episodes=2, n_envs=1)


async def stored(kv, run_id: str) -> L.EnvLease:  # type: ignore[no-untyped-def]
    entry = await kv.get(L.subjects.lease_key(run_id, 0))
    return L.decode(entry.value or b"", L.EnvLease)


async def test_renewals_outlast_a_nats_restart_and_stop_at_a_takeover(fresh_nats: EmbeddedNats) -> None:
    nc = await connect(RuntimeSettings.from_env({"service": "test-keeper", "nats_url": fresh_nats.url}, environ={}))
    try:
        kv = await jetstream.runs_bucket(nc.jetstream(timeout=1.0))
        held = await leases.try_lease(kv, SPEC, 0, "worker-a", TTL)
        assert held is not None
        keeper = LeaseKeeper(kv, held, TTL)
        renewals = asyncio.create_task(keeper.keep_alive())

        await asyncio.to_thread(fresh_nats.kill)
        await asyncio.sleep(TTL)  # several renewals fail meanwhile
        await asyncio.to_thread(fresh_nats.restart)
        deadline = time.monotonic() + 20
        while (await _expiry(kv)) < time.time() + TTL / 2:
            assert not renewals.done(), f"renewals ended on a bus fault: {renewals.exception()!r}"
            assert time.monotonic() < deadline, "the lease was never renewed after the restart"
            await asyncio.sleep(0.2)
        assert not keeper.lost

        # A renewal written although its reply was lost leaves the keeper a revision behind: the lease is still its
        # own, so it carries on from what is stored.
        current = await kv.get(L.subjects.lease_key(SPEC.run_id, 0))
        written = msgspec.structs.replace(await stored(kv, SPEC.run_id), expires_at=time.time() + TTL)
        await kv.update(L.subjects.lease_key(SPEC.run_id, 0), L.encode(written), last=current.revision)
        await keeper.update(episodes_done=1)
        assert not keeper.lost and (await stored(kv, SPEC.run_id)).episodes_done == 1

        # Another worker takes the env over (as after a real expiry): the renewals stop, the keeper knows.
        current = await kv.get(L.subjects.lease_key(SPEC.run_id, 0))
        taken = msgspec.structs.replace(await stored(kv, SPEC.run_id), worker_id="worker-b")
        await kv.update(L.subjects.lease_key(SPEC.run_id, 0), L.encode(taken), last=current.revision)
        await asyncio.wait_for(renewals, timeout=10)
        assert keeper.lost and (await stored(kv, SPEC.run_id)).worker_id == "worker-b"
        with pytest.raises(LeaseLost):
            await keeper.update(episodes_done=2)
    finally:
        await nc.close()


async def _expiry(kv) -> float:  # type: ignore[no-untyped-def]
    try:
        return (await stored(kv, SPEC.run_id)).expires_at
    except Exception:
        return 0.0


async def test_a_keeper_a_revision_behind_still_releases_its_lease(nats_url: str) -> None:
    nc = await connect(RuntimeSettings.from_env({"service": "test-keeper", "nats_url": nats_url}, environ={}))
    try:
        kv = await jetstream.runs_bucket(nc.jetstream())
        spec = msgspec.structs.replace(SPEC, run_id=f"keeper-release-{time.monotonic_ns()}")
        held = await leases.try_lease(kv, spec, 0, "worker-a", TTL)
        assert held is not None
        keeper = LeaseKeeper(kv, held, TTL)
        # Its last renewal was written, but the reply was lost: the keeper holds the revision before it.
        key = L.subjects.lease_key(spec.run_id, 0)
        current = await kv.get(key)
        written = msgspec.structs.replace(await stored(kv, spec.run_id), expires_at=time.time() + TTL)
        await kv.update(key, L.encode(written), last=current.revision)
        await keeper.release()
        assert (await stored(kv, spec.run_id)).released, "the env stays locked until the lease expires"
    finally:
        await nc.close()


async def test_progress_and_release_wait_out_a_nats_outage(fresh_nats: EmbeddedNats) -> None:
    """An episode's progress written while nats-server is down lands once it is back, and so does the release: the
    env is neither given back over the blip (its episode would run again) nor left locked until the lease expires."""
    nc = await connect(RuntimeSettings.from_env({"service": "test-keeper", "nats_url": fresh_nats.url}, environ={}))
    try:
        kv = await jetstream.runs_bucket(nc.jetstream(timeout=1.0))
        held = await leases.try_lease(kv, SPEC, 0, "worker-a", TTL)
        assert held is not None
        keeper = LeaseKeeper(kv, held, TTL, bus_deadline=60.0)

        for write, landed in (
            (lambda: keeper.update(episode=1, attempt=0), lambda lease: lease.episode == 1),
            (lambda: keeper.release(episodes_done=1), lambda lease: lease.released and lease.episodes_done == 1),
        ):
            await asyncio.to_thread(fresh_nats.kill)
            pending = asyncio.create_task(write())
            await asyncio.sleep(1.0)
            assert not pending.done(), f"the write gave up during the outage: {pending.exception()!r}"
            await asyncio.to_thread(fresh_nats.restart)
            await asyncio.wait_for(pending, timeout=30)
            assert landed(await stored(kv, SPEC.run_id)) and not keeper.lost
    finally:
        await nc.close()
