"""The worker registry, and a few end-to-end runs of a real Worker on the backend under test."""

from __future__ import annotations

from typing import Any

from jobchain.app import App
from jobchain.backend import Backend
from jobchain.canvas import chain, group
from jobchain.clock import ManualClock
from jobchain.errors import Fail
from jobchain.model import ChainState, WorkerInfo
from jobchain.testing.helpers import MakeJob, run_worker
from jobchain.testing.suite._base import ConformanceBase

__all__ = ["WorkerRegistry", "WorkerRuns", "worker_info"]


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

    def test_heartbeat_registers_a_worker(self, backend: Backend, clock: ManualClock) -> None:
        """A worker's first heartbeat lists it with everything it registered."""
        info = worker_info(clock)
        assert backend.heartbeat(info, 30.0) is False
        assert backend.workers() == [info]

    def test_heartbeat_refreshes_the_registration(self, backend: Backend, clock: ManualClock) -> None:
        """A later heartbeat replaces the worker's entry instead of adding one."""
        backend.heartbeat(worker_info(clock), 30.0)
        clock.advance(5.0)
        latest = worker_info(clock, heartbeat_at=clock.now(), state="stopping")
        backend.heartbeat(latest, 30.0)
        assert backend.workers() == [latest]

    def test_workers_lists_every_live_worker(self, backend: Backend, clock: ManualClock) -> None:
        """Every worker with a live heartbeat is listed."""
        for name in ("w-3", "w-1", "w-2"):
            backend.heartbeat(worker_info(clock, name), 30.0)
        assert sorted(w.name for w in backend.workers()) == ["w-1", "w-2", "w-3"]

    def test_worker_disappears_after_its_ttl(self, backend: Backend, clock: ManualClock) -> None:
        """A worker whose last heartbeat is older than its ttl is no longer listed."""
        backend.heartbeat(worker_info(clock), 10.0)
        clock.advance(9.0)
        assert [w.name for w in backend.workers()] == ["w-1"]
        clock.advance(2.0)
        assert backend.workers() == []

    def test_heartbeat_extends_the_ttl(self, backend: Backend, clock: ManualClock) -> None:
        """Each heartbeat keeps the worker listed for another ttl."""
        backend.heartbeat(worker_info(clock), 10.0)
        clock.advance(8.0)
        backend.heartbeat(worker_info(clock, heartbeat_at=clock.now()), 10.0)
        clock.advance(8.0)
        assert [w.name for w in backend.workers()] == ["w-1"]

    def test_stop_request_is_answered_by_the_next_heartbeat(
        self, backend: Backend, clock: ManualClock
    ) -> None:
        """After a stop request for a live worker, its heartbeat returns True."""
        backend.heartbeat(worker_info(clock), 30.0)
        assert backend.request_stop("w-1") is True
        assert backend.heartbeat(worker_info(clock), 30.0) is True

    def test_stop_request_for_another_worker_is_not_seen(self, backend: Backend, clock: ManualClock) -> None:
        """A stop request reaches only the worker it names."""
        backend.heartbeat(worker_info(clock, "w-1"), 30.0)
        backend.heartbeat(worker_info(clock, "w-2"), 30.0)
        backend.request_stop("w-1")
        assert backend.heartbeat(worker_info(clock, "w-2"), 30.0) is False

    def test_stop_request_for_an_unknown_worker_is_false(self, backend: Backend) -> None:
        """Asking a worker that never registered to stop returns False."""
        assert backend.request_stop("nobody") is False

    def test_stop_request_for_an_expired_worker_is_false(self, backend: Backend, clock: ManualClock) -> None:
        """Asking a worker whose heartbeat expired to stop returns False."""
        backend.heartbeat(worker_info(clock), 10.0)
        clock.advance(11.0)
        assert backend.request_stop("w-1") is False

    def test_removed_worker_is_forgotten(self, backend: Backend, clock: ManualClock) -> None:
        """A removed worker is no longer listed and cannot be asked to stop."""
        backend.heartbeat(worker_info(clock), 30.0)
        backend.remove_worker("w-1")
        assert backend.workers() == []
        assert backend.request_stop("w-1") is False

    def test_stop_request_does_not_outlive_the_worker(self, backend: Backend, clock: ManualClock) -> None:
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
        assert handle.render() == "fetch (completed) -> parse (failed) -> store (not executed)"
        [entry] = app.failed.list()
        assert (entry.job.task, entry.error.type) == ("parse", "Fail")

    def test_worker_fails_an_expired_job_as_job_expired(
        self, app: App, backend: Backend, clock: ManualClock
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
        self, app: App, backend: Backend, make_job: MakeJob
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
