"""Dynamic batching: decision requests for one served policy version that arrive together share one forward.

Requests are gathered for `window_s` after the first of a batch arrives (0: those already read from the bus in
the same event-loop pass), or until `max_batch` are waiting, and then decided by the version's `decide_many`. A
batch of one takes the policy's own `decide`, so a lone request is decided exactly as without batching. Each
request keeps its own generator and recurrent state; a request the policy refuses fails alone. Policies without a
batched path (the built-in rules) are decided one by one at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from leyline_schemas import Decision, DecisionRequest
from services.tamiyo.policies import ServedPolicy

#: The longest gathering window Tamiyo accepts: a decision is on every epoch's critical path.
MAX_WINDOW_S = 0.001


@dataclass
class _Batch:
    policy: ServedPolicy
    requests: list[DecisionRequest] = field(default_factory=list)
    futures: list[asyncio.Future[Decision]] = field(default_factory=list)


@dataclass
class BatchStats:
    """What the batcher has done: batches run and requests decided in them (a batch of one counts too)."""

    batches: int = 0
    decided: int = 0
    largest: int = 0


class DecisionBatcher:
    def __init__(
        self, window_s: float = 0.0, max_batch: int = 64, on_batch: Callable[[int], None] | None = None
    ) -> None:
        if not 0.0 <= window_s <= MAX_WINDOW_S:
            raise ValueError(f"the batching window is 0 to {MAX_WINDOW_S * 1000:.0f} ms, got {window_s * 1000} ms")
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.window_s = window_s
        self.max_batch = max_batch
        self.stats = BatchStats()
        self.on_batch = on_batch
        self._open: dict[int, _Batch] = {}

    async def decide(self, policy: ServedPolicy, request: DecisionRequest) -> Decision:
        """The policy's decision for `request`, possibly computed in a batch with others waiting beside it."""
        if policy.decide_many is None or self.max_batch == 1:
            return policy.decide(request)
        loop = asyncio.get_running_loop()
        batch = self._open.get(id(policy))
        if batch is None or batch.policy is not policy:
            batch = self._open[id(policy)] = _Batch(policy)
            if self.window_s > 0:
                loop.call_later(self.window_s, self._run, batch)
            else:
                loop.call_soon(self._run, batch)
        future: asyncio.Future[Decision] = loop.create_future()
        batch.requests.append(request)
        batch.futures.append(future)
        if len(batch.requests) >= self.max_batch:
            self._run(batch)
        return await future

    def _run(self, batch: _Batch) -> None:
        if self._open.get(id(batch.policy)) is batch:
            del self._open[id(batch.policy)]
        if not batch.requests:
            return
        requests, futures = batch.requests, batch.futures
        batch.requests, batch.futures = [], []  # a timer still due for this batch finds it empty
        self.stats.batches += 1
        self.stats.decided += len(requests)
        self.stats.largest = max(self.stats.largest, len(requests))
        if self.on_batch is not None:
            self.on_batch(len(requests))
        try:
            if len(requests) == 1:
                outcomes: list[Decision | BaseException] = [batch.policy.decide(requests[0])]
            else:
                assert batch.policy.decide_many is not None
                outcomes = list(batch.policy.decide_many(requests))
        except Exception as exc:  # the whole batch failed: every request gets the error, as alone it would
            outcomes = [exc] * len(requests)
        for future, outcome in zip(futures, outcomes, strict=True):
            if future.done():  # its caller was cancelled
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
