"""The asyncio client: each coroutine does what its synchronous twin does, from any loop, many at once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator, Sequence
from typing import Any, cast

import pytest

from jobchain.aio import AsyncBridge
from jobchain.app import App
from jobchain.backend import Backend
from jobchain.canvas import chain
from jobchain.capabilities import AsyncClient, supports
from jobchain.clock import ManualClock
from jobchain.model import ChainRecord, Job, JobRecord, JobState
from jobchain.testing.helpers import MakeJob, completed, reserve_one
from jobchain.testing.suite._base import ConformanceBase
from jobchain.testing.suite.chains import declare_tasks

__all__ = ["AsyncClientConformance", "AsyncClientRules"]


class _AsyncBackend(Backend, AsyncClient):
    """For annotations only: a backend that declares AsyncClient (never built)."""


def _run(backend: _AsyncBackend, body: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """Run ``body()`` on a new event loop, then close what that loop opened on the backend."""

    async def main() -> Any:
        try:
            return await body()
        finally:
            await backend.close_async()

    return asyncio.run(main())


class _Bridged:
    """A backend that does not serve coroutines itself, reached as the App reaches it: the App's pool.

    The coroutines run the sync calls on :class:`jobchain.aio.AsyncBridge`'s
    threads; every other attribute is the backend's own.
    """

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self._bridge = AsyncBridge(lambda: backend)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)

    async def enqueue_new_async(self, jobs: Sequence[Job], chains: Sequence[ChainRecord] = ()) -> None:
        await self._bridge.enqueue(jobs, chains, fresh=True)

    async def enqueue_async(self, jobs: Sequence[Job], chains: Sequence[ChainRecord] = ()) -> None:
        await self._bridge.enqueue(jobs, chains, fresh=False)

    async def get_job_async(self, job_id: str) -> JobRecord | None:
        return await self._bridge.get_job(job_id)

    async def get_chain_async(self, chain_id: str) -> ChainRecord | None:
        return await self._bridge.get_chain(chain_id)

    async def close_async(self) -> None:
        await self._bridge.close_loop(self._backend)

    def shutdown(self) -> None:
        self._bridge.shutdown()


class AsyncClientRules(ConformanceBase):
    """Base of the asyncio client's rules, which every backend runs.

    A backend that declares :class:`~jobchain.capabilities.AsyncClient` and
    serves coroutines on this connection is tested through its own coroutines;
    any other (one without the capability, a Redis Cluster or Sentinel client,
    an http:// backend on a client of its own) through the App's thread pool,
    which is how an App serves its async calls on it.
    """

    @pytest.fixture
    def native(self, backend: Backend) -> Iterator[_AsyncBackend]:
        """The backend under test as the asyncio client reaches it."""
        if supports(backend, AsyncClient) and cast(_AsyncBackend, backend).serves_async():
            yield cast(_AsyncBackend, backend)
            return
        bridged = _Bridged(backend)
        try:
            yield cast(_AsyncBackend, bridged)
        finally:
            bridged.shutdown()


class AsyncClientConformance(AsyncClientRules):
    """The rules of :class:`jobchain.capabilities.AsyncClient`: the coroutines are their sync twins."""

    def test_enqueue_new_async_stores_what_enqueue_new_stores(
        self, native: _AsyncBackend, clock: ManualClock, make_job: MakeJob
    ) -> None:
        """Jobs stored by the coroutine are ready or delayed, as the sync call leaves them."""
        ready, later = make_job(args=[1]), make_job(args=[2], not_before=clock.now() + 60.0)
        _run(native, lambda: native.enqueue_new_async([ready, later]))
        first = native.get_job(ready.id)
        second = native.get_job(later.id)
        assert first is not None
        assert second is not None
        assert (first.state, first.job) == (JobState.QUEUED, ready)
        assert (second.state, second.job) == (JobState.DELAYED, later)
        assert reserve_one(native).job.id == ready.id

    def test_enqueue_async_leaves_existing_ids_alone(self, native: _AsyncBackend, make_job: MakeJob) -> None:
        """An id that exists is skipped (its job unchanged); the others are stored."""
        old = make_job(args=["old"])
        native.enqueue([old])
        again = make_job(args=["new"], id=old.id)
        other = make_job(args=["other"])
        _run(native, lambda: native.enqueue_async([again, other]))
        kept, added = native.get_job(old.id), native.get_job(other.id)
        assert kept is not None
        assert added is not None
        assert kept.job.args == ("old",)
        assert added.job == other

    def test_records_read_by_the_coroutines_are_the_sync_ones(
        self, native: _AsyncBackend, app: App, clock: ManualClock
    ) -> None:
        """get_job_async and get_chain_async answer what get_job and get_chain answer, None when unknown."""
        first, second = declare_tasks(app, "first", "second")
        handle = chain(first.s(1), second).submit()
        [job_id] = handle.job_ids()[0]
        native.settle([completed(reserve_one(native), result=2, clock=clock)])

        async def body() -> None:
            assert await native.get_job_async(job_id) == native.get_job(job_id)
            assert await native.get_chain_async(handle.id) == native.get_chain(handle.id)
            assert await native.get_job_async("no-such-job") is None
            assert await native.get_chain_async("no-such-chain") is None

        _run(native, body)

    def test_each_event_loop_gets_its_own_connections(self, native: _AsyncBackend, make_job: MakeJob) -> None:
        """Calls from one loop, then from another after the first closed: both work."""
        jobs = [make_job(args=[i]) for i in range(2)]
        for job in jobs:
            _run(native, lambda job=job: native.enqueue_new_async([job]))  # type: ignore[misc]
        assert all(native.get_job(job.id) is not None for job in jobs)

    def test_many_coroutines_at_once(self, native: _AsyncBackend, make_job: MakeJob) -> None:
        """Two hundred concurrent enqueues and reads: every job stored and read back."""
        jobs = [make_job(args=[i]) for i in range(200)]

        async def body() -> list[Any]:
            await asyncio.gather(*(native.enqueue_new_async([job]) for job in jobs))
            return list(await asyncio.gather(*(native.get_job_async(job.id) for job in jobs)))

        records = _run(native, body)
        assert [r.job if r is not None else None for r in records] == jobs
