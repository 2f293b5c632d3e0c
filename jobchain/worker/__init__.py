"""The worker: runs jobs from a backend on a pool of threads.

Threads share a local buffer of deliveries. A thread that finds the buffer
empty reserves the next batch for everyone (one backend call, blocking up to
``poll`` seconds while the queues are empty); a thread that finishes a job
adds its outcome to a pending list and, unless another thread is already
doing it, settles everything pending in one backend call. So under load one
call serves many jobs, and at light load nothing waits for a timer.

A monitor thread extends the leases of everything the worker holds, refreshes
its registration (and so learns of a remote stop request), enforces per-job
timeouts and emits progress events.

A backend call that raises never ends a thread: reservation and settlement
retry after a capped exponential backoff with jitter (:class:`Backoff`),
outcomes wait in the pending list until the backend takes them, and the
monitor's calls are retried on its next rounds. :class:`Outage` logs each
outage once, when it starts and when it ends. A settlement the backend
refuses (an error that is not an outage) is split: the outcomes are settled
one by one, so one the backend will not take holds up no other (see
:meth:`Worker._settle_each`).

Nothing a task does ends a pool thread either: whatever it raises (a
``BaseException``, an exception that cannot be printed) or returns is
recorded as its failure. A pool thread that dies anyway (a bug) is replaced,
and its job is released (``worker_thread_died``, ``counters.threads_died``).

The worker depends on a :class:`Runtime` (a task registry, the backend, the
events facade, a clock and a few settings), not on the App: ``app.worker()``
or ``Worker(app)`` builds one with :meth:`App.runtime <jobchain.App.runtime>`.
Its parts live in one module each: ``_core`` (the shared state under one
lock), ``_pool`` (threads, fetcher, next job), ``_execution`` (one job),
``_aio`` (the event loop for ``async def`` tasks, beside the threads),
``_settling`` (pending outcomes, settlement, refusals), ``_monitor`` (leases,
heartbeats, deadlines, timeouts, progress) and ``_worker`` (the life cycle).
"""

from jobchain.worker._core import SlotStats
from jobchain.worker._runtime import RunnableTask, Runtime, SupportsRuntime
from jobchain.worker._worker import Worker

__all__ = ["RunnableTask", "Runtime", "SlotStats", "SupportsRuntime", "Worker"]
