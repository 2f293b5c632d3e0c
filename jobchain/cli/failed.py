"""``jobchain failed list|show|retry|purge``: the failed queue."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

from jobchain.app import App
from jobchain.capabilities import FailedQueue, require
from jobchain.cli.common import (
    CliError,
    backend_option,
    config_option,
    json_option,
    open_app,
    private_backend_note,
    setup_logging,
)
from jobchain.cli.output import Column, call_text, cut, echo_json, fmt_time, json_text, print_table, printable
from jobchain.cli.status import attempts_table
from jobchain.errors import NotInFailedQueueError
from jobchain.model import FailedEntry

__all__ = ["failed"]

F = TypeVar("F", bound=Callable[..., Any])


def _where(fn: F) -> F:
    return backend_option(config_option()(fn))


def _open(ctx: click.Context, config: str | None, backend: str | None) -> App:
    setup_logging(ctx)
    app = open_app(config, backend).app
    require(app.backend, FailedQueue)  # a one-line error before anything is shown or asked
    return app


def _note(app: App) -> None:
    note = private_backend_note(app)
    if note:
        click.echo(note, err=True)


def _entry_json(entry: FailedEntry, *, traceback: bool = False) -> dict[str, Any]:
    job = entry.job
    error = entry.error.to_wire()
    if not traceback:
        error.pop("traceback", None)
    return {
        "id": job.id,
        "task": job.task,
        "queue": job.queue,
        "attempt": job.attempt,
        "args": list(job.args),
        "kwargs": dict(job.kwargs),
        "enqueued_at": job.enqueued_at,
        "failed_at": entry.failed_at,
        "chain": None if job.chain is None else {"id": job.chain.chain_id, "step": job.chain.step + 1},
        "error": error,
        "raw": entry.raw,
    }


@click.group()
def failed() -> None:
    """The failed queue: jobs that failed for good, with their errors."""


@failed.command("list")
@click.option("--task", metavar="NAME", help="Only this task's jobs.")
@click.option("--queue", metavar="NAME", help="Only this queue's jobs.")
@click.option(
    "--limit", type=click.IntRange(min=1), default=100, show_default=True, help="Show at most this many."
)
@click.option(
    "--offset",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Start at this position of the failed queue (a previous page's 'next' offset).",
)
@click.option("--all", "all_", is_flag=True, help="Show every entry (no --limit).")
@_where
@json_option
@click.pass_context
def list_(
    ctx: click.Context,
    task: str | None,
    queue: str | None,
    limit: int,
    offset: int,
    all_: bool,
    backend: str | None,
    config: str | None,
    as_json: bool,
) -> None:
    """List failed jobs, oldest first, a page at a time (--limit, --offset) or --all."""
    app = _open(ctx, config, backend)
    if all_:
        entries: Sequence[FailedEntry] = list(app.failed.iter(task=task, queue=queue, offset=offset))
        next_offset = None
    else:
        page = app.failed.list(task=task, queue=queue, limit=limit, offset=offset)
        entries, next_offset = page, page.next_offset
    more = (
        f"more failed jobs follow: add --offset {next_offset} for the next page, or --all"
        if next_offset is not None
        else None
    )
    if as_json:
        echo_json([_entry_json(e) for e in entries])
        if more:
            click.echo(more, err=True)
        return
    if not entries:
        click.echo("the failed queue is empty" if task is None and queue is None else "no failed jobs match")
        _note(app)
        return
    print_table(
        [
            Column("job id"),
            Column("task"),
            Column("queue"),
            Column("attempts", "right"),
            Column("failed at"),
            Column("error"),
        ],
        [
            [e.job.id, e.job.task, e.job.queue, e.job.attempt, fmt_time(e.failed_at), _error(e)]
            for e in entries
        ],
    )
    if more:
        total = len(app.failed) if task is None and queue is None else None
        of = f" of {total}" if total is not None else ""
        click.echo(f"{len(entries)} shown{of}; {more}")


def _error(entry: FailedEntry, limit: int = 80) -> str:
    return cut(f"{entry.error.type}: {entry.error.message}".splitlines()[0], limit)


@failed.command("show")
@click.argument("id")
@_where
@json_option
@click.pass_context
def show(ctx: click.Context, id: str, backend: str | None, config: str | None, as_json: bool) -> None:
    """Show one failed job: arguments, error and traceback, and its earlier attempts that failed."""
    app = _open(ctx, config, backend)
    entry = app.failed.show(id)
    if entry is None:
        raise CliError(
            f"no job {id!r} in the failed queue of {app.backend_url}", hint=private_backend_note(app)
        )
    record = app.jobs.get(id)
    errors = () if record is None else record.errors
    if as_json:
        echo_json({**_entry_json(entry, traceback=True), "errors": [e.to_wire() for e in errors]})
        return
    job = entry.job
    rows = [
        ("job", job.id),
        ("task", job.task),
        ("queue", job.queue),
        ("attempts", str(job.attempt)),
        ("arguments", call_text(job.args, job.kwargs, limit=None)),
        ("enqueued", fmt_time(job.enqueued_at)),
        ("failed", fmt_time(entry.failed_at)),
        ("error", f"{entry.error.type}: {entry.error.message}"),
    ]
    if job.chain is not None:
        rows.append(("chain", f"{job.chain.chain_id} (step {job.chain.step + 1}; retry resumes it)"))
    if entry.raw is not None:
        rows.append(("stored", f"{json_text(entry.raw)} (unreadable: cannot be retried)"))
    width = max(len(k) for k, _ in rows) + 2
    for key, value in rows:
        click.echo(f"{key:<{width}}{printable(value)}")
    if len(errors) > 1:  # the attempts before the last one, which the error line shows
        click.echo()
        attempts_table(errors)
    if entry.error.traceback:
        click.echo()
        click.echo(entry.error.traceback.rstrip())


@failed.command("retry")
@click.argument("ids", nargs=-1, metavar="[ID]...")
@click.option("--all", "all_", is_flag=True, help="Re-drive every failed job.")
@click.option("--task", metavar="NAME", help="Re-drive every failed job of this task.")
@_where
@json_option
@click.pass_context
def retry(
    ctx: click.Context,
    ids: tuple[str, ...],
    all_: bool,
    task: str | None,
    backend: str | None,
    config: str | None,
    as_json: bool,
) -> None:
    """Re-drive failed jobs (IDs, --task NAME or --all): attempts reset, chains resume."""
    given = sum([bool(ids), all_, task is not None])
    if given != 1:
        raise click.UsageError("give job IDs, --task NAME or --all (one of them)")
    app = _open(ctx, config, backend)
    try:
        moved = app.failed.redrive(list(ids), task=task, all=all_)
        missing: list[str] = []
    except NotInFailedQueueError as exc:  # nothing moved, unless a purge raced the re-drive
        moved, missing = list(exc.moved), list(exc.job_ids)
    if as_json:
        echo_json({"redriven": moved, "not_found": missing})
    else:
        click.echo(f"re-driven {len(moved)} job{'s' if len(moved) != 1 else ''}")
        for job_id in moved:
            click.echo(f"  {job_id}")
    if missing:
        what = "" if moved else "; nothing was re-driven"
        raise CliError(f"not in the failed queue: {', '.join(missing)}{what}", hint=private_backend_note(app))


@failed.command("purge")
@click.argument("ids", nargs=-1, metavar="[ID]...")
@click.option("--task", metavar="NAME", help="Only this task's failed jobs.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask before deleting everything.")
@_where
@click.pass_context
def purge(
    ctx: click.Context,
    ids: tuple[str, ...],
    task: str | None,
    yes: bool,
    backend: str | None,
    config: str | None,
) -> None:
    """Delete failed jobs: the IDs given, a task's, or (after asking) all of them."""
    app = _open(ctx, config, backend)
    if ids and task is not None:
        raise click.UsageError("give job IDs or --task, not both")
    if task is not None:
        targets: list[str] | None = [e.job.id for e in app.failed.iter(task=task)]
    elif ids:
        targets = list(ids)
    else:
        targets = None
        count = len(app.failed)
        if count and not yes:
            if not sys.stdin.isatty():
                raise CliError(f"this deletes all {count} failed jobs; add --yes to confirm")
            click.confirm(f"delete all {count} failed jobs on {app.backend_url}?", abort=True, err=True)
    removed = app.failed.purge(targets)
    click.echo(f"purged {removed} failed job{'s' if removed != 1 else ''}")
