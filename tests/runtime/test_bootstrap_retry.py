"""A service started while a clustered bus heals waits for it: transient JetStream errors during bootstrap are
retried with backoff, a wrong request is not (the cluster test once lost every service to "no suitable peers")."""

from __future__ import annotations

import asyncio

import pytest
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.errors import BadRequestError, NotFoundError, ServiceUnavailableError

from services.runtime.jetstream import is_transient, retry_transient

NO_PEERS = BadRequestError(code=400, err_code=10005, description="no suitable peers for placement, peer offline")


def test_placement_and_timeouts_are_transient_a_bad_request_is_not() -> None:
    assert is_transient(NO_PEERS) and is_transient(NatsTimeoutError()) and is_transient(ServiceUnavailableError())
    assert not is_transient(BadRequestError(code=400, err_code=10058, description="stream name already in use"))
    assert not is_transient(NotFoundError(code=404, err_code=10059)) and not is_transient(ValueError("x"))


def _flaky(failures: list[BaseException]):  # type: ignore[no-untyped-def]
    calls: list[int] = []

    async def call() -> None:
        calls.append(1)
        if len(calls) <= len(failures):
            raise failures[len(calls) - 1]

    return call, calls


def test_transient_failures_are_retried_and_counted() -> None:
    call, calls = _flaky([NO_PEERS, NatsTimeoutError()])
    retried: list[BaseException] = []
    asyncio.run(retry_transient(call, patience=10.0, on_retry=retried.append))
    assert len(calls) == 3 and [type(e) for e in retried] == [BadRequestError, NatsTimeoutError]


def test_a_wrong_request_fails_at_once() -> None:
    wrong = BadRequestError(code=400, err_code=10058, description="stream name already in use")
    call, calls = _flaky([wrong])
    with pytest.raises(BadRequestError):
        asyncio.run(retry_transient(call, patience=10.0))
    assert len(calls) == 1


def test_a_cluster_that_never_heals_fails_after_the_patience() -> None:
    call, calls = _flaky([NO_PEERS] * 100)
    with pytest.raises(BadRequestError):
        asyncio.run(retry_transient(call, patience=1.0))
    assert 2 <= len(calls) <= 4  # 0.25 s, 0.5 s, then the next wait would pass the deadline
