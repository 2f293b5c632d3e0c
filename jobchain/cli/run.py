"""``jobchain run``: submit a workload, run it on W worker threads here, and report.

With no ``--config`` the workload is the reference one (seeded 10-60 ms
sleeps, see :mod:`jobchain.cli.workload`); with ``--config`` and ``--target``
it is the user's task, chain or group, ``--iterations`` times. One
:class:`jobchain.Worker` with ``--workers`` threads runs everything; the run
ends when every job it submitted has reached a final state (succeeded,
failed, or not executed behind a halted chain step). Ctrl-C (or SIGTERM)
stops it gracefully: running jobs finish, the rest is released, and the
report shows what was done.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import click
from attrs import define

from jobchain.app import App
from jobchain.cli.common import (
    EXIT_INTERRUPTED,
    EXIT_TIMEOUT,
    CliError,
    backend_option,
    config_option,
    json_option,
    log_jobs,
    open_app,
    parse_args_json,
    setup_logging,
)
from jobchain.cli.config import ConfigError, find_target
from jobchain.cli.output import console, echo_json, is_tty
from jobchain.cli.progress import ProgressDisplay
from jobchain.cli.report import build_report, render_report
from jobchain.cli.workload import Workload, build_reference, config_workload, workload_queues
from jobchain.handles import ChainHandle, JobHandle
from jobchain.worker import Worker

__all__ = ["run"]

_REFERENCE_ONLY = ("seed", "chain_length", "fail_rate", "attempts")

Handle = JobHandle | ChainHandle


@define
class Execution:
    worker: Worker
    handles: list[Handle]
    wall: float
    interrupted: bool
    timed_out: bool


@click.command()
@click.option(
    "--workers",
    "-w",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="Worker threads running jobs.",
)
@click.option(
    "--iterations",
    "-n",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Jobs (or chains) to submit.",
)
@click.option(
    "--seed", type=int, default=7, show_default=True, help="Seed of the sleeps and injected failures."
)
@click.option(
    "--chain-length",
    "-k",
    type=click.IntRange(1, 100),
    default=1,
    show_default=True,
    help="Make each iteration a chain of K sleep steps.",
)
@click.option(
    "--fail-rate",
    type=click.FloatRange(0.0, 1.0),
    default=0.0,
    show_default=True,
    help="Probability that a step fails (it is retried; a share of those fail for good).",
)
@click.option(
    "--attempts",
    type=click.IntRange(1, 20),
    default=3,
    show_default=True,
    help="Runs per step of the reference workload, the first included (its retry policy).",
)
@config_option(help="Run a task, chain or group from this config (FILE_OR_MODULE[:APP]) instead.")
@click.option("--target", "-t", metavar="NAME", help="The task, chain or group of --config to run.")
@click.option(
    "--args",
    "args_json",
    metavar="JSON",
    help="Arguments for each submission of --target: a JSON array, object (keywords) or value.",
)
@backend_option
@json_option
@click.option("--quiet", "-q", is_flag=True, help="No progress display; a one-line summary.")
@click.option(
    "--examples",
    type=click.IntRange(0, 100),
    default=5,
    show_default=True,
    help="How many chains to show in the report.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="Stop (as Ctrl-C does) if the run takes longer.",
)
@click.pass_context
def run(
    ctx: click.Context,
    workers: int,
    iterations: int,
    seed: int,
    chain_length: int,
    fail_rate: float,
    attempts: int,
    config: str | None,
    target: str | None,
    args_json: str | None,
    backend: str | None,
    as_json: bool,
    quiet: bool,
    examples: int,
    timeout: float | None,
) -> None:
    """Run a workload on WORKERS threads in this process and report on it.

    With no --config: the reference workload, ITERATIONS jobs that each sleep
    a seeded random 10-60 ms (chains of --chain-length steps, failures
    injected with --fail-rate). With --config and --target: your task, chain
    or group, ITERATIONS times.
    """
    level = setup_logging(ctx, "warning")
    if config is None:
        for name in ("target", "args_json"):
            if ctx.params.get(name) is not None:
                flag = "--target" if name == "target" else "--args"
                raise click.UsageError(f"{flag} needs --config (the module that defines it)")
    else:
        given = [
            name
            for name in _REFERENCE_ONLY
            if ctx.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE
        ]
        if given:
            flags = ", ".join("--" + name.replace("_", "-") for name in given)
            verb = "applies" if len(given) == 1 else "apply"
            raise click.UsageError(f"{flags} {verb} to the reference workload, not to --config targets")

    opened = open_app(config, backend)
    app = opened.app
    log_jobs(app, level)
    settings: dict[str, Any]
    if opened.loaded is None:
        workload = build_reference(
            app,
            iterations=iterations,
            chain_length=chain_length,
            fail_rate=fail_rate,
            attempts=attempts,
            seed=seed,
        )
        settings = {"chain_length": chain_length, "fail_rate": fail_rate, "attempts": attempts, "seed": seed}
        target_label = None
        ideal = None if workload.planned_busy is None else workload.planned_busy / workers
    else:
        if not target:
            raise ConfigError(
                f"--config needs --target NAME: what to run from {opened.loaded.source}",
                hint=f"available: {opened.loaded.describe_targets()}",
            )
        found = find_target(opened.loaded, target)
        workload = config_workload(found, target, iterations, parse_args_json(args_json, "--args"))
        settings = {"config": config, "args": args_json}
        target_label = target
        ideal = None

    queues = workload_queues(app, workload.targets)
    worker = Worker(
        app,
        queues=queues,
        concurrency=workers,
        slot_names=[f"worker-{i + 1}" for i in range(workers)],
        name=f"run-{socket.gethostname()}-{os.getpid()}",
        poll=0.1,
        progress_interval=0.2,
    )
    display = _display(workload.jobs_total, as_json=as_json, quiet=quiet)
    if display is not None:
        app.plugins.register(display, name="jobchain-cli-progress")
    try:
        execution = _execute(app, worker, workload, display, timeout)
    finally:
        if display is not None:
            app.plugins.unregister(display)

    report = build_report(
        app=app,
        worker=execution.worker,
        handles=execution.handles,
        wall=execution.wall,
        iterations=iterations,
        jobs_total=workload.jobs_total,
        workload=workload.description,
        target=target_label,
        interrupted=execution.interrupted,
        examples=examples,
        ideal_seconds=ideal,
        settings=settings,
    )
    if as_json:
        echo_json(report.to_json())
    else:
        render_report(report, quiet=quiet)
    app.close()
    if execution.timed_out:
        raise CliError(f"the run did not finish within {timeout:g}s", exit_code=EXIT_TIMEOUT)
    if execution.interrupted:
        click.echo("interrupted: the report shows what had finished", err=True)
        ctx.exit(EXIT_INTERRUPTED)


def _display(total: int, *, as_json: bool, quiet: bool) -> ProgressDisplay | None:
    if quiet:
        return None
    if as_json or not is_tty():
        return ProgressDisplay(total, mode="plain")
    return ProgressDisplay(total, mode="live", console=console())


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """Let SIGTERM stop the run the way Ctrl-C does."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _execute(
    app: App, worker: Worker, workload: Workload, display: ProgressDisplay | None, timeout: float | None
) -> Execution:
    handles: list[Handle] = []
    interrupted = timed_out = False
    wall = 0.0
    with _sigterm_interrupts():
        handles = app.submit_many(workload.targets)
        worker.expect(workload.jobs_total)
        if display is not None:
            display.start()
        try:
            t0 = time.perf_counter()
            try:
                worker.start()
                finished_at = _wait(worker, handles, workload.jobs_total, timeout)
                timed_out = interrupted = finished_at is None
                wall = (finished_at or time.perf_counter()) - t0
            except KeyboardInterrupt:
                interrupted = True
            if timed_out:
                click.echo("time is up (--timeout): stopping", err=True)
            _stop(worker, interrupted and not timed_out)
            if interrupted:  # the jobs that were running finished during stop(): count their time
                wall = time.perf_counter() - t0
        finally:
            if display is not None:
                c = worker.counters
                left = max(0, workload.jobs_total - c.done - c.failed - c.skipped)
                rate = (c.done + c.failed) / wall if wall > 0 else 0.0
                display.update(done=c.done, failed=c.failed, left=left, rate=rate)
                display.stop()
    return Execution(worker=worker, handles=handles, wall=wall, interrupted=interrupted, timed_out=timed_out)


def _stop(worker: Worker, interrupted: bool) -> None:
    if interrupted:
        click.echo("stopping: running jobs finish, the rest is released (Ctrl-C again to quit now)", err=True)
    try:
        worker.stop(timeout=30)
    except KeyboardInterrupt:
        click.echo("interrupted again: quitting without waiting for running jobs", err=True)
        raise click.exceptions.Exit(EXIT_INTERRUPTED) from None


def _wait(worker: Worker, handles: Sequence[Handle], total: int, timeout: float | None) -> float | None:
    """Block until every submitted job reached a final state; return when, or None on ``timeout``.

    The worker's counters say when that happened (not-executed chain steps
    count as final) and the submitted records confirm it. Should the counts
    get there early (someone else's jobs in a shared queue were counted) the
    records decide; should they never get there, a worker with nothing to do
    and nothing held ends the wait too.
    """
    counters = worker.counters
    deadline = None if timeout is None else time.monotonic() + timeout
    next_check = time.monotonic() + 0.25
    idle_checks = 0
    reached = False
    while True:
        if not reached and counters.done + counters.failed + counters.skipped >= total:
            finished_at = time.perf_counter()
            if _all_final(worker, handles):
                return finished_at
            reached = True
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            return None
        if now >= next_check:
            next_check = now + 0.25
            if reached and _all_final(worker, handles):
                return time.perf_counter()
            idle_checks = idle_checks + 1 if worker.drain(timeout=0) else 0
            if idle_checks >= 2:
                return time.perf_counter()
        time.sleep(0.002)


def _all_final(worker: Worker, handles: Sequence[Handle]) -> bool:
    backend = worker.backend
    for handle in handles:
        if isinstance(handle, JobHandle):
            record = backend.get_job(handle.id)
            if record is None or not record.state.finished:
                return False
        else:
            chain = backend.get_chain(handle.id)
            if chain is None or not chain.finished:
                return False
    return True
