"""Both Redis backends run the whole conformance suite, on fakeredis and on a real redis-server."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from jobchain.clock import ManualClock
from jobchain.testing import BackendConformance

redis = pytest.importorskip("redis", reason="jobchain-redis is not installed (pip install -e backends/redis)")
fakeredis = pytest.importorskip("fakeredis", reason="fakeredis is not installed")

from jobchain_redis.common import RedisBackend  # noqa: E402
from jobchain_redis.lists import ListsBackend  # noqa: E402
from jobchain_redis.streams import StreamsBackend  # noqa: E402


def unique_prefix() -> str:
    """A key prefix no other test uses."""
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module")
def fake_server() -> object:
    return fakeredis.FakeServer()


class _OnFakeRedis(BackendConformance):
    """The suite on an in-process fakeredis server."""

    kind: type[RedisBackend] = ListsBackend
    #: the Cluster's key layout (a tag per queue and chain, two-part chain transitions) on one node
    spread = False

    @pytest.fixture
    def backend(self, clock: ManualClock, fake_server: object) -> Iterator[RedisBackend]:
        client = fakeredis.FakeRedis(server=fake_server, decode_responses=True)
        backend = self.kind(client, prefix=unique_prefix(), clock=clock, spread=self.spread)
        yield backend
        backend.delete_everything()
        client.close()


class _OnRealServer(BackendConformance):
    """The suite on the session's redis-server, opened by the backend class from its URL."""

    kind: type[RedisBackend] = ListsBackend
    scheme = "redis-lists"

    @pytest.fixture
    def backend(self, clock: ManualClock, redis_server_url: str) -> Iterator[RedisBackend]:
        url = redis_server_url.replace("redis://", f"{self.scheme}://") + f"?prefix={unique_prefix()}"
        backend = self.kind.from_url(url, clock=clock)  # type: ignore[attr-defined]
        yield backend
        backend.delete_everything()
        backend.close()


class _ThroughPlugin(BackendConformance):
    """The suite on a backend opened by URL through the installed plugin, as the CLI does."""

    kind: type[RedisBackend] = ListsBackend
    scheme = "redis-lists"

    @pytest.fixture
    def backend(self, clock: ManualClock, redis_server_url: str) -> Iterator[RedisBackend]:
        from jobchain.plugins import Plugins

        url = redis_server_url.replace("redis://", f"{self.scheme}://") + f"?prefix={unique_prefix()}"
        backend = Plugins().open_backend(url, clock=clock)
        assert isinstance(backend, self.kind)
        yield backend
        backend.delete_everything()
        backend.close()


class TestRedisListsFake(_OnFakeRedis):
    aging_tolerance = 0.01


class TestRedisListsServer(_OnRealServer):
    aging_tolerance = 0.01


class TestRedisListsFromUrl(_ThroughPlugin):
    aging_tolerance = 0.01


class TestRedisListsSpreadFake(_OnFakeRedis):
    aging_tolerance = 0.01
    spread = True


class TestRedisStreamsSpreadFake(_OnFakeRedis):
    kind = StreamsBackend
    aging_tolerance = 0.1
    spread = True


class TestRedisStreamsFake(_OnFakeRedis):
    kind = StreamsBackend
    aging_tolerance = 0.1


class TestRedisStreamsServer(_OnRealServer):
    kind = StreamsBackend
    scheme = "redis-streams"
    aging_tolerance = 0.1


class TestRedisStreamsFromUrl(_ThroughPlugin):
    kind = StreamsBackend
    scheme = "redis-streams"
    aging_tolerance = 0.1
