"""Tamiyo's bus adapter: `esper.v1.tamiyo.decide` → the policy named in the request; KV ESPER_POLICIES → the book.

Learned lines follow their KV pointers: a new version is downloaded, digest-checked, decoded off the event loop
and swapped into the PolicyBook between requests; any failure keeps the old version and emits PolicyLoadFailed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass, field

from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from leyline_schemas import (
    ActivePolicy,
    Decision,
    DecisionRequest,
    ErrorCode,
    LeylineDecodeError,
    PolicyListRequest,
    PolicyLoadFailed,
    ServedPolicies,
    ServedPolicyInfo,
    Severity,
    decode,
    routes,
    subjects,
)
from services.policy.pointers import fetch_object
from services.runtime import jetstream
from services.runtime.kv import next_update
from services.runtime.service import SYSTEM_RUN, Endpoint, RequestRejected, ServiceContext, ServiceDefinition
from services.runtime.settings import RuntimeSettings
from services.runtime.torch_threads import set_torch_threads
from services.tamiyo.batching import MAX_WINDOW_S, DecisionBatcher
from services.tamiyo.learned import PolicyInputError
from services.tamiyo.loader import PolicyLoadError, needs_blob, served_policy
from services.tamiyo.policies import PolicyBook, ServedPolicy, UnknownPolicy, resolve_view
from services.tamiyo.requests import InvalidDecisionRequest, validate_decision_request

log = logging.getLogger("esper.tamiyo")

POLICY_KEY_PREFIX = "policy."
# Every instance answers a policy listing (scatter-gather), so its endpoint gets a queue group of its own.
_LISTING_GROUP = f"tamiyo-policies-{uuid.uuid4().hex[:12]}"


@dataclass(frozen=True, kw_only=True)
class TamiyoSettings(RuntimeSettings):
    """Tamiyo's settings: batch-1 inference is fastest on one thread, and spare cores serve the envs."""

    service: str = "tamiyo"
    torch_threads: int = 1
    #: Tests and benchmarks only: seconds every learned version's load is held back (a slow weights store), to
    #: show that a step still never acts with an older version than it requires (ESPER_WEIGHT_LOAD_DELAY).
    weight_load_delay: float = 0.0
    #: Dynamic batching (services/tamiyo/batching.py): how long the first request of a batch waits for others
    #: (0: only those read in the same event-loop pass; at most 1 ms), and the largest batch (1 turns it off).
    decision_batch_window_ms: float = 0.0
    decision_max_batch: int = 64

    def __post_init__(self) -> None:
        super().__post_init__()
        window = self.decision_batch_window_ms
        if not 0.0 <= window <= 1000 * MAX_WINDOW_S:
            raise ValueError(f"ESPER_DECISION_BATCH_WINDOW_MS must be 0 to {1000 * MAX_WINDOW_S:g}, got {window}")
        if self.decision_max_batch < 1:
            raise ValueError(f"ESPER_DECISION_MAX_BATCH must be at least 1, got {self.decision_max_batch}")


@dataclass
class PolicyLines:
    """Keeps the book in step with ESPER_POLICIES; the KV revision orders updates, so a stale load never wins."""

    ctx: ServiceContext[TamiyoSettings, None]
    book: PolicyBook
    kv: KeyValue
    store: ObjectStore
    revisions: dict[str, int] = field(default_factory=dict)
    locks: dict[str, asyncio.Lock] = field(default_factory=dict)

    async def apply(self, policy_id: str, value: bytes | None, revision: int) -> None:
        """Serve what one KV entry names (a delete drops the line); failures are reported, never raised."""
        lock = self.locks.setdefault(policy_id, asyncio.Lock())
        async with lock:
            if revision <= self.revisions.get(policy_id, 0):
                return
            if not value:
                self.book.remove(policy_id)
                self.revisions[policy_id] = revision
                log.info("policy %s removed", policy_id)
                return
            try:
                active = decode(value, ActivePolicy)
            except LeylineDecodeError as exc:
                await self._failed(policy_id, -1, f"pointer is not an ActivePolicy: {exc}")
                self.revisions[policy_id] = revision
                return
            current = self.book.find(policy_id)
            if current is not None and current.matches(active):
                self.revisions[policy_id] = revision
                return
            try:
                delay = self.ctx.settings.weight_load_delay
                if needs_blob(active) and delay > 0:
                    log.info("holding back the load of %s v%d for %.1fs", policy_id, active.version, delay)
                    await asyncio.sleep(delay)
                blob = await fetch_object(self.store, active.object_name) if needs_blob(active) else None
                served = await asyncio.to_thread(served_policy, active, blob)
            except PolicyLoadError as exc:
                await self._failed(policy_id, active.version, exc.reason)
                self.revisions[policy_id] = revision
                return
            except Exception as exc:  # a store outage: keep serving the old version, retry on the next update
                await self._failed(policy_id, active.version, f"{type(exc).__name__}: {exc}")
                return
            self.book.add(served)
            self.revisions[policy_id] = revision
            self.ctx.metrics.count_event("policy_loaded")
            log.info("serving %s v%d (%s) sha256 %s", policy_id, served.version, served.kind.value, served.sha256[:12])

    async def _failed(self, policy_id: str, version: int, reason: str) -> None:
        self.ctx.metrics.count_event("policy_load_failed")
        log.warning("kept the old version of %s: v%d did not load: %s", policy_id, version, reason)
        await self.ctx.telemetry.emit(
            SYSTEM_RUN, PolicyLoadFailed(policy_id=policy_id, version=version, reason=reason), severity=Severity.ERROR
        )

    async def load_current(self, policy_id: str) -> None:
        """Read one pointer now (a request for an id whose KV update has not reached the watcher yet)."""
        try:
            entry = await self.kv.get(subjects.policy_key(policy_id))
        except (KeyNotFoundError, ValueError):
            return
        await self.apply(policy_id, entry.value, entry.revision or 0)

    async def sync_all(self) -> None:
        with contextlib.suppress(Exception):
            for key in await self.kv.keys():
                if key.startswith(POLICY_KEY_PREFIX):
                    await self.load_current(key.removeprefix(POLICY_KEY_PREFIX))

    async def watch(self) -> None:
        """Follow every pointer until the service stops; a broken watch is re-opened after a full re-sync."""
        while not self.ctx.stopping.is_set():
            try:
                watcher = await self.kv.watch(f"{POLICY_KEY_PREFIX}*")
                while not self.ctx.stopping.is_set():
                    try:
                        entry = await next_update(watcher, timeout=1.0)
                    except TimeoutError:
                        continue
                    if entry is None:
                        continue
                    deleted = entry.operation in ("DEL", "PURGE")
                    value = None if deleted else entry.value
                    await self.apply(entry.key.removeprefix(POLICY_KEY_PREFIX), value, entry.revision or 0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("policy watch failed (%s); re-syncing", exc)
                await asyncio.sleep(1.0)
                await self.sync_all()


@dataclass(frozen=True)
class TamiyoState:
    """What Tamiyo serves from: the book of loaded policies, kept in step with KV by its lines."""

    lines: PolicyLines
    batcher: DecisionBatcher

    @property
    def book(self) -> PolicyBook:
        return self.lines.book


TamiyoContext = ServiceContext[TamiyoSettings, TamiyoState]


async def handle_decide(request: DecisionRequest, ctx: TamiyoContext) -> Decision:
    request = resolve_view(request)
    policy = await _served_for(request, ctx)
    try:
        validate_decision_request(request)
    except InvalidDecisionRequest as exc:
        raise RequestRejected(ErrorCode.INVALID_REQUEST, str(exc), exc.field) from exc
    try:
        decision = await ctx.state.batcher.decide(policy, request)
    except PolicyInputError as exc:
        raise RequestRejected(ErrorCode.INVALID_REQUEST, f"{policy.policy_id}: {exc}", exc.field) from exc
    except ValueError as exc:
        raise RequestRejected(ErrorCode.INVALID_REQUEST, f"{policy.policy_id}: {exc}", "") from exc
    ctx.metrics.count_event(f"decision_{policy.kind.value}")
    return decision


async def _served_for(request: DecisionRequest, ctx: TamiyoContext) -> ServedPolicy:
    """The line the request names, at `min_policy_version` or newer.

    A line not served here yet, or older than that, has its pointer read and loaded now (or the load the watcher
    has in flight awaited, under the line's lock). Still unknown is UNKNOWN_POLICY; still older is UNAVAILABLE,
    which Kasmina retries within its decision deadline: a step is never decided by an older version.
    """
    policies = ctx.state.book
    policy = policies.find(request.policy_id)
    if policy is None or policy.version < request.min_policy_version:
        await ctx.state.lines.load_current(request.policy_id)
        policy = policies.find(request.policy_id)
    if policy is None:
        unknown = UnknownPolicy(request.policy_id, policies.ids())
        raise RequestRejected(ErrorCode.UNKNOWN_POLICY, str(unknown), "policy_id")
    if policy.version < request.min_policy_version:
        ctx.metrics.count_event("policy_version_not_loaded")
        raise RequestRejected(
            ErrorCode.UNAVAILABLE,
            f"{request.policy_id} v{request.min_policy_version} is not loaded yet (serving v{policy.version})",
            "min_policy_version",
        )
    return policy


async def handle_policies(request: PolicyListRequest, ctx: TamiyoContext) -> ServedPolicies:
    served = [p for p in ctx.state.book.served() if not request.policy_id or p.policy_id == request.policy_id]
    return ServedPolicies(
        instance=ctx.settings.instance,
        policies=[
            ServedPolicyInfo(
                policy_id=p.policy_id, kind=p.kind, version=p.version, sha256=p.sha256, loaded_at=p.loaded_at
            )
            for p in served
        ],
    )


async def start(ctx: ServiceContext[TamiyoSettings, None]) -> TamiyoState:
    """Load every pointer before the endpoints exist, so a fresh instance never answers with a missing line."""
    set_torch_threads(ctx.settings.torch_threads)
    lines = PolicyLines(
        ctx, PolicyBook(), await jetstream.policies_bucket(ctx.js), await jetstream.weights_store(ctx.js)
    )
    await lines.sync_all()
    log.info("tamiyo serves %s", ", ".join(f"{p.policy_id}@v{p.version}" for p in lines.book.served()))
    settings = ctx.settings

    def counted(size: int) -> None:
        ctx.metrics.count_event("decision_batch")
        ctx.metrics.count_event("decision_batched", size)

    batcher = DecisionBatcher(settings.decision_batch_window_ms / 1000, settings.decision_max_batch, counted)
    return TamiyoState(lines, batcher)


async def watch_policies(ctx: TamiyoContext) -> None:
    await ctx.state.lines.watch()


def definition() -> ServiceDefinition[TamiyoSettings, TamiyoState]:
    return ServiceDefinition(
        name="tamiyo",
        description="Policy inference: heuristic, random, wait and learned policies",
        endpoints=[
            Endpoint("decide", routes.TAMIYO_DECIDE, handle_decide, max_concurrency=64),
            Endpoint("policies", routes.TAMIYO_POLICIES, handle_policies, queue_group=_LISTING_GROUP),
        ],
        background=[watch_policies],
        on_start=start,
        uses_torch=True,
    )
