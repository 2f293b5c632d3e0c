"""What the conformance suite cannot see of redis-lists: layout, URLs, the server clock, crash leftovers."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

from jobchain.clock import ManualClock
from jobchain.errors import BackendUnavailableError
from jobchain.testing import completed, make_job, reserve_one

redis = pytest.importorskip("redis", reason="jobchain-redis is not installed (pip install -e backends/redis)")
fakeredis = pytest.importorskip("fakeredis", reason="fakeredis is not installed")

from jobchain_redis.connection import ServerClock, parse_url, public_url  # noqa: E402
from jobchain_redis.keys import Keys  # noqa: E402
from jobchain_redis.lists import ListsBackend  # noqa: E402


@pytest.fixture
def backend(clock: ManualClock) -> Iterator[ListsBackend]:
    client = fakeredis.FakeRedis(decode_responses=True)
    backend = ListsBackend(client, prefix=f"t{uuid.uuid4().hex[:8]}", clock=clock)
    yield backend
    backend.delete_everything()


def test_every_key_shares_the_prefix_hash_tag(backend: ListsBackend, clock: ManualClock) -> None:
    """After a job's whole life, every key the backend wrote carries the prefix's hash tag."""
    backend.enqueue([make_job(clock, queue="q1")])
    backend.settle([completed(reserve_one(backend, ["q1"]), clock=clock)])
    names = list(backend.client.scan_iter("*"))
    assert names
    assert all(name.startswith(backend.keys.tag + ":") for name in names)


def test_reserved_job_sits_in_the_workers_processing_list(backend: ListsBackend, clock: ManualClock) -> None:
    """A reserved job id is in its worker's processing list until settled, then gone."""
    job = make_job(clock)
    backend.enqueue([job])
    delivery = reserve_one(backend, worker="w-9")
    processing = backend.keys.processing("w-9")
    assert backend.client.lrange(processing, 0, -1) == [job.id]
    backend.settle([completed(delivery, clock=clock)])
    assert backend.client.lrange(processing, 0, -1) == []


def test_lost_lease_leaves_the_dead_workers_processing_list(
    backend: ListsBackend, clock: ManualClock
) -> None:
    """When a dead worker's lease runs out, its job moves out of that worker's processing list."""
    backend.enqueue([make_job(clock)])
    reserve_one(backend, worker="dead", lease=5.0)
    clock.advance(6.0)
    again = reserve_one(backend, worker="alive")
    assert backend.client.lrange(backend.keys.processing("dead"), 0, -1) == []
    assert backend.client.lrange(backend.keys.processing("alive"), 0, -1) == [again.job.id]


def test_url_options_reach_redis_py_and_prefix_stays_ours() -> None:
    """prefix and band are jobchain's; TLS schemes map to rediss://; the rest goes to redis-py."""
    parsed = parse_url("rediss-lists://u:secret@h:6380/3?prefix=app&band=0.5&socket_timeout=2")
    assert parsed.options == {"prefix": "app", "band": "0.5"}
    assert parsed.redis_url == "rediss://u:secret@h:6380/3?socket_timeout=2"
    assert "secret" not in parsed.public


def test_public_url_hides_the_password() -> None:
    """The URL a backend reports has its password replaced."""
    assert public_url("redis-lists://user:pw@host:1/0") == "redis-lists://user:***@host:1/0"
    assert public_url("redis-lists://host:1/0") == "redis-lists://host:1/0"


def test_from_url_uses_prefix_and_band() -> None:
    """``?prefix=`` and ``?band=`` configure the backend opened by URL."""
    backend = ListsBackend.from_url("redis-lists://127.0.0.1:1/0?prefix=app&band=0.25", clock=ManualClock())
    assert (backend.keys, backend.band_width) == (Keys("app"), 0.25)
    backend.close()


def test_unreachable_server_is_a_backend_unavailable_error() -> None:
    """A connection failure surfaces as BackendUnavailableError naming the URL without its password."""
    backend = ListsBackend.from_url(
        "redis-lists://:pw@127.0.0.1:1/0?socket_connect_timeout=0.2", clock=ManualClock()
    )
    with pytest.raises(BackendUnavailableError) as info:
        backend.get_job("x")
    assert "pw" not in str(info.value)
    backend.close()


def test_server_clock_follows_redis_time() -> None:
    """With no clock given, the backend's time is the server's TIME."""
    client = fakeredis.FakeRedis(decode_responses=True)
    seconds, micros = client.time()
    assert abs(ServerClock(client).now() - (seconds + micros / 1e6)) < 1.0
    assert isinstance(ListsBackend(client).clock, ServerClock)


def test_redis_fixture_fails_instead_of_skipping_under_ci(
    monkeypatch: pytest.MonkeyPatch, redis_unavailable: Callable[[str], None]
) -> None:
    """With CI=true, an unavailable Redis fails the test run; otherwise it skips."""
    _unavailable = redis_unavailable
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception):
        _unavailable("no server")
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception):
        _unavailable("no server")


def test_worker_restarting_under_its_name_resumes_its_jobs_at_once(
    backend: ListsBackend, clock: ManualClock
) -> None:
    """A new process with the old worker's name gets back its processing list without waiting out leases."""
    jobs = [make_job(clock, args=[i]) for i in range(3)]
    backend.enqueue(jobs)
    held = [reserve_one(backend, worker="box-1", lease=300.0) for _ in range(2)]
    new_life = ListsBackend(backend.client, prefix=backend.keys.prefix, clock=clock)
    again = [reserve_one(new_life, worker="box-1", lease=300.0) for _ in range(2)]
    assert [d.job.id for d in again] == [d.job.id for d in held], "resumed jobs keep their place"
    assert all(d.delivery_count == 2 for d in again)
    assert reserve_one(new_life, worker="box-1").job.id == jobs[2].id
    assert [r.accepted for r in backend.settle([completed(d, clock=clock) for d in held])] == [False, False]
