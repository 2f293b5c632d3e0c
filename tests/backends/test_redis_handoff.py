"""The Redis backends hand a chain's next step to the worker that finished the step before it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from jobchain import App
from jobchain.canvas import chain
from jobchain.clock import ManualClock
from jobchain.testing import completed, queue_stats, reserve, reserve_one

redis = pytest.importorskip("redis", reason="jobchain-redis is not installed (pip install -e backends/redis)")
fakeredis = pytest.importorskip("fakeredis", reason="fakeredis is not installed")

from jobchain_redis.common import RedisBackend  # noqa: E402
from jobchain_redis.lists import ListsBackend  # noqa: E402
from jobchain_redis.streams import StreamsBackend  # noqa: E402


@pytest.fixture(params=[ListsBackend, StreamsBackend], ids=["lists", "streams"])
def backend(request: pytest.FixtureRequest, clock: ManualClock) -> Iterator[RedisBackend]:
    made: RedisBackend = request.param(
        fakeredis.FakeRedis(decode_responses=True), prefix=f"h{uuid.uuid4().hex[:8]}", clock=clock
    )
    yield made
    made.delete_everything()


def _steps(app: App) -> tuple[object, object, object]:
    @app.task
    def one(x: int) -> int:
        return x + 1

    @app.task
    def two(x: int) -> int:
        return x + 1

    @app.task
    def three(x: int) -> int:
        return x + 1

    return one, two, three


def test_an_idle_queue_hands_every_next_step_to_the_settling_worker(
    backend: RedisBackend, clock: ManualClock
) -> None:
    """With nothing else ready, each step's completion leases the next step to the same worker."""
    app = App(backend=backend)
    handle = chain(*_steps(app)).submit(0)  # type: ignore[arg-type]
    delivery = reserve_one(backend, worker="w-1")
    for value in (1, 2):
        results, taken = backend.settle_and_take(
            [completed(delivery, value, clock=clock)], worker="w-1", queues=["default"], lease=30, limit=8
        )
        assert results[0].accepted
        [delivery] = taken
        assert delivery.job.args == (value,)
        assert reserve(backend, worker="w-2") == []
        stats = queue_stats(backend)
        assert (stats.ready, stats.in_flight) == (0, 1)
    [result] = backend.settle([completed(delivery, 3, clock=clock)])
    assert result.chain is not None
    assert result.chain.id == handle.id


def test_a_handed_off_step_of_a_dead_worker_is_delivered_again(
    backend: RedisBackend, clock: ManualClock
) -> None:
    """The hand-off is a lease like any other: when it runs out, any reserver gets the step."""
    app = App(backend=backend)
    chain(*_steps(app)).submit(0)  # type: ignore[arg-type]
    first = reserve_one(backend, worker="w-1")
    _, [held] = backend.settle_and_take(
        [completed(first, 1, clock=clock)], worker="w-1", queues=["default"], lease=5, limit=8
    )
    clock.advance(6.0)
    assert queue_stats(backend).ready == 1
    [again] = reserve(backend, worker="w-2")
    assert again.job.id == held.job.id
    assert again.delivery_count == 2
    assert not backend.settle([completed(held, 2, clock=clock)])[0].accepted
    assert backend.settle([completed(again, 2, clock=clock)])[0].accepted
