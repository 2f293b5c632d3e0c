"""The asyncio client's bridge to a backend: native coroutines, or a small thread pool of the App's own.

Every ``*_async`` method of the App, its handles, ``app.failed`` and
``app.jobs`` goes through one :class:`AsyncBridge` (``app.aio``). For each
call it picks one of two ways, and neither blocks the event loop:

* a backend that declares :class:`~jobchain.capabilities.AsyncClient` (and
  whose :meth:`~jobchain.capabilities.AsyncClient.serves_async` is True) runs
  the hot calls (storing a submit, reading a job's or a chain's record) as
  coroutines on the caller's loop: Redis through ``redis.asyncio``, the memory
  backend directly (its calls hold its lock for microseconds);
* every other call, and every call on other backends (SQLite, ``http://``,
  Sentinel and Cluster Redis), runs the synchronous method in a thread pool of
  at most ``threads`` threads, created on first use and shut down by
  ``App.close``. That is correct for every backend, because the contract's
  methods are thread-safe already: a worker calls its backend from its fetcher,
  settler, monitor and pool threads at once (memory: one lock; Redis: redis-py's
  connection pool; SQLite: a connection per thread; ``http://``: one shared
  ``httpx.Client``, which is thread-safe). The pool is bounded so that a burst
  of coroutines queues for a few threads rather than starting hundreds; the
  loop's default executor is left to the application.

Waiting (:meth:`AsyncBridge.poll`) is polling with a growing pause, as the
synchronous ``wait`` does, with ``await asyncio.sleep``: no thread per waiter.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Generic, ParamSpec, TypeVar

from jobchain.capabilities import AsyncClient
from jobchain.errors import ConfigurationError

if TYPE_CHECKING:
    from jobchain.backend import Backend
    from jobchain.model import ChainRecord, Job, JobRecord

__all__ = ["DEFAULT_THREADS", "AsyncBridge", "PerLoop", "poll"]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

#: threads of the App's pool for backends without a native asyncio client
DEFAULT_THREADS = 4


async def poll(check: Callable[[], Awaitable[bool]], timeout: float | None) -> bool:
    """Await ``check()`` with a growing pause (1 ms to 50 ms) until it is true or ``timeout`` passes."""
    deadline = None if timeout is None else time.monotonic() + timeout
    pause = 0.001
    while True:
        if await check():
            return True
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            await asyncio.sleep(min(pause, left))
        else:
            await asyncio.sleep(pause)
        pause = min(pause * 1.5, 0.05)


async def _closed_with_the_loop(item: T, close: Callable[[T], Awaitable[None]]) -> AsyncGenerator[None, None]:
    """Held open while ``item`` lives: the loop's ``shutdown_asyncgens`` finishes it, closing ``item``."""
    try:
        yield
    finally:
        await close(item)


#: a loop's item, and the started generator that closes it when the loop shuts down
_Held = tuple[T, AsyncGenerator[None, None]]


class PerLoop(Generic[T]):
    """One ``T`` per event loop (an asyncio client, whose connections belong to the loop that opened them).

    A backend's :class:`~jobchain.capabilities.AsyncClient` keeps its clients in
    one: :meth:`get` makes the running loop's on first use; :meth:`close` closes
    it (``close_async``). One never closed is closed when its loop shuts down
    through ``asyncio.run`` (or any runner that calls ``loop.shutdown_asyncgens()``,
    as uvicorn does): a started async generator holds it and is finished then,
    so no connection is left to the garbage collector.
    """

    def __init__(self, make: Callable[[], T], close: Callable[[T], Awaitable[None]]) -> None:
        self._make = make
        self._close = close
        self._items: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Held[T]]
        self._items = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    async def get(self) -> T:
        """The running loop's ``T`` (made now if it has none)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            held = self._items.get(loop)
        if held is not None:
            return held[0]
        item = self._make()
        keeper = _closed_with_the_loop(item, self._close)
        await keeper.asend(None)  # started: the loop now finishes it at shutdown
        with self._lock:
            held = self._items.setdefault(loop, (item, keeper))
        if held[1] is not keeper:  # another coroutine of this loop made one meanwhile: use that one
            await keeper.aclose()
        return held[0]

    async def close(self) -> None:
        """Close the running loop's ``T`` (the next :meth:`get` makes a new one)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            held = self._items.pop(loop, None)
        if held is not None:
            await held[1].aclose()


class AsyncBridge:
    """How an App's coroutines reach its backend (see the module's text); ``app.aio``."""

    def __init__(
        self,
        backend: Callable[[], Backend],
        *,
        opened: Callable[[], bool] = lambda: True,
        threads: int = DEFAULT_THREADS,
    ) -> None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ConfigurationError(f"async_threads must be an int >= 1, got {threads!r}")
        #: the backend (opened on first use: loading plugins, parsing the URL)
        self._backend = backend
        self._opened = opened
        #: the most threads the pool runs at once
        self.threads = threads
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    async def open(self) -> None:
        """Open the backend in the pool if it is not open yet (plugins are loaded then: not on the loop)."""
        if not self._opened():
            await self.run(self._backend)

    def native(self) -> AsyncClient | None:
        """The backend as an :class:`AsyncClient` serving coroutines, or None (the pool serves)."""
        backend = self._backend()
        if isinstance(backend, AsyncClient) and backend.serves_async():
            return backend
        return None

    async def run(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """``fn(*args, **kwargs)`` in the pool; its result (or its exception) once it returns."""
        pool = self._pool
        if pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="jobchain-aio")
                pool = self._pool
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(pool, functools.partial(fn, *args, **kwargs))

    # --- the hot calls: native where the backend offers it -------------------------------

    async def enqueue(self, jobs: Sequence[Job], chains: Sequence[ChainRecord], *, fresh: bool) -> None:
        """Store a submit (``enqueue_new`` when every id is fresh, else ``enqueue``)."""
        await self.open()
        native = self.native()
        if native is not None:
            if fresh:
                await native.enqueue_new_async(jobs, chains)
            else:
                await native.enqueue_async(jobs, chains)
            return
        backend = self._backend()
        await self.run(backend.enqueue_new if fresh else backend.enqueue, jobs, chains)

    async def get_job(self, job_id: str) -> JobRecord | None:
        await self.open()
        native = self.native()
        if native is not None:
            return await native.get_job_async(job_id)
        return await self.run(self._backend().get_job, job_id)

    async def get_chain(self, chain_id: str) -> ChainRecord | None:
        await self.open()
        native = self.native()
        if native is not None:
            return await native.get_chain_async(chain_id)
        return await self.run(self._backend().get_chain, chain_id)

    # --- closing ---------------------------------------------------------------------

    async def close_loop(self, backend: Backend | None) -> None:
        """Close the running loop's native connections of ``backend`` (if any were opened)."""
        if isinstance(backend, AsyncClient) and backend.serves_async():
            await backend.close_async()

    def shutdown(self, *, wait: bool = True) -> None:
        """Stop the pool's threads (after the calls under way); a later call starts a new pool."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=wait)
