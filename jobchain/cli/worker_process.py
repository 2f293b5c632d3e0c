"""One worker process of ``--processes``: what it is given, what it does, what it reports.

:func:`child_main` is the target multiprocessing's ``spawn`` context runs in a
fresh interpreter. It opens the App (the config, the backend, and for
``jobchain run`` the reference workload's tasks), runs one
:class:`jobchain.Worker` under the name it was given and talks to its parent
(:class:`jobchain.cli.processes.Pool`) over a pipe:

    child -> parent   ("ready",) · ("progress", counts, held) · ("final", counts, slots, clean)
                      · ("error", message)
    parent -> child   ("go",)   (``run`` only: start the worker now that every child is ready)
                      ("stop",) (stop gracefully)

The parent asks for a graceful stop over the pipe rather than with a signal:
a message sent while the child is still starting up (importing, connecting)
waits in the pipe, where a signal would kill it or be lost. The child ignores
SIGINT (a Ctrl-C on a terminal reaches the whole process group; the parent
decides) and treats SIGTERM as the single-process worker treats SIGINT and
SIGTERM: the first stops gracefully, a second quits at once. The parent sends
SIGTERM for "quit now", and a service manager may send it to every process
of the group. If the pipe closes (the parent died) the child stops gracefully.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

import click
from attrs import define, field, frozen

if TYPE_CHECKING:
    from jobchain.app import App
    from jobchain.worker import Worker

__all__ = ["ABORTED_EXIT", "ChildSpec", "ReferenceSpec", "Totals", "child_main", "send"]

#: the exit code of a child that ended itself to abort cancelled jobs (its parent starts another)
ABORTED_EXIT = 3


#: how often a ``run`` child looks for new counts to report to the parent
_PROGRESS_EVERY = 0.005


@frozen(kw_only=True)
class ReferenceSpec:
    """The settings of ``jobchain run``'s reference workload: a child declares the same tasks."""

    iterations: int
    chain_length: int
    fail_rate: float
    attempts: int
    seed: int


@frozen(kw_only=True)
class ChildSpec:
    """Everything one worker process needs (pickled to the child by ``spawn``)."""

    index: int
    name: str
    config: str | None
    backend: str | None
    log_level: str
    log_format: str
    queues: tuple[str, ...] | None
    concurrency: int
    #: deliveries reserved per batch (None: the worker's default, its concurrency)
    prefetch: int | None = None
    #: coroutine jobs run at once on the process's event loop (None: the worker's default)
    async_concurrency: int | None = None
    loop_block_threshold: float = 0.5
    labels: dict[str, str] = field(factory=dict)
    lease: float = 30.0
    grace: float = 30.0
    poll: float = 1.0
    slot_names: tuple[str, ...] | None = None
    reference: ReferenceSpec | None = None
    #: ``run``: wait for the parent's "go" before starting, report progress, print nothing
    run_mode: bool = False
    #: hard abort: end this process when a job asked to stop still runs this many seconds later
    abort_grace: float | None = None
    #: register a JobMetrics (prometheus_client's multi-process mode: the parent set its directory)
    metrics: bool = False


@define
class Totals:
    """Counts of settled outcomes (and of the worker's own incidents), one process's or summed over all."""

    done: int = 0
    failed: int = 0
    retried: int = 0
    skipped: int = 0
    rejected: int = 0
    #: pool threads that died and were replaced
    threads_died: int = 0
    #: outcomes the backend refused (not an outage)
    refused: int = 0

    def to_wire(self) -> tuple[int, ...]:
        return (
            self.done,
            self.failed,
            self.retried,
            self.skipped,
            self.rejected,
            self.threads_died,
            self.refused,
        )

    @classmethod
    def from_wire(cls, raw: Sequence[int]) -> Totals:
        return cls(*raw)

    @classmethod
    def of(cls, worker: Worker) -> Totals:
        c = worker.counters
        return cls(c.done, c.failed, c.retried, c.skipped, c.rejected, c.threads_died, c.refused)

    def add(self, other: Totals) -> None:
        self.done += other.done
        self.failed += other.failed
        self.retried += other.retried
        self.skipped += other.skipped
        self.rejected += other.rejected
        self.threads_died += other.threads_died
        self.refused += other.refused


class _Stopper:
    """SIGTERM in a child: the first asks the worker to stop, a second quits at once."""

    def __init__(self) -> None:
        self.requested = False
        self.worker: Worker | None = None

    def handler(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        if self.worker is not None:
            self.worker.request_stop()

    def stop(self) -> None:
        self.requested = True
        if self.worker is not None:
            self.worker.request_stop()


def child_main(spec: ChildSpec, conn: Connection) -> None:
    """The body of a worker process (the target multiprocessing runs in the child)."""
    stopper = _Stopper()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, stopper.handler)
    try:
        code = _serve(spec, conn, stopper)
    except KeyboardInterrupt:
        if not spec.run_mode:
            click.echo(
                f"worker {spec.name}: quitting now: jobs still running go back to the queue "
                "when their leases expire",
                err=True,
            )
        code = 130
    except Exception as exc:  # the worker could not run (a bug, or a backend error at start)
        send(conn, "error", _describe(exc))
        click.echo(f"worker {spec.name}: {_describe(exc)}", err=True)
        code = 1
    conn.close()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # skip interpreter teardown: daemon worker threads may still hold locks


def send(conn: Connection, *message: Any) -> bool:
    try:
        conn.send(message)
    except (OSError, EOFError):  # the parent went away
        return False
    return True


def _serve(spec: ChildSpec, conn: Connection, stopper: _Stopper) -> int:
    from jobchain.cli.common import log_jobs, open_app
    from jobchain.cli.logs import configure_logging
    from jobchain.cli.output import plural
    from jobchain.worker import Worker

    configure_logging(spec.log_level, spec.log_format)
    app: App | None = None
    try:
        app = open_app(spec.config, spec.backend).app
        if spec.reference is not None:
            from jobchain.cli.workload import build_reference

            ref = spec.reference
            build_reference(
                app,
                iterations=ref.iterations,
                chain_length=ref.chain_length,
                fail_rate=ref.fail_rate,
                attempts=ref.attempts,
                seed=ref.seed,
            )
        log_jobs(app, spec.log_level)
        if spec.metrics:
            from jobchain.metrics import MULTIPROC_ENV, JobMetrics

            if not os.environ.get(MULTIPROC_ENV):  # a bug in the parent: the figures would be lost
                raise RuntimeError(f"metrics asked for but {MULTIPROC_ENV} is not set")
            app.plugins.register(JobMetrics())
        consumer = Worker(
            app,
            queues=spec.queues,
            concurrency=spec.concurrency,
            async_concurrency=spec.async_concurrency,
            loop_block_threshold=spec.loop_block_threshold,
            prefetch=spec.prefetch,
            name=spec.name,
            labels=spec.labels,
            lease=spec.lease,
            poll=spec.poll,
            slot_names=spec.slot_names,
        )
    except Exception as exc:
        send(conn, "error", _describe(exc))
        if app is not None:
            app.close()
        return 1
    stopper.worker = consumer
    send(conn, "ready")
    if spec.run_mode and not _wait_for_go(conn, stopper):
        send(conn, "final", Totals().to_wire(), [], True)
        app.close()
        return 0
    if not spec.run_mode:
        click.echo(
            f"worker {consumer.name} (pid {os.getpid()}): queues {', '.join(consumer.queues)} · "
            f"{spec.concurrency} thread{'' if spec.concurrency == 1 else 's'}",
            err=True,
        )
    consumer.start()
    if stopper.requested:
        consumer.request_stop()
    reported: tuple[Any, ...] = ()
    aborted: list[str] = []
    while not consumer.stopping:
        message = _receive(conn, _PROGRESS_EVERY if spec.run_mode else 0.2)
        if message == ("gone",):
            click.echo(f"worker {consumer.name}: the supervising process is gone: stopping", err=True)
        if message is not None:  # "stop", or the parent is gone
            stopper.stop()
        if spec.abort_grace is not None and not aborted:
            aborted = consumer.abort_overdue(spec.abort_grace)
            if aborted:
                click.echo(
                    f"worker {consumer.name}: {plural(len(aborted), 'job')} cancelled "
                    f"{spec.abort_grace:g}s ago still running ({', '.join(aborted[:5])}): recorded "
                    "cancelled; this process ends when its other jobs are done, and another replaces it",
                    err=True,
                )
                stopper.stop()
        if spec.run_mode:  # the parent ends the run on these counts: send each change at once
            progress = (Totals.of(consumer).to_wire(), consumer.held())
            if progress != reported:
                reported = progress
                send(conn, "progress", *progress)
    clean = consumer.stop(timeout=spec.grace)
    ran = [*consumer.slots, *([consumer.async_slot] if consumer.async_slot.jobs else [])]  # (the loop's row)
    slots = [(s.name, s.jobs, s.succeeded, s.retries, s.failures, s.busy_seconds) for s in ran]
    totals = Totals.of(consumer)
    send(conn, "final", totals.to_wire(), slots, clean)
    if consumer.fatal is not None:  # the backend refused the credentials: an error, not a stop
        send(conn, "error", _describe(consumer.fatal))
        click.echo(f"worker {consumer.name} stopped: {consumer.fatal}", err=True)
        app.close()
        return 1
    if not spec.run_mode:
        click.echo(
            f"worker {consumer.name} stopped: {totals.done} succeeded, {totals.failed} failed, "
            f"{totals.retried} retried"
            + ("" if clean else "; some jobs were still running (their leases expire)"),
            err=True,
        )
    app.close()
    return ABORTED_EXIT if aborted else 0


def _wait_for_go(conn: Connection, stopper: _Stopper) -> bool:
    while not stopper.requested:
        message = _receive(conn, 0.1)
        if message == ("go",):
            return True
        if message is not None:
            return False
    return False


def _receive(conn: Connection, timeout: float) -> tuple[Any, ...] | None:
    """The parent's next message within ``timeout``, None if none came, ("gone",) if the pipe is broken."""
    try:
        if not conn.poll(timeout):
            return None
        message = conn.recv()
    except Exception:  # closed, or garbled by a sender interrupted mid-message: stop either way
        return ("gone",)
    return message if isinstance(message, tuple) else ("gone",)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, click.ClickException):
        return exc.format_message()
    return f"{type(exc).__name__}: {exc}"
