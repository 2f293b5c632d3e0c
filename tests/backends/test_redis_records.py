"""How long the Redis backends keep records: results expire, failures stay until purged."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest

from jobchain import App
from jobchain.canvas import chain
from jobchain.clock import ManualClock
from jobchain.model import MAX_KEPT_ERRORS, ChainRecord, Job, JobState
from jobchain.testing import completed, failed, make_job, reserve_one, retried

redis = pytest.importorskip("redis", reason="jobchain-redis is not installed (pip install -e backends/redis)")
fakeredis = pytest.importorskip("fakeredis", reason="fakeredis is not installed")

from jobchain_redis.common import DEFAULT_RESULT_TTL, RedisBackend  # noqa: E402
from jobchain_redis.lists import ListsBackend  # noqa: E402
from jobchain_redis.streams import StreamsBackend  # noqa: E402


@pytest.fixture(params=[ListsBackend, StreamsBackend], ids=["lists", "streams"])
def kind(request: pytest.FixtureRequest) -> type[RedisBackend]:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def backend(kind: type[RedisBackend], clock: ManualClock) -> Iterator[RedisBackend]:
    client = fakeredis.FakeRedis(decode_responses=True)
    made = kind(client, prefix=f"r{uuid.uuid4().hex[:8]}", clock=clock)
    yield made
    made.delete_everything()


def _ttl(backend: RedisBackend, key: str) -> float:
    return int(backend.client.pttl(key)) / 1000


def test_a_succeeded_jobs_record_expires_after_result_ttl(backend: RedisBackend, clock: ManualClock) -> None:
    """The result is kept for result_ttl (a day by default), then Redis lets it go: memory stays bounded."""
    job = make_job(clock)
    backend.enqueue([job])
    backend.settle([completed(reserve_one(backend), 7, clock=clock)])
    assert DEFAULT_RESULT_TTL - 5 < _ttl(backend, backend.keys.job(job.id)) <= DEFAULT_RESULT_TTL
    assert backend.get_job(job.id).result == 7  # type: ignore[union-attr]


def test_a_failed_jobs_record_stays_until_purged(backend: RedisBackend, clock: ManualClock) -> None:
    """The failed queue needs the record: no TTL; purging deletes it."""
    job = make_job(clock)
    backend.enqueue([job])
    backend.settle([failed(reserve_one(backend), clock=clock)])
    key = backend.keys.job(job.id)
    assert backend.client.pttl(key) == -1
    assert backend.purge_failed([job.id]) == 1
    assert not backend.client.exists(key)
    assert backend.get_job(job.id) is None


def test_purge_leaves_jobs_outside_the_failed_queue_alone(backend: RedisBackend, clock: ManualClock) -> None:
    """Purging an id that is not (or no longer) in the failed queue deletes nothing."""
    job = make_job(clock)
    backend.enqueue([job])
    backend.settle([failed(reserve_one(backend), clock=clock)])
    assert backend.redrive([job.id]) == [job.id]
    assert backend.purge_failed([job.id]) == 0
    assert reserve_one(backend).job.id == job.id


def test_a_completed_chains_record_expires_and_a_halted_one_stays(
    backend: RedisBackend, clock: ManualClock
) -> None:
    """A finished chain's record goes with its results; a halted one is kept for re-driving."""
    app = App(backend=backend)

    @app.task
    def step(x: int) -> int:
        return x

    good = chain(step, step).submit(1)
    for _ in range(2):
        backend.settle([completed(reserve_one(backend), 1, clock=clock)])
    assert 0 < _ttl(backend, backend.keys.chain(good.id)) <= DEFAULT_RESULT_TTL
    bad = chain(step, step).submit(2)
    backend.settle([failed(reserve_one(backend), clock=clock)])
    assert backend.client.pttl(backend.keys.chain(bad.id)) == -1


def test_result_ttl_none_keeps_records(kind: type[RedisBackend], clock: ManualClock) -> None:
    client = fakeredis.FakeRedis(decode_responses=True)
    backend = kind(client, prefix=f"r{uuid.uuid4().hex[:8]}", clock=clock, result_ttl=None)
    job = make_job(clock)
    backend.enqueue([job])
    backend.settle([completed(reserve_one(backend), clock=clock)])
    assert backend.client.pttl(backend.keys.job(job.id)) == -1


def test_result_ttl_must_be_positive(kind: type[RedisBackend]) -> None:
    with pytest.raises(ValueError, match="result_ttl"):
        kind(fakeredis.FakeRedis(decode_responses=True), result_ttl=0)


#: a chain record and a job as the Redis backends stored them before the core owned the wire format
OLD_CHAIN = (
    '{"v":1,"id":"old-chain","name":"pair","kind":"chain","state":"running","steps":[{"kind":"task",'
    '"members":[{"job_id":"old-1","task":"step","args":[1],"kwargs":{},"queue":"default","priority":0,'
    '"immutable":false,"expires":null,"state":"completed","result":2,"error":null,"started_at":10.0,'
    '"finished_at":11.0}]},{"kind":"group","members":[{"job_id":"old-2","task":"step","args":[],'
    '"kwargs":{"k":"v"},"queue":"default","priority":0,"immutable":false,"expires":null,"sig":"s",'
    '"state":"pending","result":null,"error":null,"started_at":null,"finished_at":null}]}],'
    '"created_at":9.0,"finished_at":null}'
)
OLD_JOB = (
    '{"v":1,"id":"old-2","task":"step","args":[2],"kwargs":{"k":"v"},"queue":"default","priority":0,'
    '"attempt":1,"enqueued_at":9.0,"chain":["old-chain",1,0]}'
)


def test_records_stored_before_stay_readable_and_are_written_the_same(backend: RedisBackend) -> None:
    """A chain record and a job in the format of earlier versions read, and write back byte for byte.

    Only the old state word changes: a step stored "completed" is written back "succeeded".
    """
    record = ChainRecord.from_wire(json.loads(OLD_CHAIN))
    job = Job.from_wire(json.loads(OLD_JOB))
    backend.enqueue([job], [record])
    renamed = OLD_CHAIN.replace('"state":"completed"', '"state":"succeeded"')
    assert backend.client.get(backend.keys.chain("old-chain")) == renamed
    assert backend.client.hget(backend.keys.job("old-2"), "job") == OLD_JOB
    backend.client.set(backend.keys.chain("other-chain"), OLD_CHAIN.replace("old-chain", "other-chain"))
    assert backend.get_chain("other-chain") == ChainRecord.from_wire(
        json.loads(OLD_CHAIN.replace("old-chain", "other-chain"))
    )
    got = backend.get_job("old-2")
    assert got is not None
    assert got.job == job


def test_error_history_is_one_field_per_attempt_and_stays_bounded(
    backend: RedisBackend, clock: ManualClock
) -> None:
    """Each failed attempt writes ``error:<n>``; beyond MAX_KEPT_ERRORS the oldest field is deleted."""
    job = make_job(clock)
    backend.enqueue([job])
    runs = MAX_KEPT_ERRORS + 5
    for run in range(1, runs):
        backend.settle([retried(reserve_one(backend), 0.0, f"run {run}", clock=clock)])
    backend.settle([failed(reserve_one(backend), f"run {runs}", clock=clock)])
    fields = [f for f in backend.client.hkeys(backend.keys.job(job.id)) if f.startswith("error:")]
    assert sorted(fields) == sorted(f"error:{n}" for n in range(runs - MAX_KEPT_ERRORS + 1, runs + 1))
    record = backend.get_job(job.id)
    assert record is not None
    assert [e.message for e in record.errors] == [f"run {n}" for n in range(6, runs + 1)]


def test_redrive_folds_the_history_into_one_field(backend: RedisBackend, clock: ManualClock) -> None:
    """A re-driven job's history moves to the ``errors`` list; the next attempts append after it."""
    job = make_job(clock)
    backend.enqueue([job])
    backend.settle([retried(reserve_one(backend), 0.0, "one", clock=clock)])
    backend.settle([failed(reserve_one(backend), "two", clock=clock)])
    backend.redrive([job.id])
    key = backend.keys.job(job.id)
    assert [e["message"] for e in json.loads(backend.client.hget(key, "errors") or "null")] == ["one", "two"]
    assert not [f for f in backend.client.hkeys(key) if f.startswith("error:")]
    backend.settle([failed(reserve_one(backend), "three", clock=clock)])
    record = backend.get_job(job.id)
    assert record is not None
    assert [(e.message, e.attempt) for e in record.errors] == [("one", 1), ("two", 2), ("three", 1)]


def test_a_hash_stored_before_histories_reads_with_its_error_alone(
    backend: RedisBackend, clock: ManualClock
) -> None:
    """A failed job's hash from an earlier version (``error`` only) shows that error as its history."""
    job = make_job(clock)
    backend.enqueue([job])
    backend.settle([failed(reserve_one(backend), "old", clock=clock)])
    key = backend.keys.job(job.id)
    backend.client.hdel(key, "error:1")
    record = backend.get_job(job.id)
    assert record is not None
    assert record.error is not None
    assert record.errors == (record.error,)
    backend.redrive([job.id])
    backend.settle([failed(reserve_one(backend), "new", clock=clock)])
    again = backend.get_job(job.id)
    assert again is not None
    assert [e.message for e in again.errors] == ["old", "new"]


def test_an_unreadable_history_field_leaves_the_record_readable(
    backend: RedisBackend, clock: ManualClock
) -> None:
    """Garbage in an ``error:<n>`` field shows the job with its last error, not as an unreadable job."""
    job = make_job(clock)
    backend.enqueue([job])
    backend.settle([failed(reserve_one(backend), "real", clock=clock)])
    backend.client.hset(backend.keys.job(job.id), "error:7", "{not json")
    record = backend.get_job(job.id)
    assert record is not None
    assert (record.job, record.state) == (job, JobState.FAILED)
    assert [e.message for e in record.errors] == ["real"]
