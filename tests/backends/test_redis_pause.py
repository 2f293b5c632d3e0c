"""The Redis backends' paused set: read at most every half second, so the hot path pays no round trip."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterator

import pytest

from jobchain.clock import ManualClock
from jobchain.testing import MakeJob, make_job, reserve

fakeredis = pytest.importorskip("fakeredis", reason="fakeredis is not installed")

from jobchain_redis._paused import PAUSED_REFRESH  # noqa: E402
from jobchain_redis.common import RedisBackend  # noqa: E402
from jobchain_redis.lists import ListsBackend  # noqa: E402
from jobchain_redis.streams import StreamsBackend  # noqa: E402


class Ticks:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


Pair = tuple[RedisBackend, RedisBackend, Ticks]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def jobs(clock: ManualClock) -> MakeJob:
    return functools.partial(make_job, clock)


@pytest.fixture(params=[ListsBackend, StreamsBackend], ids=["lists", "streams"])
def pair(request: pytest.FixtureRequest, clock: ManualClock) -> Iterator[Pair]:
    """Two backends on one Redis and prefix (two processes); the second reads time from ``Ticks``."""
    server = fakeredis.FakeServer()
    prefix = f"t{uuid.uuid4().hex[:12]}"
    clients = [fakeredis.FakeRedis(server=server, decode_responses=True) for _ in range(2)]
    first, second = (request.param(c, prefix=prefix, clock=clock) for c in clients)
    ticks = Ticks()
    second._paused.monotonic = ticks
    yield first, second, ticks
    for client in clients:
        client.close()


def test_a_pause_elsewhere_is_honoured_once_the_copy_is_renewed(pair: Pair, jobs: MakeJob) -> None:
    """Another process's pause and resume are seen when the copy is renewed, half a second at most."""
    first, second, ticks = pair
    assert reserve(second, ["a"]) == []  # reads the (empty) paused set
    first.enqueue([jobs(queue="a"), jobs(queue="a", args=[2])])
    first.pause(["a"])
    ticks.now += PAUSED_REFRESH
    assert reserve(second, ["a"]) == []
    first.resume(["a"])
    ticks.now += PAUSED_REFRESH
    assert len(reserve(second, ["a"])) == 2


def test_reservations_read_the_paused_set_at_most_every_half_second(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No round trip per reservation: the set is read when the copy is older than half a second."""
    _, second, ticks = pair
    reads: list[str] = []
    smembers = second.client.smembers
    monkeypatch.setattr(second.client, "smembers", lambda key: reads.append(key) or smembers(key))
    for _ in range(20):
        reserve(second, ["a", "b"])
        ticks.now += PAUSED_REFRESH / 10
    assert len(reads) == 2  # at 0 and at 0.5 s: not once per reservation


def test_a_pause_through_the_same_backend_applies_at_once(pair: Pair, jobs: MakeJob) -> None:
    """A pause through this backend drops its copy: its next reservation already skips the queue."""
    _, second, _ = pair
    second.enqueue([jobs(queue="a")])
    assert reserve(second, ["b"]) == []  # the copy is read and fresh
    second.pause(["a"])
    assert reserve(second, ["a"]) == []



def test_a_failed_read_of_the_paused_set_settles_without_a_hand_off(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the hand-off cannot read the paused set, the settlement goes on and takes nothing."""
    import redis

    _, second, ticks = pair

    def refuse(key: str) -> None:
        raise redis.ConnectionError("connection reset")

    monkeypatch.setattr(second.client, "smembers", refuse)
    ticks.now += PAUSED_REFRESH
    assert second._paused.handing_off(["a"]) == []
