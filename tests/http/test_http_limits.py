"""The ``http://`` backend within the gateway's body limit, and which gateway answers count as an outage.

A real gateway (uvicorn on a thread) with a small ``max_body`` in front of
the memory backend: the client splits settle batches so each request fits,
refuses an outcome too large to fit alone before sending anything, and never
reports a 4xx as the backend being unavailable.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from gateway_helpers import TOKEN, ThreadedGateway
from jobchain_http import HttpBackend

from jobchain.clock import ManualClock
from jobchain.errors import BackendError, BackendUnavailableError, InvalidJobError
from jobchain.memory import MemoryBackend
from jobchain.model import Delivery
from jobchain.testing import completed, make_job, reserve

LIMIT = 8 * 1024


@pytest.fixture(scope="module")
def gateway() -> Iterator[ThreadedGateway]:
    served = ThreadedGateway(MemoryBackend(), token=TOKEN, max_body=LIMIT)
    yield served
    served.stop()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def sent() -> list[tuple[str, int]]:
    """``(path, body bytes)`` of every request the backend sends."""
    return []


@pytest.fixture
def backend(
    gateway: ThreadedGateway, clock: ManualClock, sent: list[tuple[str, int]]
) -> Iterator[HttpBackend]:
    gateway.use(MemoryBackend(clock=clock))

    def record(request: httpx.Request) -> None:
        sent.append((request.url.path, len(request.read())))

    with httpx.Client(base_url=gateway.url, event_hooks={"request": [record]}) as client:
        backend = HttpBackend(gateway.url, client=client, token=TOKEN, delivery="poll")
        yield backend
        backend.close()


def _held(backend: HttpBackend, clock: ManualClock, count: int) -> list[Delivery]:
    backend.enqueue([make_job(clock) for _ in range(count)])
    return reserve(backend, limit=count)


def test_the_client_learns_the_gateway_body_limit(backend: HttpBackend) -> None:
    """With no max_body option the client asks the gateway for its limit."""
    assert backend.body_limit() == LIMIT


def test_settle_batches_are_split_to_fit_the_body_limit(
    backend: HttpBackend, clock: ManualClock, sent: list[tuple[str, int]]
) -> None:
    """Outcomes whose total is many times the limit are settled in requests that each fit it."""
    held = _held(backend, clock, 40)
    results = backend.settle([completed(d, "x" * 1000, clock=clock) for d in held])
    assert [r.accepted for r in results] == [True] * 40
    settles = [size for path, size in sent if path == "/v1/settle"]
    assert len(settles) >= 5
    assert max(settles) <= LIMIT
    assert all(backend.get_job(d.job.id).state.value == "succeeded" for d in held)  # type: ignore[union-attr]


def test_an_outcome_over_the_limit_alone_is_refused_before_anything_is_sent(
    backend: HttpBackend, clock: ManualClock, sent: list[tuple[str, int]]
) -> None:
    """An outcome that cannot fit a request alone refuses the batch (not an outage); the rest settle after."""
    small_a, huge, small_b = _held(backend, clock, 3)
    with pytest.raises(InvalidJobError, match=huge.job.id) as caught:
        backend.settle(
            [
                completed(small_a, "ok", clock=clock),
                completed(huge, "x" * (2 * LIMIT), clock=clock),
                completed(small_b, "ok", clock=clock),
            ]
        )
    assert not isinstance(caught.value, BackendUnavailableError)
    assert "/v1/settle" not in [path for path, _ in sent]
    others = backend.settle([completed(small_a, "ok", clock=clock), completed(small_b, "ok", clock=clock)])
    assert [r.accepted for r in others] == [True, True]
    assert backend.get_job(huge.job.id).state.value == "running"  # type: ignore[union-attr]


def test_an_outcome_that_is_not_utf8_is_refused_not_an_outage(
    backend: HttpBackend, clock: ManualClock
) -> None:
    """A result with a lone surrogate cannot be sent: InvalidJobError naming the job, not a crash."""
    [held] = _held(backend, clock, 1)
    with pytest.raises(InvalidJobError, match=held.job.id):
        backend.settle([completed(held, "\ud800", clock=clock)])


def test_a_413_from_the_gateway_is_not_an_outage(backend: HttpBackend) -> None:
    """A body over the limit sent anyway gets a 413, reported as a refusal, not as an unavailable backend."""
    with pytest.raises(InvalidJobError, match="over the limit") as caught:
        backend.request("POST", "/v1/settle", content=b'{"outcomes":["' + b"x" * LIMIT + b'"]}')
    assert not isinstance(caught.value, BackendUnavailableError)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 413, 415, 422, 429])
def test_a_4xx_answer_is_never_an_outage(status: int) -> None:
    """Every 4xx is an error that retrying cannot fix: never BackendUnavailableError."""
    backend = HttpBackend("http://gateway.test", client=httpx.Client(), token=TOKEN)
    answer = httpx.Response(status, json={"error": {"status": status, "code": "x", "message": "no"}})
    error = backend._error(answer)
    assert isinstance(error, BackendError | InvalidJobError)
    assert not isinstance(error, BackendUnavailableError)


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_a_5xx_answer_is_an_outage(status: int) -> None:
    """A 5xx says the gateway or its backend is in trouble: retried as an outage."""
    backend = HttpBackend("http://gateway.test", client=httpx.Client(), token=TOKEN)
    answer = httpx.Response(status, json={"error": {"status": status, "code": "x", "message": "down"}})
    assert isinstance(backend._error(answer), BackendUnavailableError)


def test_max_body_from_the_url() -> None:
    """``?max_body=`` sets the limit without asking the gateway."""
    backend = HttpBackend.from_url("http://127.0.0.1:9?max_body=4096")
    try:
        assert backend.body_limit() == 4096
    finally:
        backend.close()


def test_a_result_at_the_default_payload_limit_settles_through_a_default_gateway() -> None:
    """A result of exactly the core's default max_payload fits a default gateway's body with its envelope."""
    from jobchain.payload import DEFAULT_MAX_PAYLOAD

    clock = ManualClock()
    served = ThreadedGateway(MemoryBackend(clock=clock), token=TOKEN)
    try:
        backend = HttpBackend(served.url, token=TOKEN, delivery="poll")
        try:
            backend.enqueue([make_job(clock)])
            (delivery,) = reserve(backend)
            result = "x" * (DEFAULT_MAX_PAYLOAD - 2)  # its JSON, quotes included, is exactly the limit
            (answer,) = backend.settle([completed(delivery, result, clock=clock)])
            assert answer.accepted
            record = backend.get_job(delivery.job.id)
            assert record is not None
            assert record.result == result
        finally:
            backend.close()
    finally:
        served.stop()
