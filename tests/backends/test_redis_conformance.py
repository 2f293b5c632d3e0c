"""The Redis backends run the whole conformance suite, on fakeredis and on a real redis-server."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from jobchain.clock import ManualClock
from jobchain.testing import BackendConformance

redis = pytest.importorskip("redis", reason="jobchain-redis is not installed (pip install -e backends/redis)")
fakeredis = pytest.importorskip("fakeredis", reason="fakeredis is not installed")

from jobchain_redis.lists import ListsBackend  # noqa: E402


def unique_prefix() -> str:
    """A key prefix no other test uses."""
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module")
def fake_server() -> object:
    return fakeredis.FakeServer()


class TestRedisListsFake(BackendConformance):
    aging_tolerance = 0.01

    @pytest.fixture
    def backend(self, clock: ManualClock, fake_server: object) -> Iterator[ListsBackend]:
        client = fakeredis.FakeRedis(server=fake_server, decode_responses=True)
        backend = ListsBackend(client, prefix=unique_prefix(), clock=clock)
        yield backend
        backend.delete_everything()
        client.close()


class TestRedisListsServer(BackendConformance):
    aging_tolerance = 0.01

    @pytest.fixture
    def backend(self, clock: ManualClock, redis_server_url: str) -> Iterator[ListsBackend]:
        url = redis_server_url.replace("redis://", "redis-lists://") + f"?prefix={unique_prefix()}"
        backend = ListsBackend.from_url(url, clock=clock)
        yield backend
        backend.delete_everything()
        backend.close()


class TestRedisListsFromUrl(BackendConformance):
    """The suite on a backend opened by URL through the installed plugin, as the CLI does."""

    aging_tolerance = 0.01

    @pytest.fixture
    def backend(self, clock: ManualClock, redis_server_url: str) -> Iterator[ListsBackend]:
        from jobchain.plugins import Plugins

        url = redis_server_url.replace("redis://", "redis-lists://") + f"?prefix={unique_prefix()}"
        backend = Plugins().open_backend(url, clock=clock)
        assert isinstance(backend, ListsBackend)
        yield backend
        backend.delete_everything()
        backend.close()
