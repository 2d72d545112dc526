"""Listing a bucket's keys leaves no consumer behind: nats.py's own `keys()` keeps one for 5 minutes, and the env
workers list the runs twice a second, which once filled JetStream's consumer limit mid-experiment."""

from __future__ import annotations

import asyncio
import time

from services.operator.embedded import EmbeddedNats
from services.runtime import jetstream
from services.runtime.bus import connect
from services.runtime.kv import KEYS_CONSUMER_TTL, bucket_keys
from services.runtime.settings import RuntimeSettings


async def _consumers(js) -> int:  # type: ignore[no-untyped-def]
    return int((await js.stream_info("KV_ESPER_RUNS")).state.consumer_count)


async def test_bucket_keys_lists_live_keys_and_its_consumers_go_within_seconds(fresh_nats: EmbeddedNats) -> None:
    nc = await connect(RuntimeSettings.from_env({"service": "test-keys", "nats_url": fresh_nats.url}, environ={}))
    try:
        js = nc.jetstream()
        kv = await jetstream.runs_bucket(js)
        assert await bucket_keys(kv) == []
        for key in ("run.a", "status.a", "worker.w1", "worker.w2"):
            await kv.put(key, b"x")
        await kv.delete("worker.w2")
        for _ in range(30):
            assert sorted(await bucket_keys(kv)) == ["run.a", "status.a", "worker.w1"]
        assert await _consumers(js) > 0, "the listings made consumers (so the check below can fail)"
        deadline = time.monotonic() + KEYS_CONSUMER_TTL + 15
        while await _consumers(js) > 0:
            assert time.monotonic() < deadline, f"{await _consumers(js)} listing consumers are still on the server"
            await asyncio.sleep(0.5)
        # The library's own listing, for contrast, is still there long after the same wait.
        await kv.keys()
        await asyncio.sleep(KEYS_CONSUMER_TTL + 3)
        assert await _consumers(js) == 1
    finally:
        await nc.close()
