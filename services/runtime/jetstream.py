"""Idempotent JetStream bootstrap: the streams, KV buckets and object store of ARCHITECTURE.md §4."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable

from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import (
    DiscardPolicy,
    KeyValueConfig,
    ObjectStoreConfig,
    StorageType,
    StreamConfig,
)
from nats.js.errors import APIError, BucketNotFoundError, NotFoundError, ServiceUnavailableError
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from leyline_schemas import subjects
from services.runtime.settings import RuntimeSettings

log = logging.getLogger("esper.jetstream")

DAY = 24 * 3600.0

STREAMS = (
    StreamConfig(
        name=subjects.STEPS_STREAM,
        subjects=[subjects.STEPS_SUBJECTS],
        storage=StorageType.FILE,
        duplicate_window=300.0,
        max_age=30 * DAY,
        description="StepRecords: one per env step, deduplicated by run/env/episode/step",
    ),
    StreamConfig(
        name=subjects.TELEMETRY_STREAM,
        subjects=[subjects.TELEMETRY_SUBJECTS],
        storage=StorageType.FILE,
        max_bytes=2 * 1024**3,
        max_age=14 * DAY,
        discard=DiscardPolicy.OLD,
        duplicate_window=120.0,
        description="TelemetryEvents from every service",
    ),
)


def stream_replicas() -> int:
    """How many servers hold a copy of every stream, bucket and store: ESPER_STREAM_REPLICAS (RuntimeSettings)."""
    return RuntimeSettings.from_env().stream_replicas


async def ensure_streams(js: JetStreamContext) -> None:
    replicas = stream_replicas()
    for stream in STREAMS:
        assert stream.name, "every stream in STREAMS is named"
        config = dataclasses.replace(stream, num_replicas=replicas)
        try:
            await js.stream_info(stream.name)
        except NotFoundError:
            await js.add_stream(config)
            log.info("created stream %s", config.name)
            continue
        await js.update_stream(config)


async def runs_bucket(js: JetStreamContext) -> KeyValue:
    return await _bucket(
        js,
        KeyValueConfig(bucket=subjects.RUNS_BUCKET, history=5, storage=StorageType.FILE, replicas=stream_replicas()),
    )


async def policies_bucket(js: JetStreamContext) -> KeyValue:
    return await _bucket(
        js,
        KeyValueConfig(
            bucket=subjects.POLICIES_BUCKET, history=20, storage=StorageType.FILE, replicas=stream_replicas()
        ),
    )


async def weights_store(js: JetStreamContext) -> ObjectStore:
    try:
        return await js.object_store(subjects.WEIGHTS_STORE)
    except (BucketNotFoundError, NotFoundError):
        return await js.create_object_store(
            subjects.WEIGHTS_STORE,
            config=ObjectStoreConfig(
                storage=StorageType.FILE, description="policy weights", replicas=stream_replicas()
            ),
        )


async def hosts_store(js: JetStreamContext) -> ObjectStore:
    """Tolaria's host checkpoints: at most one per env of an unfinished run (services/tolaria/checkpoint_store.py)."""
    try:
        return await js.object_store(subjects.HOSTS_STORE)
    except (BucketNotFoundError, NotFoundError):
        return await js.create_object_store(
            subjects.HOSTS_STORE,
            config=ObjectStoreConfig(
                storage=StorageType.FILE, description="host checkpoints", replicas=stream_replicas()
            ),
        )


async def _bucket(js: JetStreamContext, config: KeyValueConfig) -> KeyValue:
    try:
        return await js.key_value(config.bucket)
    except (BucketNotFoundError, NotFoundError):
        return await js.create_key_value(config)


#: JetStream's "no suitable peers for placement" and "JetStream cluster not available" error codes: a clustered
#: server answers them while a peer is down or a meta leader is being elected.
PLACEMENT_ERROR_CODES = frozenset({10005, 10008})
BOOTSTRAP_PATIENCE_S = 90.0


def is_transient(exc: BaseException) -> bool:
    """Whether a JetStream call failed because the cluster is healing (retry), not because the request is wrong."""
    if isinstance(exc, NatsTimeoutError | NoRespondersError | ServiceUnavailableError | asyncio.TimeoutError):
        return True
    return isinstance(exc, APIError) and exc.err_code in PLACEMENT_ERROR_CODES


async def retry_transient(
    call: Callable[[], Awaitable[None]],
    *,
    patience: float = BOOTSTRAP_PATIENCE_S,
    on_retry: Callable[[BaseException], None] | None = None,
) -> None:
    """Run `call` until it succeeds, retrying transient cluster errors with backoff for up to `patience` seconds;
    any other error, or a transient one past the deadline, is raised."""
    deadline = time.monotonic() + patience
    delay = 0.25
    while True:
        try:
            await call()
            return
        except Exception as exc:
            if not is_transient(exc) or time.monotonic() + delay > deadline:
                raise
            log.warning("JetStream not ready (%s: %s); retrying in %.2f s", type(exc).__name__, exc, delay)
            if on_retry is not None:
                on_retry(exc)
            await asyncio.sleep(delay)
            delay = min(2 * delay, 5.0)


async def _bootstrap_once(js: JetStreamContext) -> None:
    await ensure_streams(js)
    await runs_bucket(js)
    await policies_bucket(js)
    await weights_store(js)
    await hosts_store(js)


async def bootstrap(
    js: JetStreamContext,
    *,
    patience: float = BOOTSTRAP_PATIENCE_S,
    on_retry: Callable[[BaseException], None] | None = None,
) -> None:
    """Create (or bring up to date) every stream, bucket and store; safe to call from every service.

    A service started while a clustered bus is healing (a peer restarting, a meta leader election) waits for it
    instead of dying: transient errors are retried for up to `patience` seconds.
    """
    await retry_transient(lambda: _bootstrap_once(js), patience=patience, on_retry=on_retry)
