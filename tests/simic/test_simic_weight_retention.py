"""Simic keeps the newest N weight blobs of a line and deletes the rest (a real nats-server's object store)."""

from __future__ import annotations

import asyncio
import uuid

from nats.aio.client import Client

from services.policy.pointers import put_weights, stored_versions
from services.runtime import jetstream
from services.runtime.bus import TelemetryPublisher, connect
from services.runtime.settings import RuntimeSettings
from services.simic.versions import VersionPublisher
from tests.tamiyo.policy_helpers import policy_blob


async def _publisher(url: str, keep: int, pruned: list[int]) -> tuple[VersionPublisher, Client]:
    nc = await connect(RuntimeSettings.from_env({"service": "test", "nats_url": url}))
    js = nc.jetstream()
    await jetstream.bootstrap(js)
    publisher = VersionPublisher(
        await jetstream.weights_store(js),
        await jetstream.policies_bucket(js),
        TelemetryPublisher(js, "test"),
        keep_versions=keep,
        on_pruned=pruned.append,
    )
    return publisher, nc


def test_only_the_newest_versions_are_kept_and_the_current_one_never_goes(nats_url: str) -> None:
    async def go() -> None:
        pruned: list[int] = []
        publisher, nc = await _publisher(nats_url, 3, pruned)
        line, other = f"keep-{uuid.uuid4().hex[:8]}", f"other-{uuid.uuid4().hex[:8]}"
        for version in range(6):
            await put_weights(publisher.store, line, version, policy_blob(line, version))
        await put_weights(publisher.store, other, 0, policy_blob(other, 0))
        assert await publisher.prune(line, 5) == [0, 1, 2]
        assert (await stored_versions(publisher.store, line))[line] == [3, 4, 5]
        assert (await stored_versions(publisher.store, other))[other] == [0], "another line is not touched"
        assert pruned == [3]
        # A line repointed back to an old version keeps it while newer ones exist above the window.
        assert await publisher.prune(line, 3) == []
        assert (await stored_versions(publisher.store, line))[line] == [3, 4, 5]
        await nc.close()

    asyncio.run(go())


def test_keep_zero_keeps_everything_and_a_broken_store_does_not_fail_the_commit(nats_url: str) -> None:
    async def go() -> None:
        pruned: list[int] = []
        publisher, nc = await _publisher(nats_url, 0, pruned)
        line = f"all-{uuid.uuid4().hex[:8]}"
        for version in range(4):
            await put_weights(publisher.store, line, version, policy_blob(line, version))
        assert await publisher.prune(line, 3) == []
        assert (await stored_versions(publisher.store, line))[line] == [0, 1, 2, 3]
        publisher.keep_versions = 1
        await nc.close()
        assert await publisher.prune(line, 3) == [], "a closed connection is logged, not raised"
        assert pruned == []

    asyncio.run(go())
