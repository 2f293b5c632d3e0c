"""``jobchain jobs list|show|counts``: browse a queue's jobs by state (backends with Browse)."""

from __future__ import annotations

import shlex
from typing import Any

import click

from jobchain.app import App
from jobchain.browsing import BROWSABLE, MAX_LIMIT, order_key, parse_state
from jobchain.cli.common import (
    CliError,
    backend_option,
    config_option,
    json_option,
    open_app,
    private_backend_note,
    setup_logging,
)
from jobchain.cli.output import Column, cut, echo_json, fmt_time, json_text, print_table, printable
from jobchain.cli.status import job_json, show_job
from jobchain.model import JobRecord, JobState

__all__ = ["jobs"]

#: what the time column of a listing shows, per state (the listing's order)
_WHEN = {JobState.DELAYED: "due", JobState.QUEUED: "enqueued", JobState.RUNNING: "enqueued"}


def _open(ctx: click.Context, config: str | None, backend: str | None) -> App:
    setup_logging(ctx)
    parent = ctx.parent.params if ctx.parent is not None else {}
    return open_app(config or parent.get("config"), backend or parent.get("backend")).app


@click.group()
@backend_option
@config_option()
def jobs(backend: str | None, config: str | None) -> None:
    """Browse jobs: list a queue's jobs by state, show one, count them per state."""


@jobs.command("list")
@click.option("--queue", "-q", default="default", show_default=True, help="The queue to list.")
@click.option(
    "--state",
    "-s",
    default="ready",
    show_default=True,
    help="ready (queued), delayed, running, succeeded, failed or cancelled.",
)
@click.option("--task", "-t", default=None, help="Only this task's jobs.")
@click.option("--oldest", is_flag=True, help="Oldest first (default: newest first).")
@click.option(
    "--limit", "-n", type=click.IntRange(1, MAX_LIMIT), default=20, show_default=True, help="Jobs per page."
)
@click.option("--cursor", default=None, help="Continue after a page (the cursor a listing printed).")
@backend_option
@config_option()
@json_option
@click.pass_context
def list_(
    ctx: click.Context,
    queue: str,
    state: str,
    task: str | None,
    oldest: bool,
    limit: int,
    cursor: str | None,
    backend: str | None,
    config: str | None,
    as_json: bool,
) -> None:
    """List a queue's jobs in one state, a page at a time (running ones with their worker)."""
    try:
        wanted = parse_state(state)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    app = _open(ctx, config, backend)
    try:
        page = app.jobs.list(queue, wanted, task=task, limit=limit, cursor=cursor, oldest_first=oldest)
    except ValueError as exc:  # a cursor of another listing
        raise CliError(str(exc)) from None
    if as_json:
        echo_json(
            {
                "queue": queue,
                "state": wanted.value,
                "jobs": [job_json(r) for r in page.records],
                "cursor": page.cursor,
            }
        )
        return
    if not page.records:
        click.echo(f"no {wanted.value} jobs in queue {printable(queue)} on {app.backend_url}")
        _note(app)
        return
    _table(page.records, wanted)
    if page.cursor is not None:
        more = ["jobchain", "jobs", "list", "--queue", queue, "--state", wanted.value]
        more += ["--limit", str(limit), "--cursor", page.cursor]
        more += ["--task", task] if task is not None else []
        more += ["--oldest"] if oldest else []
        more += ["--backend", app.backend_url] if _given(ctx, "backend") else []
        click.echo(f"more: {printable(shlex.join(more))}", err=True)


def _given(ctx: click.Context, name: str) -> bool:
    """True if option ``name`` was given to the command or to ``jobs``."""
    parent = ctx.parent.params if ctx.parent is not None else {}
    return bool(ctx.params.get(name) or parent.get(name))


def _table(records: tuple[JobRecord, ...], state: JobState) -> None:
    when = _WHEN.get(state, "finished")
    last = {JobState.RUNNING: "worker", JobState.SUCCEEDED: "result"}.get(state, "arguments")
    if state in (JobState.FAILED, JobState.CANCELLED):
        last = "error"
    print_table(
        [Column("id"), Column("task"), Column("attempt", "right"), Column(when), Column(last)],
        [
            [
                r.job.id,
                printable(r.job.task),
                r.job.attempt,
                fmt_time(order_key(r)),
                printable(_last(r, state)),
            ]
            for r in records
        ],
    )


def _last(record: JobRecord, state: JobState) -> str:
    if state is JobState.RUNNING:
        return record.worker or "-"
    if state is JobState.SUCCEEDED:
        return _short(record.result)
    if state in (JobState.FAILED, JobState.CANCELLED):
        return "-" if record.error is None else cut(f"{record.error.type}: {record.error.message}", 60)
    return _short([*record.job.args, *(f"{k}={v}" for k, v in record.job.kwargs.items())])


def _short(value: Any) -> str:
    return cut(json_text(value), 60)


@jobs.command("show")
@click.argument("job_id", metavar="ID")
@click.option(
    "--tracebacks", is_flag=True, help="Print the traceback of every failed attempt (default: the last)."
)
@backend_option
@config_option()
@json_option
@click.pass_context
def show(
    ctx: click.Context, job_id: str, tracebacks: bool, backend: str | None, config: str | None, as_json: bool
) -> None:
    """One job: state, arguments, times, result or error, the worker running it, and its failed attempts.

    Each failed attempt is listed with its error, when it failed and the backoff
    before the next one (``--json``: each with its traceback).
    """
    app = _open(ctx, config, backend)
    record = app.jobs.get(job_id)
    if record is None:
        raise CliError(
            f"no job with id {printable(job_id)!r} on {app.backend_url}", hint=private_backend_note(app)
        )
    show_job(record, as_json, tracebacks=tracebacks)


@jobs.command("counts")
@click.option("--queue", "-q", default="default", show_default=True, help="The queue to count.")
@backend_option
@config_option()
@json_option
@click.pass_context
def counts(ctx: click.Context, queue: str, backend: str | None, config: str | None, as_json: bool) -> None:
    """How many of a queue's jobs are in each state."""
    app = _open(ctx, config, backend)
    found = app.jobs.counts(queue)
    if as_json:
        echo_json({"queue": queue, "counts": {s.value: found[s] for s in BROWSABLE}})
        return
    print_table([Column("state"), Column("jobs", "right")], [[s.value, found[s]] for s in BROWSABLE])


def _note(app: App) -> None:
    note = private_backend_note(app)
    if note:
        click.echo(note, err=True)
