"""An EXEC that Redis applied but whose reply was lost is never applied a second time.

redis-py re-sends a pipeline once when its connection fails; for a MULTI/EXEC
that went through, that would store a submit twice (a job pushed twice to
its ready list, two stream entries) or lease a batch twice. Every
transaction is marked so that redis-py raises instead, and the body runs
again on what Redis holds: a WATCHed body re-reads, and a fresh submit
checks which of its ids exist. Here the loss is injected on a real server,
after the EXEC's reply was read.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from jobchain import App
from jobchain.canvas import chain
from jobchain.clock import ManualClock
from jobchain.testing import completed, queue_stats, reserve

redis = pytest.importorskip("redis", reason="jobchain-redis is not installed (pip install -e backends/redis)")

from jobchain_redis._wire import LeanPipeline as Pipeline  # noqa: E402
from jobchain_redis.common import RedisBackend  # noqa: E402
from jobchain_redis.lists import ListsBackend  # noqa: E402
from jobchain_redis.streams import StreamsBackend  # noqa: E402


@pytest.fixture(params=[ListsBackend, StreamsBackend], ids=["lists", "streams"])
def backend(
    request: pytest.FixtureRequest, clock: ManualClock, redis_server_url: str
) -> Iterator[RedisBackend]:
    client = redis.Redis.from_url(
        redis_server_url, decode_responses=True, retry=redis.retry.Retry(redis.backoff.NoBackoff(), 1)
    )
    made: RedisBackend = request.param(client, prefix=f"l{uuid.uuid4().hex[:8]}", clock=clock)
    yield made
    made.delete_everything()
    client.close()


def _lose_next_replies(
    monkeypatch: pytest.MonkeyPatch, count: int = 1, *, holding: str | None = None
) -> list[list[Any]]:
    """The next ``count`` MULTI/EXECs (holding the command ``holding``, when given) are applied, then
    their connection fails before the caller sees it."""
    real = Pipeline._execute_transaction
    applied: list[list[Any]] = []

    def applied_then_lost(self: Pipeline, connection: Any, commands: Any, raise_on_error: bool) -> Any:
        watching = self.watching
        result = real(self, connection, commands, raise_on_error)
        if len(applied) < count and (holding is None or any(c[0][0] == holding for c in commands)):
            applied.append(result)
            # as if the connection died while the EXEC's reply was on its way: the pipeline is still in
            # the state it had before reading it (redis-py clears `watching` once the reply is read)
            self.watching = watching
            connection.disconnect()
            raise redis.ConnectionError("connection reset after EXEC (injected)")
        return result

    monkeypatch.setattr(Pipeline, "_execute_transaction", applied_then_lost)
    return applied


def test_a_submit_whose_reply_was_lost_is_stored_once(
    backend: RedisBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The submit returns (its second run found the job stored); one job is ready, delivered once."""
    app = App(backend=backend, buffer=None)
    task = app.task(name="t")(lambda: None)
    with monkeypatch.context() as patch:
        applied = _lose_next_replies(patch)
        handle = task.submit()
    assert len(applied) == 1  # the first EXEC went through
    assert queue_stats(backend).ready == 1
    [delivery] = reserve(backend)
    assert delivery.job.id == handle.id
    assert reserve(backend) == []


def test_a_chain_step_whose_settle_reply_was_lost_is_enqueued_once(
    backend: RedisBackend, monkeypatch: pytest.MonkeyPatch, clock: ManualClock
) -> None:
    """A settle applied but unanswered is run again: its token is gone, so it is refused, nothing doubled."""
    app = App(backend=backend, buffer=None)
    one = app.task(name="one")(lambda: 1)
    two = app.task(name="two")(lambda x: x)
    chain(one, two).submit()
    [first] = reserve(backend)
    with monkeypatch.context() as patch:
        applied = _lose_next_replies(patch)
        [result] = backend.settle([completed(first, 1, clock=clock)])
    assert len(applied) == 1
    assert (
        not result.accepted
    )  # the second run sees the delivery settled: reported as stale, not applied twice
    [following] = reserve(backend)
    assert following.job.task == "two"
    assert reserve(backend) == []


def test_a_connection_lost_twice_raises(backend: RedisBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    """A second loss in a row is the outage it looks like: raised, not retried forever."""
    from jobchain.errors import BackendUnavailableError

    app = App(backend=backend, buffer=None)
    task = app.task(name="t")(lambda: None)
    with monkeypatch.context() as patch:
        _lose_next_replies(patch, count=2)
        with pytest.raises(BackendUnavailableError):
            task.submit()
    assert queue_stats(backend).ready == 1  # applied once: the second run found it and did not store it again


def test_a_reservation_whose_reply_was_lost_still_delivers_its_job(
    backend: RedisBackend, monkeypatch: pytest.MonkeyPatch, clock: ManualClock
) -> None:
    """The lease was applied, its reply lost: the second run finds its own lease and delivers the job.

    It once took its own lease for a duplicate's (redis-streams): the entry was
    acknowledged and deleted, and the job, leased under a token nobody held,
    was never run (found by the CLIENT KILL fault test). redis-lists once found
    the band empty and returned nothing: the job stayed leased under a token
    nobody held until that lease ended, then came back as a suspect.
    """
    app = App(backend=backend, buffer=None)
    handle = app.task(name="t")(lambda: None).submit()
    with monkeypatch.context() as patch:
        applied = _lose_next_replies(patch, holding="HSET")  # the lease's EXEC
        got = reserve(backend, lease=5.0)
    assert len(applied) == 1
    assert [d.job.id for d in got] == [handle.id]
    assert got[0].delivery_count == 1  # its first delivery: not a suspect
    assert backend.settle([completed(got[0], clock=clock)])[0].accepted
    assert reserve(backend) == []


def test_a_batch_whose_lease_reply_was_lost_delivers_its_jobs_and_no_more(
    backend: RedisBackend, monkeypatch: pytest.MonkeyPatch, clock: ManualClock
) -> None:
    """The second run delivers the batch the lost EXEC leased, within the limit; the rest stays ready."""
    app = App(backend=backend, buffer=None)
    task = app.task(name="t")(lambda: None)
    handles = [task.submit() for _ in range(3)]
    with monkeypatch.context() as patch:
        applied = _lose_next_replies(patch, holding="HSET")
        got = reserve(backend, limit=2, lease=5.0)
    assert len(applied) == 1
    assert sorted(d.job.id for d in got) == sorted(h.id for h in handles[:2])
    assert [d.delivery_count for d in got] == [1, 1]
    [last] = reserve(backend, lease=5.0)
    assert last.job.id == handles[2].id
    assert all(r.accepted for r in backend.settle([completed(d, clock=clock) for d in [*got, last]]))
    assert reserve(backend) == []

def test_a_lapsed_lease_whose_entry_and_stream_are_gone_is_delivered_again(
    redis_server_url: str, clock: ManualClock
) -> None:
    """A claim of a job whose band stream was deleted delivers it; it once failed every reserve (NOGROUP)."""
    client = redis.Redis.from_url(redis_server_url, decode_responses=True)
    backend = StreamsBackend(client, prefix=f"l{uuid.uuid4().hex[:8]}", clock=clock)
    try:
        app = App(backend=backend, buffer=None)
        task = app.task(name="t")(lambda: None)
        handle, other = task.submit(), task.submit()
        first = reserve(backend, limit=1, lease=5.0)
        assert [d.job.id for d in first] == [handle.id]
        record = client.hgetall(backend.keys.job(handle.id, "default"))
        client.xack(record["stream"], "jobchain", record["entry"])
        client.xdel(record["stream"], record["entry"])
        [second] = reserve(backend, limit=1, lease=5.0)  # the other job: the band is drained
        assert second.job.id == other.id
        assert backend.settle([completed(second, clock=clock)])[0].accepted
        client.delete(record["stream"])  # as a band retired once its last entry went
        clock.advance(6.0)
        [again] = reserve(backend, lease=5.0)
        assert again.job.id == handle.id
        assert again.delivery_count == 2
        assert backend.settle([completed(again, clock=clock)])[0].accepted
        assert backend.get_job(handle.id).state.value == "succeeded"  # type: ignore[union-attr]
    finally:
        backend.delete_everything()
        client.close()
