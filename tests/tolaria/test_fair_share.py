"""Fair leasing: the split every worker computes from ESPER_RUNS (properties), and reading it back from a real KV."""

from __future__ import annotations

import random
import time
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

import leyline_schemas as L
from services.runtime import jetstream
from services.runtime.bus import connect
from services.runtime.kv import bucket_keys
from services.runtime.settings import RuntimeSettings
from services.tolaria import fair_share, leases
from services.tolaria.fair_share import shares

workers_st = st.lists(st.integers(min_value=0, max_value=8), min_size=1, max_size=6).map(
    lambda caps: [L.WorkerPresence(worker_id=f"w{i}", max_envs=c, expires_at=0.0) for i, c in enumerate(caps)]
)


@given(workers_st, st.integers(min_value=0, max_value=40), st.data())
def test_the_split_covers_what_capacity_allows_within_each_cap_and_is_even(
    workers: list[L.WorkerPresence], unfinished: int, data: st.DataObject
) -> None:
    held = {w.worker_id: data.draw(st.integers(0, 8)) for w in workers}
    split = shares(unfinished, workers, held)
    capacity = sum(w.max_envs for w in workers)
    assert sum(split.values()) >= min(unfinished, capacity), "some env that a worker could drive is nobody's share"
    assert sum(split.values()) <= max(unfinished, 0) + len(workers), "rounding up gives at most one extra each"
    for w in workers:
        assert 0 <= split[w.worker_id] <= w.max_envs
    # Even: a worker below its cap never has two fewer than another worker.
    for a in workers:
        for b in workers:
            if split[a.worker_id] < a.max_envs:
                assert split[b.worker_id] - split[a.worker_id] <= 1, split


@given(workers_st, st.integers(min_value=0, max_value=40), st.randoms())
def test_every_worker_computes_the_same_split_whatever_order_it_reads_the_kv_in(
    workers: list[L.WorkerPresence], unfinished: int, rng: random.Random
) -> None:
    held = {w.worker_id: i % 3 for i, w in enumerate(workers)}
    shuffled = list(workers)
    rng.shuffle(shuffled)
    assert shares(unfinished, workers, held) == shares(unfinished, shuffled, held)


def test_a_remainder_goes_to_the_worker_already_holding_more() -> None:
    """One env left, held by the worker that sorts last by id: it keeps it instead of handing it over."""
    pair = [L.WorkerPresence(worker_id=w, max_envs=4, expires_at=0.0) for w in ("a", "b")]
    assert shares(1, pair, {"b": 1}) == {"b": 1, "a": 0}
    assert shares(4, pair, {"a": 4}) == {"a": 2, "b": 2}, "a joining worker gets half"
    assert shares(3, pair, {"a": 3}) == {"a": 2, "b": 1}


def test_four_envs_over_two_default_workers_and_one_smaller() -> None:
    trio = [
        L.WorkerPresence(worker_id="small", max_envs=1, expires_at=0.0),
        L.WorkerPresence(worker_id="x", max_envs=4, expires_at=0.0),
        L.WorkerPresence(worker_id="y", max_envs=4, expires_at=0.0),
    ]
    split = shares(6, trio, {})
    assert split["small"] == 1 and split["x"] + split["y"] == 5 and abs(split["x"] - split["y"]) == 1


@pytest.mark.integration
async def test_the_split_read_from_kv_counts_live_workers_and_held_unfinished_envs(nats_url: str) -> None:
    nc = await connect(RuntimeSettings.from_env({"service": "test-share", "nats_url": nats_url}, environ={}))
    try:
        kv = await jetstream.runs_bucket(nc.jetstream(timeout=2.0))
        run_id = f"share-{time.time_ns()}"
        spec = L.RunSpec(run_id=run_id, task="digits", episodes=4, n_envs=4)  # one episode per env
        me = L.WorkerPresence(worker_id=f"me-{run_id}", max_envs=4, expires_at=time.time() + 30)
        other = f"other-{run_id}"
        await fair_share.announce(kv, other, 4, ttl=30)
        stale = f"gone-{run_id}"
        await fair_share.announce(kv, stale, 4, ttl=-1)  # a worker that died long ago
        # The other worker holds env 0; env 3 is finished.
        held = await leases.try_lease(kv, spec, 0, other, 30)
        assert held is not None
        done = await leases.try_lease(kv, spec, 3, other, 30)
        assert done is not None
        await leases.renew(kv, done, 30, episodes_done=1)

        unfinished, holders = await fair_share.held_envs(kv, [spec])
        assert unfinished == 3 and holders == Counter({other: 1})
        split = await fair_share.split_for(kv, await bucket_keys(kv), [spec], me)
        # 3 unfinished over me and the other (the stale one is not counted): the other keeps the larger part.
        assert split.share == 1 and split.room_elsewhere, split
        keys = await bucket_keys(kv)
        assert L.subjects.worker_key(stale) not in keys, "an expired presence is cleared by whoever reads it"

        await fair_share.withdraw(kv, other)
        split = await fair_share.split_for(kv, await bucket_keys(kv), [spec], me)
        assert split.share == 3 and not split.room_elsewhere
    finally:
        await nc.close()


def test_a_dotted_host_name_makes_a_valid_presence_key() -> None:
    assert L.subjects.worker_key("tolaria-node1.example.com-42") == "worker.tolaria-node1_example_com-42"
    with pytest.raises(ValueError):
        L.subjects.worker_key("")
