"""The worker registry, and a few end-to-end runs of a real Worker on the backend under test.

:class:`WorkerRuns` runs today's Worker, which registers itself (``WorkerRegistry``),
drains by the counts (``Stats``) and is observed through the failed queue.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from typing import Any

import pytest

from jobchain.app import App
from jobchain.canvas import chain, group
from jobchain.clock import ManualClock
from jobchain.errors import Fail, WorkerNameTakenError
from jobchain.model import ChainState, WorkerInfo
from jobchain.testing.helpers import MakeJob, eventually, reserve_one, run_worker
from jobchain.testing.suite._base import ConformanceBase, FullBackend, WorkerRegistryBackend
from jobchain.worker import Worker

__all__ = ["WorkerNames", "WorkerRegistry", "WorkerRuns", "worker_info"]


def worker_info(clock: ManualClock, name: str = "w-1", **changes: Any) -> WorkerInfo:
    """A worker's registration as it would send it now."""
    now = clock.now()
    fields: dict[str, Any] = {
        "name": name,
        "host": "host-1",
        "pid": 4242,
        "queues": ("default", "db"),
        "labels": {"zone": "eu-1"},
        "concurrency": 4,
        "started_at": now,
        "heartbeat_at": now,
    }
    fields.update(changes)
    return WorkerInfo(**fields)


class WorkerRegistry(ConformanceBase):
    """Workers register with heartbeats that expire, and can be asked to stop by name."""

    def test_heartbeat_registers_a_worker(self, backend: WorkerRegistryBackend, clock: ManualClock) -> None:
        """A worker's first heartbeat lists it with everything it registered."""
        info = worker_info(clock)
        assert backend.heartbeat(info, 30.0) is False
        assert backend.workers() == [info]

    def test_heartbeat_refreshes_the_registration(
        self, backend: WorkerRegistryBackend, clock: ManualClock
    ) -> None:
        """A later heartbeat replaces the worker's entry instead of adding one."""
        backend.heartbeat(worker_info(clock), 30.0)
        clock.advance(5.0)
        latest = worker_info(clock, heartbeat_at=clock.now(), state="stopping")
        backend.heartbeat(latest, 30.0)
        assert backend.workers() == [latest]

    def test_workers_lists_every_live_worker(
        self, backend: WorkerRegistryBackend, clock: ManualClock
    ) -> None:
        """Every worker with a live heartbeat is listed."""
        for name in ("w-3", "w-1", "w-2"):
            backend.heartbeat(worker_info(clock, name), 30.0)
        assert sorted(w.name for w in backend.workers()) == ["w-1", "w-2", "w-3"]

    def test_worker_disappears_after_its_ttl(
        self, backend: WorkerRegistryBackend, clock: ManualClock
    ) -> None:
        """A worker whose last heartbeat is older than its ttl is no longer listed."""
        backend.heartbeat(worker_info(clock), 10.0)
        clock.advance(9.0)
        assert [w.name for w in backend.workers()] == ["w-1"]
        clock.advance(2.0)
        assert backend.workers() == []

    def test_heartbeat_extends_the_ttl(self, backend: WorkerRegistryBackend, clock: ManualClock) -> None:
        """Each heartbeat keeps the worker listed for another ttl."""
        backend.heartbeat(worker_info(clock), 10.0)
        clock.advance(8.0)
        backend.heartbeat(worker_info(clock, heartbeat_at=clock.now()), 10.0)
        clock.advance(8.0)
        assert [w.name for w in backend.workers()] == ["w-1"]

    def test_stop_request_is_answered_by_the_next_heartbeat(
        self, backend: WorkerRegistryBackend, clock: ManualClock
    ) -> None:
        """After a stop request for a live worker, its heartbeat returns True."""
        backend.heartbeat(worker_info(clock), 30.0)
        assert backend.request_stop("w-1") is True
        assert backend.heartbeat(worker_info(clock), 30.0) is True

    def test_stop_request_for_another_worker_is_not_seen(
        self, backend: WorkerRegistryBackend, clock: ManualClock
    ) -> None:
        """A stop request reaches only the worker it names."""
        backend.heartbeat(worker_info(clock, "w-1"), 30.0)
        backend.heartbeat(worker_info(clock, "w-2"), 30.0)
        backend.request_stop("w-1")
        assert backend.heartbeat(worker_info(clock, "w-2"), 30.0) is False

    def test_stop_request_for_an_unknown_worker_is_false(self, backend: WorkerRegistryBackend) -> None:
        """Asking a worker that never registered to stop returns False."""
        assert backend.request_stop("nobody") is False

    def test_stop_request_for_an_expired_worker_is_false(
        self, backend: WorkerRegistryBackend, clock: ManualClock
    ) -> None:
        """Asking a worker whose heartbeat expired to stop returns False."""
        backend.heartbeat(worker_info(clock), 10.0)
        clock.advance(11.0)
        assert backend.request_stop("w-1") is False

    def test_removed_worker_is_forgotten(self, backend: WorkerRegistryBackend, clock: ManualClock) -> None:
        """A removed worker is no longer listed and cannot be asked to stop."""
        backend.heartbeat(worker_info(clock), 30.0)
        backend.remove_worker("w-1")
        assert backend.workers() == []
        assert backend.request_stop("w-1") is False

    def test_stop_request_does_not_outlive_the_worker(
        self, backend: WorkerRegistryBackend, clock: ManualClock
    ) -> None:
        """A worker that registers again under a removed worker's name is not asked to stop."""
        backend.heartbeat(worker_info(clock), 30.0)
        backend.request_stop("w-1")
        backend.remove_worker("w-1")
        assert backend.heartbeat(worker_info(clock), 30.0) is False


class WorkerRuns(ConformanceBase):
    """A real Worker on this backend: chains, failures, expiry and bad stored jobs."""

    def test_worker_runs_a_chain_with_a_group(self, app: App) -> None:
        """A worker runs a chain with a fan-out and fan-in to completion."""

        @app.task
        def split(n: int) -> int:
            return n

        @app.task
        def power(n: int, exponent: int) -> int:
            return int(n**exponent)

        @app.task
        def total(values: list[int]) -> int:
            return sum(values)

        handle = chain(split, group(power.s(1), power.s(2), power.s(3)), total).submit(2)
        run_worker(app)
        assert handle.result() == 2 + 4 + 8

    def test_worker_halts_a_chain_at_a_permanent_failure(self, app: App) -> None:
        """A step that raises Fail halts its chain, renders as such and lands in the failed queue."""

        @app.task
        def fetch(url: str) -> str:
            return f"body of {url}"

        @app.task
        def parse(body: str) -> str:
            raise Fail(f"cannot parse {body!r}")

        @app.task
        def store(doc: str) -> None:
            raise AssertionError("a step after a failure must not run")

        handle = chain(fetch, parse, store).submit("u")
        run_worker(app)
        assert handle.status() == ChainState.HALTED.value
        assert handle.render() == "fetch (succeeded) -> parse (failed) -> store (not executed)"
        [entry] = app.failed.list()
        assert (entry.job.task, entry.error.type) == ("parse", "Fail")

    def test_worker_fails_an_expired_job_as_job_expired(
        self, app: App, backend: FullBackend, clock: ManualClock
    ) -> None:
        """A job not started before its expiry goes to the failed queue as JobExpired, unrun."""
        ran: list[int] = []

        @app.task(expires=5.0)
        def report() -> None:
            ran.append(1)

        handle = report.submit()
        clock.advance(10.0)
        run_worker(app)
        entry = backend.get_failed(handle.id)
        assert entry is not None
        assert entry.error.type == "JobExpired"
        assert ran == []

    def test_worker_fails_a_stored_job_of_unknown_task_and_keeps_going(
        self, app: App, backend: FullBackend, make_job: MakeJob
    ) -> None:
        """A stored job of an unknown task is failed as UnknownTaskError, and the next job still runs."""

        @app.task
        def known() -> str:
            return "ok"

        bad = make_job("no_such_task")
        backend.enqueue([bad])
        good = known.submit()
        run_worker(app, concurrency=1)
        entry = backend.get_failed(bad.id)
        assert entry is not None
        assert entry.error.type == "UnknownTaskError"
        assert "no_such_task" in entry.error.message
        assert good.result() == "ok"


def _until(predicate: Any, timeout: float = 10.0) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds passed; its last answer."""
    return eventually(predicate, timeout, interval=0.01)


class WorkerNames(ConformanceBase):
    """A worker name is held by one live worker instance at a time; a dead worker's name can be taken."""

    def test_live_name_is_refused_naming_its_holder(
        self, backend: WorkerRegistryBackend, clock: ManualClock
    ) -> None:
        """Another instance's heartbeat under a live worker's name raises, naming the holder's host, pid."""
        holder = worker_info(clock, instance="a")
        backend.heartbeat(holder, 30.0)
        with pytest.raises(WorkerNameTakenError) as caught:
            backend.heartbeat(worker_info(clock, instance="b", host="host-2", pid=7), 30.0)
        assert (caught.value.name, caught.value.host, caught.value.pid) == ("w-1", "host-1", 4242)
        assert backend.workers() == [holder]

    def test_same_instance_refreshes_its_name(
        self, backend: WorkerRegistryBackend, clock: ManualClock
    ) -> None:
        """The instance that holds a name refreshes it with every heartbeat."""
        backend.heartbeat(worker_info(clock, instance="a"), 30.0)
        clock.advance(20.0)
        latest = worker_info(clock, instance="a", heartbeat_at=clock.now())
        assert backend.heartbeat(latest, 30.0) is False
        assert backend.workers() == [latest]

    def test_expired_name_is_taken_by_another_instance(
        self, backend: WorkerRegistryBackend, clock: ManualClock
    ) -> None:
        """Once a holder's heartbeat expired, another instance takes the name, and the old one is refused."""
        backend.heartbeat(worker_info(clock, instance="a"), 10.0)
        clock.advance(11.0)
        successor = worker_info(clock, instance="b", pid=7)
        assert backend.heartbeat(successor, 10.0) is False
        assert backend.workers() == [successor]
        with pytest.raises(WorkerNameTakenError) as caught:
            backend.heartbeat(worker_info(clock, instance="a"), 10.0)
        assert caught.value.pid == 7

    def test_removed_name_is_free(self, backend: WorkerRegistryBackend, clock: ManualClock) -> None:
        """After its holder removed itself, another instance takes the name at once."""
        backend.heartbeat(worker_info(clock, instance="a"), 30.0)
        backend.remove_worker("w-1", "a")
        backend.heartbeat(worker_info(clock, instance="b"), 30.0)
        assert [w.instance for w in backend.workers()] == ["b"]

    def test_remove_by_another_instance_keeps_the_holder(
        self, backend: WorkerRegistryBackend, clock: ManualClock
    ) -> None:
        """remove_worker with an instance that does not hold the name leaves the registration alone."""
        holder = worker_info(clock, instance="a")
        backend.heartbeat(holder, 30.0)
        backend.remove_worker("w-1", "b")
        assert backend.workers() == [holder]
        assert backend.request_stop("w-1") is True

    def test_stop_request_for_a_dead_holder_does_not_stop_its_successor(
        self, backend: WorkerRegistryBackend, clock: ManualClock
    ) -> None:
        """A stop request the dead holder never saw does not stop the worker that takes its name."""
        backend.heartbeat(worker_info(clock, instance="a"), 10.0)
        backend.request_stop("w-1")
        clock.advance(11.0)
        assert backend.heartbeat(worker_info(clock, instance="b"), 10.0) is False

    def test_worker_refuses_to_start_under_a_live_name(
        self, app: App, backend: WorkerRegistryBackend, clock: ManualClock, make_job: MakeJob
    ) -> None:
        """A Worker whose name a live worker holds raises at start and takes none of the holder's jobs."""
        backend.enqueue([make_job(), make_job()])
        backend.heartbeat(worker_info(clock, "same", instance="first"), 30.0)
        held = reserve_one(backend, worker="same")
        second = Worker(app, name="same", queues=["default"], concurrency=1)
        with pytest.raises(WorkerNameTakenError, match="host-1") as caught:
            second.start()
        assert (caught.value.name, caught.value.pid) == ("same", 4242)
        assert backend.extend([held], 30.0) == [True]  # still the first worker's
        assert reserve_one(backend).delivery_count == 1  # the other job was not reserved by the refused one
        assert [w.instance for w in backend.workers()] == ["first"]

    def test_worker_stops_when_its_name_was_taken(
        self, app: App, backend: WorkerRegistryBackend, clock: ManualClock
    ) -> None:
        """A worker that finds its registration taken by another instance stops, and records why."""
        worker = Worker(app, name="same", queues=["default"], concurrency=1, heartbeat_ttl=10.0)
        worker.start()
        try:
            clock.advance(11.0)  # as if the worker had been paused past its ttl
            backend.heartbeat(worker_info(clock, "same", instance="other", pid=7), 10.0)
            assert _until(lambda: worker.stopping)
            assert worker.name_lost is not None
            assert worker.name_lost.pid == 7
        finally:
            worker.stop(timeout=10.0)
        assert [w.instance for w in backend.workers()] == ["other"]  # its stop did not remove the new holder

    @pytest.mark.skipif(os.name != "posix", reason="tells a dead process with os.kill(pid, 0)")
    def test_worker_takes_the_name_of_a_dead_process_on_this_host(
        self, app: App, backend: WorkerRegistryBackend, clock: ManualClock
    ) -> None:
        """A fresh registration whose process on this very host is gone does not keep its name.

        That is a supervisor restarting a killed worker at once, before its heartbeat expired.
        """
        gone = subprocess.Popen([sys.executable, "-c", "pass"])
        gone.wait()  # reaped: its pid names no process now
        here = socket.gethostname()
        backend.heartbeat(worker_info(clock, "same", instance="dead", host=here, pid=gone.pid), 30.0)
        worker = Worker(app, name="same", queues=["default"], concurrency=1).start()
        try:
            [holder] = backend.workers()
            assert (holder.instance, holder.pid) == (worker.instance, os.getpid())
        finally:
            worker.stop(timeout=10.0)

    def test_a_live_process_on_this_host_keeps_its_name(
        self, app: App, backend: WorkerRegistryBackend, clock: ManualClock
    ) -> None:
        """A registration from this host whose process still runs is refused like any live holder."""
        here = socket.gethostname()
        backend.heartbeat(worker_info(clock, "same", instance="alive", host=here, pid=os.getppid()), 30.0)
        with pytest.raises(WorkerNameTakenError):
            Worker(app, name="same", queues=["default"], concurrency=1).start()
