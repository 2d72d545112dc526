"""Telemetry is best-effort: a publish that fails is counted and never raises into the lifecycle operation (I16)."""

from __future__ import annotations

import asyncio
from typing import Any

import leyline_schemas as L
from services.runtime.bus import TelemetryPublisher


class BrokenStream:
    async def publish(self, *args: Any, **kwargs: Any) -> None:
        raise ConnectionError("stream unavailable")


def test_failed_publish_is_counted_not_raised() -> None:
    dropped: list[str] = []
    publisher = TelemetryPublisher(BrokenStream(), "tolaria-test", dropped.append)  # type: ignore[arg-type]
    payload = L.SeedPruned(
        slot_id="r0c0", seed_id="s", blueprint=L.BlueprintAction.NORM, reason="x", initiator="policy"
    )
    assert asyncio.run(publisher.emit("run-1", payload, env_id=0)) is False
    assert dropped == ["seed_pruned"]


def test_events_carry_their_envelope() -> None:
    publisher = TelemetryPublisher(BrokenStream(), "kasmina-test")  # type: ignore[arg-type]
    event = publisher.event("run-1", L.RunFinished(state="completed"), env_id=2, episode=3, epoch=4)
    assert (event.run_id, event.source, event.env_id, event.episode, event.epoch) == ("run-1", "kasmina-test", 2, 3, 4)
    assert L.decode(L.encode(event), L.TelemetryEvent) == event
