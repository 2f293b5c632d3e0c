"""Test mode: submits run to completion in the calling thread, through the worker's own code.

Celery's ``task_always_eager`` and Huey's ``immediate`` mode, with the
production semantics kept: a submit stores its jobs in the (memory) backend as
always, then :class:`EagerRunner` reserves and runs every ready job, one at a
time, with the worker's execution code, and settles each outcome on the
backend. So retries, chains, groups, the failed queue and events behave as
under a worker; only time is skipped: a retry is settled with no delay, and a
job submitted to run later runs when nothing else is ready.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from attrs import evolve

from jobchain.backend import Backend
from jobchain.errors import ConfigurationError
from jobchain.model import Delivery, Outcome, Retried
from jobchain.worker import Runtime, Worker

__all__ = ["EagerRunner"]

#: the lease of an eager delivery: nothing else runs the job meanwhile, it only has to outlast the run
_LEASE = 24 * 3600.0


@runtime_checkable
class _Skips(Protocol):
    """A backend that can skip a delay (the memory backend; a protocol so that no backend is imported)."""

    def skip_delay(self, queues: Sequence[str]) -> bool: ...


class _App(Protocol):
    """What the runner reads of its App (a protocol: this module does not import the app's)."""

    @property
    def backend(self) -> Backend: ...
    @property
    def backend_url(self) -> str: ...
    @property
    def queues(self) -> Sequence[str]: ...
    def runtime(self) -> Runtime: ...


class EagerRunner:
    """Runs what an App's submits stored, until nothing is ready or delayed (one thread at a time)."""

    def __init__(self, app: _App) -> None:
        self._app = app
        self._lock = threading.RLock()
        self._local = threading.local()

    def check(self) -> Backend:
        backend = self._app.backend
        if not isinstance(backend, _Skips):
            raise ConfigurationError(
                f"test mode (eager) runs on the memory backend, not {self._app.backend_url}: "
                "use App('memory://', eager=True)"
            )
        return backend

    def run(self) -> None:
        """Run every job that is ready or delayed; a submit from a running task is run by this loop."""
        if getattr(self._local, "active", False):
            return  # a task submitting: the loop below picks its jobs up
        self._local.active = True
        try:
            with self._lock:
                self._drain(self.check())
        finally:
            self._local.active = False

    def _drain(self, backend: Backend) -> None:
        worker = Worker(self._app.runtime(), concurrency=1, name=f"eager-{os.getpid()}", lease=_LEASE)
        queues = list(self._app.queues)
        while True:
            got = backend.reserve(queues, limit=1, lease=_LEASE, worker=worker.name)
            if not got:
                if isinstance(backend, _Skips) and backend.skip_delay(queues):
                    continue
                return
            outcome = self._run_one(worker, got[0])
            if isinstance(outcome, Retried):
                outcome = evolve(outcome, delay=0.0)  # retries without sleeping
            results = backend.settle([outcome])
            worker._after_settle([outcome], results)

    def _run_one(self, worker: Worker, delivery: Delivery) -> Outcome:
        """Run one job here; a coroutine task to completion on an event loop of its own.

        With no event loop running in this thread, ``asyncio.run``. Inside a
        running loop (a submit from async code, an async test) that loop cannot
        be re-entered: the job runs with ``asyncio.run`` on a helper thread
        while this thread waits, so the caller's loop is blocked for the run,
        as for any eager submit. The jobs it submits are run by this drain.
        """
        slot = worker.slots[0]
        task = worker.runtime.tasks.get(delivery.job.task)
        if not getattr(task, "is_async", False):
            return worker._run_job(delivery, slot)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(worker._run_job_async(delivery, slot))
        done: list[Outcome] = []

        def run() -> None:
            self._local.active = True  # submits from the task join the drain running in the caller
            done.append(asyncio.run(worker._run_job_async(delivery, slot)))

        helper = threading.Thread(target=run, name="jobchain-eager-async", daemon=True)
        helper.start()
        helper.join()
        return done[0]
