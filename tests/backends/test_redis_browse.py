"""The Redis backends' browse index of succeeded jobs: written when settled, trimmed to result_ttl."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterator

import pytest

from jobchain.clock import ManualClock
from jobchain.model import JobState
from jobchain.testing import MakeJob, completed, make_job, released, reserve_one

fakeredis = pytest.importorskip("fakeredis", reason="fakeredis is not installed")

from jobchain_redis.common import RedisBackend  # noqa: E402
from jobchain_redis.keys import Keys  # noqa: E402
from jobchain_redis.lists import ListsBackend  # noqa: E402
from jobchain_redis.streams import StreamsBackend  # noqa: E402


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def jobs(clock: ManualClock) -> MakeJob:
    return functools.partial(make_job, clock)


@pytest.fixture(
    params=[(ListsBackend, False), (StreamsBackend, False), (ListsBackend, True), (StreamsBackend, True)],
    ids=["lists", "streams", "lists-spread", "streams-spread"],
)
def backend(request: pytest.FixtureRequest, clock: ManualClock) -> Iterator[RedisBackend]:
    kind, spread = request.param
    client = fakeredis.FakeRedis(decode_responses=True)
    backend: RedisBackend = kind(
        client, prefix=f"t{uuid.uuid4().hex[:12]}", clock=clock, result_ttl=10.0, spread=spread
    )
    yield backend
    client.close()


def test_the_settle_transaction_indexes_a_success_and_trims_to_the_ttl(
    backend: RedisBackend, jobs: MakeJob, clock: ManualClock
) -> None:
    """A success is indexed by finish time; one older than result_ttl leaves the index at the next."""
    first, second = jobs(args=[1]), jobs(args=[2])
    backend.enqueue([first, second])
    backend.settle([completed(reserve_one(backend), clock=clock)])
    index = backend.keys.finished("default", JobState.SUCCEEDED.value)
    assert backend.client.zrange(index, 0, -1) == [first.id]
    clock.advance(20.0)
    backend.settle([completed(reserve_one(backend), clock=clock)])
    assert backend.client.zrange(index, 0, -1) == [second.id]
    listed = backend.browse(queue="default", state=JobState.SUCCEEDED).records
    assert [r.job.id for r in listed] == [second.id]
    assert backend.counts("default")[JobState.SUCCEEDED] == 1


def test_an_index_entry_past_the_ttl_is_not_listed_before_the_next_trim(
    backend: RedisBackend, jobs: MakeJob, clock: ManualClock
) -> None:
    """Between trims, listing and counting ignore entries older than result_ttl."""
    backend.enqueue([jobs()])
    backend.settle([completed(reserve_one(backend), clock=clock)])
    clock.advance(11.0)
    assert backend.browse(queue="default", state=JobState.SUCCEEDED).records == ()
    assert backend.counts("default")[JobState.SUCCEEDED] == 0


def test_a_released_job_is_listed_as_ready(backend: RedisBackend, jobs: MakeJob) -> None:
    """A job given back unrun (on redis-streams it waits in the lease set) is listed as queued."""
    job = jobs()
    backend.enqueue([job])
    backend.settle([released(reserve_one(backend))])
    assert [r.job.id for r in backend.browse(queue="default", state=JobState.QUEUED).records] == [job.id]
    assert backend.counts("default")[JobState.QUEUED] == 1


def test_the_index_has_its_queue_tag() -> None:
    """On a Cluster the index is in its queue's slot, so the settle transaction can write it."""
    keys = Keys("app", spread=True)
    assert keys.finished("q", "succeeded").startswith(keys.queue_tag("q"))
    assert Keys("app").finished("q", "cancelled") == "{app}:finished:q:cancelled"
