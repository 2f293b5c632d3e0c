"""``jobchain run``: submit a workload, run it on W worker threads here, and report.

With no ``--config`` the workload is the reference one (seeded 10-60 ms
sleeps, see :mod:`jobchain.cli.workload`); with ``--config`` and ``--target``
it is the user's task, chain or group, ``--iterations`` times. One
:class:`jobchain.Worker` with ``--workers`` threads runs everything; the run
ends when every job it submitted has reached a final state (succeeded,
failed, or not executed behind a halted chain step). Ctrl-C (or SIGTERM)
stops it gracefully: running jobs finish, the rest is released, and the
report shows what was done.

With ``--processes P`` (a shared backend only) the ``--workers`` threads are
split over P worker processes (:mod:`jobchain.cli.processes`); this process
submits, waits for them all to be ready, starts them at once, follows their
counts and sums up their reports.
"""

from __future__ import annotations

import os
import socket
from typing import Any

import click

from jobchain.cli.common import (
    EXIT_INTERRUPTED,
    EXIT_TIMEOUT,
    CliError,
    CliState,
    backend_option,
    check_shareable,
    config_option,
    json_option,
    log_jobs,
    open_app,
    parse_args_json,
    processes_option,
    setup_logging,
)
from jobchain.cli.config import ConfigError, find_target
from jobchain.cli.execution import execute_pool, execute_worker
from jobchain.cli.output import console, echo_json, is_tty, plural
from jobchain.cli.processes import ChildSpec, ReferenceSpec, split_threads
from jobchain.cli.progress import ProgressDisplay
from jobchain.cli.report import build_report, render_report
from jobchain.cli.workload import build_reference, config_workload, workload_queues
from jobchain.worker import Worker

__all__ = ["run"]

_REFERENCE_ONLY = ("seed", "chain_length", "fail_rate", "attempts")


@click.command()
@click.option(
    "--workers",
    "-w",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="Worker threads running jobs (in all: split over --processes).",
)
@processes_option("sharing the --workers threads (W/P each)")
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
    processes: int,
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
    """Run a workload on WORKERS threads (here, or split over --processes) and report on it.

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
    if workers < processes:
        threads = f"--workers {workers} ({plural(workers, 'thread')})"
        raise click.UsageError(f"{threads} cannot be split over --processes {processes}")

    opened = open_app(config, backend, connect=False)
    app = opened.app
    check_shareable(app, processes)
    _ = app.backend  # unknown scheme, unreachable server: fail now, with the URL in the message
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
    display = _display(workload.jobs_total, as_json=as_json, quiet=quiet)
    if processes > 1:
        reference = None
        if opened.loaded is None:
            reference = ReferenceSpec(
                iterations=iterations,
                chain_length=chain_length,
                fail_rate=fail_rate,
                attempts=attempts,
                seed=seed,
            )
        fmt = (ctx.find_object(CliState) or CliState()).log_format
        base = f"run-{socket.gethostname()}-{os.getpid()}"
        specs = [
            ChildSpec(
                index=i,
                name=f"{base}-{i}",
                config=config,
                backend=backend,
                log_level=level,
                log_format=fmt,
                queues=queues,
                concurrency=threads,
                poll=0.1,
                slot_names=tuple(f"p{i}-worker-{t}" for t in range(1, threads + 1)),
                reference=reference,
                run_mode=True,
            )
            for i, threads in enumerate(split_threads(workers, processes), start=1)
        ]
        execution = execute_pool(app, specs, workload, display, timeout, workers)
    else:
        worker = Worker(
            app,
            queues=queues,
            concurrency=workers,
            slot_names=[f"worker-{i + 1}" for i in range(workers)],
            name=f"run-{socket.gethostname()}-{os.getpid()}",
            poll=0.1,
            progress_interval=0.2,
        )
        if display is not None:
            app.plugins.register(display, name="jobchain-cli-progress")
        try:
            execution = execute_worker(app, worker, workload, display, timeout)
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
        processes=processes,
    )
    if as_json:
        echo_json(report.to_json())
    else:
        render_report(report, quiet=quiet)
    app.close()
    if execution.failure is not None:
        raise CliError(f"{execution.failure}; the run was stopped")
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
