"""What the conformance suite cannot see of redis-streams: layout, the consumer group, crash leftovers."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
import structlog

from jobchain.clock import ManualClock
from jobchain.model import JobState
from jobchain.testing import completed, make_job, reserve, reserve_one

redis = pytest.importorskip("redis", reason="jobchain-redis is not installed (pip install -e backends/redis)")
fakeredis = pytest.importorskip("fakeredis", reason="fakeredis is not installed")

from jobchain_redis.streams import GROUP, StreamsBackend  # noqa: E402


@pytest.fixture(params=["fake", "server"])
def client(request: pytest.FixtureRequest) -> Iterator[redis.Redis]:
    if request.param == "fake":
        made = fakeredis.FakeRedis(decode_responses=True)
    else:
        made = redis.Redis.from_url(request.getfixturevalue("redis_server_url"), decode_responses=True)
    yield made
    made.close()


@pytest.fixture
def clock(client: redis.Redis) -> ManualClock:
    """Starts at the server's time, so entry ids (server ms) and job ages agree."""
    seconds, micros = client.time()
    return ManualClock(seconds + micros / 1e6)


def _open(client: redis.Redis, clock: ManualClock, prefix: str, **options: float) -> StreamsBackend:
    return StreamsBackend(client, prefix=prefix, clock=clock, **options)


@pytest.fixture
def backend(client: redis.Redis, clock: ManualClock) -> Iterator[StreamsBackend]:
    made = _open(client, clock, f"s{uuid.uuid4().hex[:10]}")
    yield made
    made.delete_everything()


def _streams(backend: StreamsBackend) -> list[str]:
    return sorted(k for k in backend.client.scan_iter(match=backend.keys.patterns[0]) if ":stream:" in k)


def test_every_key_shares_the_prefix_hash_tag(backend: StreamsBackend, clock: ManualClock) -> None:
    """All keys of an app carry one hash tag, so each MULTI/EXEC stays in one Cluster slot."""
    backend.enqueue([make_job(clock), make_job(clock, not_before=clock.now() + 60)])
    backend.settle([completed(reserve_one(backend), clock=clock)])
    keys = list(backend.client.scan_iter(match="*"))
    mine = [k for k in keys if k.startswith(backend.keys.tag)]
    assert len(mine) >= 5
    assert all(k.startswith(backend.keys.tag + ":") for k in mine)


def test_a_job_is_an_entry_naming_it_in_its_band_with_the_group(
    backend: StreamsBackend, clock: ManualClock
) -> None:
    """A ready job is one entry ``id=<job id>`` in its band's stream, which has the consumer group."""
    job = make_job(clock)
    backend.enqueue([job])
    [stream] = _streams(backend)
    assert stream == backend.keys.stream("default", backend._band(job))
    [(_, fields)] = backend.client.xrange(stream)
    assert fields == {"id": job.id}
    assert [g["name"] for g in backend.client.xinfo_groups(stream)] == [GROUP]


def test_settled_entries_are_acked_and_deleted(backend: StreamsBackend, clock: ManualClock) -> None:
    """Completing a job XACKs and XDELs its entry in the same transaction: nothing pending, nothing left."""
    jobs = [make_job(clock, args=[i]) for i in range(5)]
    backend.enqueue(jobs)
    deliveries = reserve(backend, limit=5)
    [stream] = _streams(backend)
    assert backend.client.xpending(stream, GROUP)["pending"] == 5
    backend.settle([completed(d, clock=clock) for d in deliveries])
    assert backend.client.xlen(stream) == 0
    assert backend.client.xpending(stream, GROUP)["pending"] == 0


def test_emptied_bands_are_deleted_so_memory_stays_bounded(client: redis.Redis, clock: ManualClock) -> None:
    """Band streams whose jobs were all settled are deleted by the periodic sweep; no key is left behind."""
    backend = _open(client, clock, f"s{uuid.uuid4().hex[:10]}", orphan_idle=0.0)
    try:
        for _ in range(20):  # twenty different bands: one second apart is ten bands apart
            backend.enqueue([make_job(clock)])
            clock.advance(1.0)
        assert len(_streams(backend)) == 20
        while deliveries := reserve(backend, limit=7):
            backend.settle([completed(d, clock=clock) for d in deliveries])
        reserve(backend)  # the sweep runs at the start of a reserve
        assert _streams(backend) == []
        assert backend.client.zcard(backend.keys.bands("default")) == 0
        assert backend.client.zcard(backend.keys.fresh("default")) == 0
    finally:
        backend.delete_everything()


def test_band_recreated_without_its_group_is_still_served(client: redis.Redis, clock: ManualClock) -> None:
    """A band stream deleted when empty and recreated by an XADD that skipped XGROUP CREATE still works."""
    backend = _open(client, clock, f"s{uuid.uuid4().hex[:10]}", orphan_idle=0.0)
    try:
        first = make_job(clock)
        backend.enqueue_new([first])
        backend.settle([completed(reserve_one(backend), clock=clock)])
        reserve(backend)  # the sweep deletes the emptied band
        assert _streams(backend) == []
        second = make_job(clock)  # same band; this backend remembers creating its group
        backend.enqueue_new([second])
        [stream] = _streams(backend)
        assert backend.client.xinfo_groups(stream) == []
        assert reserve_one(backend).job.id == second.id
    finally:
        backend.delete_everything()


def test_lost_lease_is_claimed_by_another_consumer_in_place(
    backend: StreamsBackend, clock: ManualClock
) -> None:
    """An expired lease is taken over with XCLAIM: the same entry, a new consumer, a higher delivery count."""
    first, second = make_job(clock, args=[1]), make_job(clock, args=[2])
    backend.enqueue([first, second])
    lost = reserve_one(backend, worker="dead", lease=5.0)
    clock.advance(6.0)
    again = reserve_one(backend, worker="alive")
    assert again.job.id == lost.job.id == first.id, "the claimed job keeps its place ahead of the other"
    assert again.delivery_count == 2
    [stream] = _streams(backend)
    [info] = backend.client.xpending_range(stream, GROUP, "-", "+", 10, consumername="alive")
    assert backend.client.xrange(stream, info["message_id"], info["message_id"])[0][1]["id"] == first.id
    assert backend.settle([completed(lost, clock=clock)])[0].accepted is False
    assert backend.settle([completed(again, clock=clock)])[0].accepted is True


def test_entry_read_by_a_reserver_that_died_before_leasing_is_recovered(
    client: redis.Redis, clock: ManualClock
) -> None:
    """A reserver that dies between XREADGROUP and the lease write leaves an orphan; XAUTOCLAIM adopts it."""
    backend = _open(client, clock, f"s{uuid.uuid4().hex[:10]}", orphan_idle=0.05)
    try:
        job = make_job(clock)
        backend.enqueue([job])
        [stream] = _streams(backend)
        client.xreadgroup(GROUP, "ghost", {stream: ">"}, count=1)  # delivered, never leased: the crash
        assert reserve(backend) == []
        time.sleep(0.1)  # the orphan must be idle on the server past orphan_idle
        [delivery] = reserve(backend, worker="rescuer")
        assert delivery.job.id == job.id
        assert backend.settle([completed(delivery, clock=clock)])[0].accepted
        assert backend.get_job(job.id).state is JobState.SUCCEEDED  # type: ignore[union-attr]
    finally:
        backend.delete_everything()


def test_worker_restarting_under_its_name_resumes_its_entries_at_once(
    client: redis.Redis, clock: ManualClock
) -> None:
    """A new process with the old worker's name gets its pending entries without waiting out leases."""
    prefix = f"s{uuid.uuid4().hex[:10]}"
    old_life = _open(client, clock, prefix)
    try:
        jobs = [make_job(clock, args=[i]) for i in range(3)]
        old_life.enqueue(jobs)
        held = reserve(old_life, limit=2, worker="box-1", lease=300.0)
        assert len(held) == 2
        other = _open(client, clock, prefix)
        assert [d.job.id for d in reserve(other, worker="box-2")] == [jobs[2].id]  # the leases hold
        new_life = _open(client, clock, prefix)  # same name, new process: no clock advance at all
        again = reserve(new_life, worker="box-1", lease=300.0)
        assert sorted(d.job.id for d in again) == sorted(d.job.id for d in held)
        assert all(d.delivery_count == 2 for d in again)
        fresh = new_life.settle([completed(d, clock=clock) for d in again])
        stale = old_life.settle([completed(d, clock=clock) for d in held])
        assert [r.accepted for r in fresh] == [True, True]
        assert [r.accepted for r in stale] == [False, False]
    finally:
        old_life.delete_everything()


def test_delayed_retry_is_promoted_into_its_old_band(backend: StreamsBackend, clock: ManualClock) -> None:
    """A delayed job waits in the sorted set, then becomes an entry of the band of its enqueued_at."""
    job = make_job(clock, not_before=clock.now() + 30.0)
    backend.enqueue([job])
    assert _streams(backend) == []
    assert backend.client.zscore(backend.keys.delayed("default"), job.id) == job.not_before
    clock.advance(31.0)
    delivery = reserve_one(backend)
    assert delivery.job.id == job.id
    assert backend.client.zcard(backend.keys.delayed("default")) == 0
    assert _streams(backend) == [backend.keys.stream("default", backend._band(job))]


def test_from_url_reads_prefix_band_and_orphan_idle(redis_server_url: str) -> None:
    """prefix, band (aging intervals), result_ttl, orphan_idle and connection options come from the URL."""
    options = "?prefix=app7&band=0.5&socket_timeout=3&result_ttl=60&orphan_idle=5"
    backend = StreamsBackend.from_url(redis_server_url.replace("redis://", "redis-streams://") + options)
    try:
        assert backend.keys.prefix == "app7"
        assert backend.result_ttl == 60.0
        assert backend.orphan_idle == 5.0
        # jobchain's defaults for the connection: a connect timeout, one retry (the worker backs off)
        assert backend.client.connection_pool.connection_kwargs["socket_connect_timeout"] == 5.0
        assert backend.client.get_retry().get_retries() == 1
        assert backend.band_width == 0.5
        assert backend.client.connection_pool.connection_kwargs["socket_timeout"] == 3.0
        assert backend.url.startswith("redis-streams://127.0.0.1:")
    finally:
        backend.close()


def test_band_width_must_be_positive(client: redis.Redis) -> None:
    with pytest.raises(ValueError, match="band_width"):
        StreamsBackend(client, band_width=0)


def test_extending_a_lease_keeps_the_entry_fresh_for_the_orphan_sweep(
    client: redis.Redis, clock: ManualClock
) -> None:
    """A long job's lease extension resets its entry's idle time, so XAUTOCLAIM never takes it."""
    backend = _open(client, clock, f"s{uuid.uuid4().hex[:10]}", orphan_idle=0.15)
    try:
        backend.enqueue([make_job(clock)])
        delivery = reserve_one(backend, worker="long-runner")
        [stream] = _streams(backend)
        time.sleep(0.2)
        assert backend.extend([delivery], 30.0) == [True]
        [info] = client.xpending_range(stream, GROUP, "-", "+", 10)
        assert info["consumer"] == "long-runner"
        assert info["time_since_delivered"] < 150
        reserve(backend, worker="sweeper")  # the sweep runs: the entry is not idle, nothing moves
        [info] = client.xpending_range(stream, GROUP, "-", "+", 10)
        assert info["consumer"] == "long-runner"
    finally:
        backend.delete_everything()


def test_a_duplicate_entry_of_a_job_is_dropped_not_delivered(client: redis.Redis, clock: ManualClock) -> None:
    """A second entry for one job (a submit re-sent after a lost reply) is never a second delivery."""
    backend = _open(client, clock, f"s{uuid.uuid4().hex[:10]}", orphan_idle=0.05)
    try:
        job = make_job(clock)
        backend.enqueue_new([job])
        [stream] = _streams(backend)
        client.xadd(stream, {"id": job.id})  # the re-sent MULTI's XADD
        client.xadd(stream, {"id": job.id})
        [delivery] = reserve(backend, limit=10)
        assert delivery.job.id == job.id
        assert client.xlen(stream) == 1  # the two duplicates were acknowledged and deleted
        # a duplicate that a reserver took and died with is dropped by the orphan sweep, not re-run
        client.xadd(stream, {"id": job.id})
        client.xreadgroup(GROUP, "ghost", {stream: ">"}, count=1)
        assert backend.settle([completed(delivery, clock=clock)])[0].accepted
        time.sleep(0.1)
        assert reserve(backend, worker="sweeper") == []
        assert reserve(backend, worker="sweeper") == []
        assert backend.get_job(job.id).state is JobState.SUCCEEDED  # type: ignore[union-attr]
        assert client.xpending(stream, GROUP)["pending"] == 0 if client.exists(stream) else True
    finally:
        backend.delete_everything()


def test_the_entry_of_a_job_cancelled_while_ready_is_dropped_quietly(
    client: redis.Redis, clock: ManualClock
) -> None:
    """A cancelled job's entry is read past and deleted, no duplicate warned about; the next job is delivered.

    The orphan sweep drops it quietly too: an entry a reserver read and died
    with, whose job was cancelled meanwhile.
    """
    backend = _open(client, clock, f"s{uuid.uuid4().hex[:10]}", orphan_idle=0.05)
    try:
        gone, kept, later = make_job(clock, args=[1]), make_job(clock, args=[2]), make_job(clock, args=[3])
        backend.enqueue([gone, kept])
        [stream] = _streams(backend)
        assert backend.cancel([gone.id]).cancelled == (gone.id,)
        with structlog.testing.capture_logs() as logs:
            [delivery] = reserve(backend, limit=1)
        assert delivery.job.id == kept.id
        assert [e for e in logs if e["log_level"] not in ("debug", "info")] == []
        assert [e["event"] for e in logs if e.get("job_id") == gone.id] == ["cancelled_entry_dropped"]
        assert client.xrange(stream) == [(_entry_of(client, backend, kept.id), {"id": kept.id})]
        assert backend.settle([completed(delivery, clock=clock)])[0].accepted
        # read by a reserver that died before leasing it, then cancelled: the orphan sweep drops it
        backend.enqueue([later])
        [stream] = _streams(backend)
        client.xreadgroup(GROUP, "ghost", {stream: ">"}, count=1)
        assert backend.cancel([later.id]).cancelled == (later.id,)
        time.sleep(0.1)
        with structlog.testing.capture_logs() as logs:
            assert reserve(backend, worker="sweeper") == []
        assert [e for e in logs if e["log_level"] not in ("debug", "info")] == []
        assert [e["event"] for e in logs if e.get("job_id") == later.id] == ["cancelled_entry_dropped"]
        assert client.xpending(stream, GROUP)["pending"] == 0 if client.exists(stream) else True
        assert backend.get_job(later.id).state is JobState.CANCELLED  # type: ignore[union-attr]
    finally:
        backend.delete_everything()


def _entry_of(client: redis.Redis, backend: StreamsBackend, job_id: str) -> str:
    """The stream entry a leased job was delivered through (its hash says)."""
    entry: str = client.hget(backend.keys.job(job_id, "default"), "entry")
    return entry
