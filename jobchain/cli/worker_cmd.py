"""``jobchain worker``: a long-running consumer of a config's tasks.

SIGTERM or Ctrl-C asks it to stop: running jobs finish (up to ``--grace``
seconds), the ones it holds but has not started go back to the queue. A
second signal quits at once; leases then expire and other workers take the
jobs over, so nothing is lost either way. ``jobchain workers stop NAME`` asks
the same thing through the backend.

With ``--processes N`` this process supervises N worker processes (see
:mod:`jobchain.cli.processes`), each with ``--concurrency`` threads and named
``NAME-1`` ... ``NAME-N``: it passes a stop on to them, stops the others when
one dies and exits non-zero, and sums up what they did.

With ``--burst`` it stops by itself once its queues hold nothing ready,
delayed or in flight, and exits 0 (:meth:`jobchain.Worker.drain`).
"""

from __future__ import annotations

import os
import random
import signal
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click

from jobchain.capabilities import Stats, supports
from jobchain.cli.common import (
    AUTH_HINT,
    EXIT_INTERRUPTED,
    CliError,
    CliState,
    backend_option,
    check_shareable,
    config_option,
    is_private_backend,
    log_jobs,
    open_app,
    processes_option,
    setup_logging,
)
from jobchain.cli.metrics_serving import (
    check_metrics_options,
    metrics_options,
    serve_pool_metrics,
    serve_worker_metrics,
)
from jobchain.cli.output import plural, printable
from jobchain.cli.processes import ChildSpec, Pool
from jobchain.cli.report import worker_incidents
from jobchain.cli.schedules import start_scheduler
from jobchain.worker import Worker

__all__ = ["worker"]


def _csv(values: tuple[str, ...] | str | None) -> list[str]:
    if not values:
        return []
    items = [values] if isinstance(values, str) else list(values)
    return [part.strip() for item in items for part in item.split(",") if part.strip()]


def _labels(values: tuple[str, ...]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for item in _csv(values):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="'--labels'")
        labels[key.strip()] = value.strip()
    return labels


@click.command("worker")
@config_option(required=True)
@backend_option
@click.option("--queues", "-Q", metavar="A,B", help="Queues to take jobs from (default: every task's queue).")
@click.option(
    "--labels", "-l", metavar="K=V", multiple=True, help="Labels to advertise (repeatable, or k=v,k2=v2)."
)
@click.option(
    "--concurrency",
    "-j",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="Threads running jobs (in each process, with --processes).",
)
@processes_option("each with --concurrency threads, named NAME-1 ... NAME-P")
@click.option(
    "--async-concurrency",
    type=click.IntRange(min=1, max=10000),
    default=None,
    metavar="N",
    help="Jobs of `async def` tasks run at once on the worker's event loop (in each process) "
    "[default: 100]. The loop starts when a task is async or this is given.",
)
@click.option(
    "--loop-block-threshold",
    type=click.FloatRange(min=0, min_open=True),
    default=0.5,
    show_default=True,
    metavar="SECONDS",
    help="Log event_loop_blocked (with the task and job) when a coroutine holds the event loop this long.",
)
@click.option(
    "--prefetch",
    type=click.IntRange(min=1, max=1000),
    default=None,
    metavar="N",
    help="Jobs reserved per round trip (default: --concurrency). More saves round trips on short jobs; "
    "a job reserved waits, its lease kept, until a thread is free.",
)
@click.option("--name", "-n", help="Worker name, unique among live workers (default: host-pid-random).")
@click.option(
    "--lease",
    type=click.FloatRange(min=0, min_open=True),
    default=30.0,
    show_default=True,
    help="Seconds a job is held before another worker may take it (extended while it runs).",
)
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="Seconds running jobs get to finish when stopping.",
)
@click.option(
    "--abort-grace",
    type=click.FloatRange(min=0),
    default=None,
    metavar="SECONDS",
    help="With --processes: end a worker process whose job was cancelled and still runs SECONDS later "
    "(the job is recorded cancelled, the process's other jobs finish, a new process replaces it).",
)
@click.option(
    "--burst",
    is_flag=True,
    help="Work off what the queues hold (and what those jobs submit), then exit 0 once they are idle.",
)
@click.option(
    "--schedules",
    "with_schedules",
    is_flag=True,
    help="Also run a scheduler thread: submit the due slots of --config's schedules (any number of "
    "workers may: each slot is submitted once).",
)
@metrics_options
@click.pass_context
def worker(
    ctx: click.Context,
    config: str,
    backend: str | None,
    queues: str | None,
    labels: tuple[str, ...],
    concurrency: int,
    processes: int,
    async_concurrency: int | None,
    loop_block_threshold: float,
    prefetch: int | None,
    name: str | None,
    lease: float,
    grace: float,
    abort_grace: float | None,
    burst: bool,
    with_schedules: bool,
    metrics_port: int | None,
    metrics_host: str | None,
) -> None:
    """Run the tasks of --config from the backend until stopped (SIGTERM, Ctrl-C, `workers stop`)."""
    level = setup_logging(ctx, "info")
    label_map = _labels(labels)
    metrics_host = check_metrics_options(metrics_port, metrics_host)
    opened = open_app(config, backend, connect=False)
    app = opened.app
    check_shareable(app, processes)
    if burst and processes > 1:
        raise click.UsageError("--burst runs one worker process: leave out --processes")
    if with_schedules and (processes > 1 or burst):
        raise click.UsageError(
            "--schedules runs in a single worker process that does not --burst; "
            "beside --processes, run `jobchain scheduler`"
        )
    if abort_grace is not None and processes < 2:
        raise click.UsageError(
            "--abort-grace ends a worker process: it needs --processes 2 or more (a thread cannot be "
            "ended alone; tasks check jobchain.current_job().cancel_requested instead)"
        )
    _ = app.backend  # unknown scheme, unreachable server: fail now, with the URL in the message
    if burst and not supports(app.backend, Stats):
        app.close()
        raise CliError(f"--burst needs a backend that counts its queues (Stats); {app.backend_url} does not")
    if processes > 1:
        queue_list = tuple(_csv(queues) or app.queues)
        url = app.backend_url
        base = name or _default_base()
        fmt = (ctx.find_object(CliState) or CliState()).log_format
        specs = [
            ChildSpec(
                index=i,
                name=f"{base}-{i}",
                config=config,
                backend=backend,
                log_level=level,
                log_format=fmt,
                queues=queue_list,
                concurrency=concurrency,
                async_concurrency=async_concurrency,
                loop_block_threshold=loop_block_threshold,
                prefetch=prefetch,
                labels=label_map,
                lease=lease,
                grace=grace,
                abort_grace=abort_grace,
                metrics=metrics_port is not None,
            )
            for i in range(1, processes + 1)
        ]
        click.echo(
            f"worker {base}: {plural(processes, 'process')} x {plural(concurrency, 'thread')} · "
            f"queues {', '.join(queue_list)}"
            f" · {url} (Ctrl-C to stop)",
            err=True,
        )
        if metrics_port is None:
            app.close()  # the processes open their own
            _supervise(base, specs)
            return
        # before the children start: they inherit the directory they write their figures to
        pool_metrics = serve_pool_metrics(app, metrics_host, metrics_port)
        try:
            _supervise(base, specs, on_exit=pool_metrics.process_ended)
        finally:
            pool_metrics.close()
            app.close()
        return
    log_jobs(app, level)
    consumer = Worker(
        app,
        queues=_csv(queues) or None,
        concurrency=concurrency,
        async_concurrency=async_concurrency,
        loop_block_threshold=loop_block_threshold,
        prefetch=prefetch,
        name=name,
        labels=label_map,
        lease=lease,
    )
    if is_private_backend(app):
        click.echo(
            f"note: {app.backend_url} lives in this process: only jobs that {config} submits itself "
            "will run; use --backend to serve a shared backend",
            err=True,
        )
    server = None if metrics_port is None else serve_worker_metrics(app, metrics_host, metrics_port)
    try:
        timer = start_scheduler(app) if with_schedules else None
        with _stop_on_signals(consumer):
            consumer.start()  # a name held by a live worker: WorkerNameTakenError, one line, exit 1
            until = "until the queues are idle" if burst else "Ctrl-C to stop"
            click.echo(
                f"worker {consumer.name}: queues {', '.join(printable(q) for q in consumer.queues)} · "
                f"{plural(concurrency, 'thread')} · "
                + (f"{consumer.async_concurrency} async · " if consumer.runs_async else "")
                + f"{app.backend_url} ({until})",
                err=True,
            )
            try:
                while not consumer.stopping:
                    if not burst:
                        time.sleep(0.2)
                    elif consumer.drain(timeout=0.2):
                        break
            finally:
                if timer is not None:
                    timer.stop()
                clean = _stop(consumer, grace)
    finally:
        if server is not None:
            server.close()
    if consumer.fatal is not None:
        app.close()
        raise CliError(f"worker {consumer.name} stopped: {consumer.fatal}", hint=AUTH_HINT)
    counters = consumer.counters
    incidents = worker_incidents(counters.threads_died, counters.refused)
    click.echo(
        f"worker {consumer.name} stopped: {counters.done} succeeded, {counters.failed} failed, "
        f"{counters.retried} retried"
        + (f"; {incidents}" if incidents else "")
        + ("" if clean else "; some jobs were still running (their leases expire)"),
        err=True,
    )
    app.close()
    if consumer.name_lost is not None:
        raise CliError(f"stopped: another worker took the name: {consumer.name_lost}")


def _default_base() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{random.getrandbits(16):04x}"


def _supervise(base: str, specs: list[ChildSpec], *, on_exit: Callable[[int], None] | None = None) -> None:
    """Run the worker processes until they stop; exit non-zero if one failed.

    The signal handler only counts; the loop passes the signals on: the first
    as a graceful stop request, the next ones as SIGTERM (quit now).
    """
    pool = Pool(specs, on_exit=on_exit)
    signals = 0

    def handler(signum: int, frame: Any) -> None:
        nonlocal signals
        signals += 1
        what = signal.Signals(signum).name
        if signals == 1:
            click.echo(
                f"received {what}: the worker processes finish their running jobs (again to quit now)",
                err=True,
            )
        else:
            click.echo(
                "quitting now: jobs still running go back to the queue when their leases expire", err=True
            )

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    failure: str | None = None
    passed_on = 0
    try:
        pool.start()
        while pool.alive():
            time.sleep(0.05)
            while passed_on < signals:
                passed_on += 1
                if passed_on == 1:
                    pool.request_stop()
                else:
                    pool.signal_all(signal.SIGTERM)
            if failure is None and (failure := pool.failure()) is not None and signals < 2:
                click.echo(f"stopping the other worker processes: {failure}", err=True)
                pool.request_stop()
        pool.join()
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        pool.close()
    totals = pool.totals()
    unclean = "" if pool.clean() else "; some jobs were still running (their leases expire)"
    incidents = worker_incidents(totals.threads_died, totals.refused)
    click.echo(
        f"worker {base} stopped: {plural(len(specs), 'process')}, {totals.done} succeeded, "
        f"{totals.failed} failed, "
        f"{totals.retried} retried" + (f"; {incidents}" if incidents else "") + unclean,
        err=True,
    )
    if signals >= 2:
        raise click.exceptions.Exit(EXIT_INTERRUPTED)
    failure = failure or pool.failure()
    if failure is not None:
        raise CliError(f"{failure}; the other worker processes were stopped")


def _stop(consumer: Worker, grace: float) -> bool:
    try:
        return consumer.stop(timeout=grace)
    except KeyboardInterrupt:
        click.echo("quitting now: jobs still running go back to the queue when their leases expire", err=True)
        raise click.exceptions.Exit(EXIT_INTERRUPTED) from None


@contextmanager
def _stop_on_signals(consumer: Worker) -> Iterator[None]:
    """First SIGINT/SIGTERM: stop gracefully. Second: quit now."""
    signals = (signal.SIGINT, signal.SIGTERM)

    def handler(signum: int, frame: Any) -> None:
        if consumer.stopping:
            raise KeyboardInterrupt
        click.echo(
            f"received {signal.Signals(signum).name}: finishing running jobs (again to quit now)", err=True
        )
        consumer.request_stop()

    previous = {sig: signal.signal(sig, handler) for sig in signals}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
