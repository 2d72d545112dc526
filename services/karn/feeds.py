"""Where Sanctum's data comes from: a live bus (ordered, ephemeral consumers) or a finished run in the store.

Each feed runs in its own thread and only ever applies messages to a SanctumAggregator; the UI asks for a
snapshot when it wants to draw. The bus side never waits for the terminal.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import threading
from pathlib import Path
from typing import Any

from nats.aio.client import Client
from nats.js.errors import BucketNotFoundError, NotFoundError

from leyline_schemas import (
    LeylineDecodeError,
    RunSpec,
    RunState,
    RunStatus,
    StepRecord,
    TelemetryEvent,
    decode,
    subjects,
)
from services.karn.aggregator import SanctumAggregator
from services.karn.snapshot import EnvDetail, RunInfo, SanctumSnapshot
from services.runtime.kv import bucket_keys

log = logging.getLogger("esper.karn.feed")

#: Telemetry about policy lines, which may be published under another run id (or the system pseudo run).
POLICY_KINDS = ("ppo_update_completed", "policy_updated", "policy_load_failed")


class Feed(abc.ABC):
    """A thread that fills an aggregator; `status` says what it is doing, `problem` why it cannot show a run."""

    def __init__(self) -> None:
        self.aggregator: SanctumAggregator | None = None
        self.status = "starting"
        self.problem = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._main, name=type(self).__name__, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def snapshot(self, now: float) -> SanctumSnapshot | None:
        return self.aggregator.snapshot(now) if self.aggregator is not None else None

    def env_detail(self, env_id: int) -> EnvDetail | None:
        return self.aggregator.env_detail(env_id) if self.aggregator is not None else None

    def run_info(self) -> RunInfo | None:
        return self.aggregator.run_info() if self.aggregator is not None else None

    @abc.abstractmethod
    def _main(self) -> None:
        """The thread's body: fill `self.aggregator` until `self._stop` is set or there is nothing more."""


class StoreFeed(Feed):
    """Replays one run from the run store (the latest run when none is named)."""

    def __init__(self, store_path: Path, run_id: str | None) -> None:
        super().__init__()
        self.store_path = store_path
        self.run_id = run_id

    def _main(self) -> None:
        from services.karn import queries
        from services.karn.schema import StoreSchemaError
        from services.karn.store import RunStore

        if not self.store_path.exists():
            self.problem = f"no run store at {self.store_path}"
            return
        try:
            store = RunStore.open(self.store_path)
        except StoreSchemaError as exc:
            self.problem = str(exc)
            return
        try:
            known = queries.run_ids(store)
            run_id = self.run_id or (known[-1] if known else None)
            if run_id is None:
                self.problem = f"the run store {self.store_path} holds no runs"
                return
            if run_id not in known:
                self.problem = f"{queries.UnknownRun(run_id, known)} in {self.store_path}"
                return
            aggregator = SanctumAggregator(run_id, source=f"store {self.store_path}", replay=True)
            self.status = f"replaying {run_id} from {self.store_path}"
            for item in queries.replay(store, run_id):
                if self._stop.is_set():
                    return
                if isinstance(item, StepRecord):
                    aggregator.apply_step(item)
                else:
                    aggregator.apply_event(item)
            self.aggregator = aggregator
            self.status = f"replayed {run_id}"
        finally:
            store.close()


class LiveFeed(Feed):
    """Attaches to one run on a live bus: its telemetry and steps from the start, then as they happen."""

    def __init__(self, nats_url: str, run_id: str | None, poll_seconds: float = 1.0) -> None:
        super().__init__()
        self.nats_url = nats_url
        self.run_id = run_id
        self.poll_seconds = poll_seconds
        self.received = 0

    def _main(self) -> None:
        asyncio.run(self._follow())

    async def _follow(self) -> None:
        from services.runtime.bus import BusUnavailable, connect
        from services.runtime.settings import RuntimeSettings

        settings = RuntimeSettings.from_env(
            {"service": "karn-sanctum", "nats_url": self.nats_url, "connect_timeout": 5.0}
        )
        self.status = f"connecting to {self.nats_url}"
        try:
            nc = await connect(settings)
        except BusUnavailable as exc:
            self.problem = str(exc)
            return
        try:
            spec = await self._wait_for_run(nc)
            if spec is None:
                return
            await self._subscribe(nc, spec)
            while not self._stop.is_set():
                await asyncio.sleep(0.1)
        finally:
            with contextlib.suppress(Exception):
                await nc.close()

    async def _wait_for_run(self, nc: Client) -> RunSpec | None:
        """The named run (or the newest running one) once it is on the bus; says why while it is not."""
        js = nc.jetstream()
        while not self._stop.is_set():
            specs, statuses = await _runs_on_bus(js)
            chosen = _choose(specs, statuses, self.run_id)
            if chosen is not None:
                self.problem = ""
                return chosen
            if self.run_id is None:
                self.status = f"waiting for a run on {self.nats_url}"
            else:
                # Keep watching: the run may be submitted after Sanctum attached.
                listing = ", ".join(sorted(specs, key=lambda r: specs[r].created_at)[-5:]) or "none"
                self.problem = f"unknown run {self.run_id!r}: not on bus {self.nats_url} (runs there: {listing})"
            await asyncio.sleep(self.poll_seconds)
        return None

    async def _subscribe(self, nc: Client, spec: RunSpec) -> None:
        js = nc.jetstream()
        aggregator = SanctumAggregator(spec.run_id, source=self.nats_url)
        aggregator.apply_spec(spec)
        self.aggregator = aggregator
        self.status = f"attached to {spec.run_id}"

        async def on_event(msg: Any) -> None:
            self.received += 1
            try:
                event = decode(msg.data, TelemetryEvent)
            except LeylineDecodeError:
                aggregator.count_undecodable()
                return
            aggregator.apply_event(event)

        async def on_step(msg: Any) -> None:
            self.received += 1
            try:
                record = decode(msg.data, StepRecord)
            except LeylineDecodeError:
                aggregator.count_undecodable()
                return
            aggregator.apply_step(record)

        run_token = subjects.telemetry_subject(spec.run_id, "x").rsplit(".", 1)[0]
        await js.subscribe(f"{run_token}.>", cb=on_event, ordered_consumer=True)
        await js.subscribe(subjects.steps_subject(spec.run_id), cb=on_step, ordered_consumer=True)
        for kind in POLICY_KINDS:
            # Policy lines outlive runs: their events may carry another run id; the aggregator keeps its own.
            await js.subscribe(f"{subjects.PREFIX}.telemetry.*.{kind}", cb=on_event, ordered_consumer=True)


async def _runs_on_bus(js: Any) -> tuple[dict[str, RunSpec], dict[str, RunStatus]]:
    try:
        kv = await js.key_value(subjects.RUNS_BUCKET)
        keys = await bucket_keys(kv)
    except (BucketNotFoundError, NotFoundError):
        return {}, {}
    specs: dict[str, RunSpec] = {}
    statuses: dict[str, RunStatus] = {}
    for key in keys:
        if not (key.startswith("run.") or key.startswith("status.")):
            continue
        with contextlib.suppress(Exception):
            entry = await kv.get(key)
            if not entry.value:
                continue
            if key.startswith("run."):
                spec = decode(entry.value, RunSpec)
                specs[spec.run_id] = spec
            else:
                status = decode(entry.value, RunStatus)
                statuses[status.run_id] = status
    return specs, statuses


def _choose(specs: dict[str, RunSpec], statuses: dict[str, RunStatus], run_id: str | None) -> RunSpec | None:
    if run_id is not None:
        return specs.get(run_id)
    if not specs:
        return None
    running = [s for s in specs.values() if statuses.get(s.run_id) and statuses[s.run_id].state is RunState.RUNNING]
    return max(running or list(specs.values()), key=lambda s: (s.created_at, s.run_id))
