"""A Redis backend is the shared parts plus a layout: the layouts plug in, they override nothing."""

from __future__ import annotations

import inspect
import uuid
from collections.abc import Sequence
from typing import Any

import pytest

from jobchain.clock import ManualClock
from jobchain.testing import completed, make_job, reserve_one

redis = pytest.importorskip("redis", reason="jobchain-redis is not installed (pip install -e backends/redis)")
fakeredis = pytest.importorskip("fakeredis", reason="fakeredis is not installed")

from jobchain_redis._guard import QueueGuard  # noqa: E402
from jobchain_redis._layout import Layout, Writes  # noqa: E402
from jobchain_redis._store import Store  # noqa: E402
from jobchain_redis.common import RedisBackend  # noqa: E402
from jobchain_redis.lists import ListsBackend, ListsLayout  # noqa: E402
from jobchain_redis.streams import StreamsBackend, StreamsLayout  # noqa: E402

#: what the backend classes add to RedisBackend: their constructor (which names the layout) and URL options
_ASSEMBLY = {
    "__init__",
    "_url_options",
    "_abc_impl",
    "__doc__",
    "__module__",
    "__qualname__",
    "scheme",
    "default_band_width",
}


def _protocol_members() -> set[str]:
    return {name for name in vars(Layout) if not name.startswith("_")} | set(Layout.__annotations__)


@pytest.mark.parametrize("kind", [ListsBackend, StreamsBackend])
def test_a_backend_class_only_names_its_layout(kind: type[RedisBackend]) -> None:
    """ListsBackend and StreamsBackend override no operation of RedisBackend: their layout differs."""
    own = {name for name in vars(kind) if not name.startswith("__") or name == "__init__"}
    assert own <= _ASSEMBLY, own - _ASSEMBLY


@pytest.mark.parametrize("layout", [ListsLayout, StreamsLayout])
def test_each_layout_implements_the_whole_protocol(layout: type[Any]) -> None:
    """Every operation the shared parts call is a method (or setting) of both layouts."""
    missing = {name for name in _protocol_members() if not hasattr(layout, name)}
    assert missing == set()
    for name in _protocol_members():
        if inspect.isfunction(getattr(Layout, name, None)):
            assert inspect.isfunction(getattr(layout, name)), name


class _Recording(ListsLayout):
    """The lists layout, noting which of its operations the shared parts call."""

    def __init__(self, store: Store, guard: QueueGuard) -> None:
        super().__init__(store, guard)
        self.calls: list[str] = []

    def place(self, pipe: Any, writes: Writes, job: Any, now: float, *, front: bool) -> None:
        self.calls.append("place")
        super().place(pipe, writes, job, now, front=front)

    def take(
        self, queues: Sequence[str], limit: int, lease: float, worker: str
    ) -> tuple[list[Any], dict[str, str]]:
        self.calls.append("take")
        return super().take(queues, limit, lease, worker)

    def unlease(self, pipe: Any, writes: Writes, job: Any, worker: str, row: Any, *, done: bool) -> list[str]:
        self.calls.append("unlease")
        return super().unlease(pipe, writes, job, worker, row, done=done)


def test_a_layout_given_to_redis_backend_serves_submit_reserve_and_settle(clock: ManualClock) -> None:
    """RedisBackend built with a layout factory runs a job through it: placed, taken, unleased."""
    made: list[_Recording] = []

    def factory(store: Store, guard: QueueGuard) -> Layout:
        made.append(_Recording(store, guard))
        return made[0]

    backend = RedisBackend(
        fakeredis.FakeRedis(decode_responses=True),
        layout=factory,
        prefix=f"y{uuid.uuid4().hex[:8]}",
        clock=clock,
    )
    try:
        job = make_job(clock)
        backend.enqueue([job])
        delivery = reserve_one(backend)
        [settled] = backend.settle([completed(delivery, 1, clock=clock)])
        assert settled.accepted
        assert made[0].calls == ["place", "take", "unlease"]
        record = backend.get_job(job.id)
        assert record is not None
        assert record.result == 1
    finally:
        backend.delete_everything()
