"""``jobchain status``: queue depths per queue, or one job or chain with every step."""

from __future__ import annotations

from typing import Any

import click
from rich.markup import escape

from jobchain.app import App
from jobchain.capabilities import WorkerRegistry, supports
from jobchain.cli.common import (
    CliError,
    backend_option,
    config_option,
    json_option,
    open_app,
    private_backend_note,
    setup_logging,
)
from jobchain.cli.output import (
    Column,
    call_text,
    console,
    cut,
    echo_json,
    fmt_seconds,
    fmt_time,
    is_tty,
    json_text,
    print_table,
    printable,
    state_style,
)
from jobchain.cli.queues import queue_rows
from jobchain.model import ChainRecord, ErrorInfo, JobRecord

__all__ = ["attempts_table", "job_json", "show_job", "status"]


@click.command()
@click.argument("id", required=False, metavar="[ID]")
@backend_option
@config_option()
@json_option
@click.pass_context
def status(
    ctx: click.Context, id: str | None, backend: str | None, config: str | None, as_json: bool
) -> None:
    """Queue depths (ready, delayed, in flight, failed) per queue; with ID, one job or chain."""
    setup_logging(ctx)
    app = open_app(config, backend).app
    if id is None:
        _queues(app, as_json)
    else:
        _one(app, id, as_json)


def _queues(app: App, as_json: bool) -> None:
    rows = queue_rows(app)
    stats = [s for s, _ in rows]
    any_paused = any(paused for _, paused in rows)
    # the worker count is a footnote: a backend without a worker registry still shows its queues
    live = app.workers() if supports(app.backend, WorkerRegistry) else None
    if as_json:
        echo_json(
            {
                "backend": app.backend_url,
                "queues": [
                    {
                        "queue": s.queue,
                        "ready": s.ready,
                        "delayed": s.delayed,
                        "in_flight": s.in_flight,
                        "failed": s.failed,
                        "paused": paused,
                    }
                    for s, paused in rows
                ],
                "workers": None if live is None else len(live),
                # in flight, waiting for a rate or concurrency limit (as of each worker's last heartbeat)
                "held": None if live is None else sum(w.held for w in live),
            }
        )
        return
    if not stats:
        click.echo(f"no queues on {app.backend_url} yet")
        _note(app)
    else:
        # a column for the paused queues, only when there are some (the usual table is unchanged)
        state = [Column("state")] if any_paused else []
        print_table(
            [
                Column("queue"),
                Column("ready", "right"),
                Column("delayed", "right"),
                Column("in flight", "right"),
                Column("failed", "right"),
                *state,
            ],
            [
                [s.queue, s.ready, s.delayed, s.in_flight, s.failed, *["paused" if p else "-"][: len(state)]]
                for s, p in rows
            ],
            footer=[
                "total",
                sum(s.ready for s in stats),
                sum(s.delayed for s in stats),
                sum(s.in_flight for s in stats),
                sum(s.failed for s in stats),
                *([""] if state else []),
            ],
        )
    if live is not None:
        held = sum(w.held for w in live)
        waiting = f"; {held} in flight held by a rate or concurrency limit" if held else ""
        click.echo(f"{len(live)} live worker{'s' if len(live) != 1 else ''} on {app.backend_url}{waiting}")


def _one(app: App, id: str, as_json: bool) -> None:
    chain = app.chain(id).record()
    if chain is not None:
        _show_chain(app, chain, as_json)
        return
    job = app.backend.get_job(id)
    if job is not None:
        _show_job(job, as_json)
        return
    raise CliError(f"no job or chain with id {id!r} on {app.backend_url}", hint=private_backend_note(app))


def _note(app: App) -> None:
    note = private_backend_note(app)
    if note:
        click.echo(note, err=True)


def _error_text(error: ErrorInfo | None) -> str:
    return "" if error is None else f"{error.type}: {error.message}"


def _duration(start: float | None, end: float | None) -> str:
    return "-" if start is None or end is None else fmt_seconds(end - start)


def _job_json(record: JobRecord, *, attempts: bool = False) -> dict[str, Any]:
    """A job's JSON form; ``attempts``: with its failed attempts' errors (tracebacks included)."""
    job = record.job
    out = {
        "id": job.id,
        "task": job.task,
        "queue": job.queue,
        "priority": job.priority,
        "state": record.state.value,
        "attempt": job.attempt,
        "args": list(job.args),
        "kwargs": dict(job.kwargs),
        "enqueued_at": job.enqueued_at,
        "started_at": record.started_at,
        "finished_at": record.finished_at,
        "result": record.result,
        "error": None if record.error is None else record.error.to_wire(),
        "chain": None if job.chain is None else {"id": job.chain.chain_id, "step": job.chain.step + 1},
        "worker": record.worker,
    }
    if attempts:
        out["errors"] = [error.to_wire() for error in record.errors]
    return out


def _show_job(record: JobRecord, as_json: bool, *, tracebacks: bool = False) -> None:
    """One job, as ``status ID`` and ``jobs show ID`` print it, with its failed attempts.

    The traceback of a failed job's last attempt is printed; ``tracebacks``
    prints every attempt's instead.
    """
    if as_json:
        echo_json({"kind": "job", **_job_json(record, attempts=True)})
        return
    job = record.job
    rows = [
        ("job", job.id),
        ("task", job.task),
        ("state", record.state.value),
        ("queue", f"{job.queue} (priority {job.priority})"),
        ("attempt", str(job.attempt)),
        ("arguments", call_text(job.args, job.kwargs)),
        ("enqueued", fmt_time(job.enqueued_at)),
        ("started", fmt_time(record.started_at)),
        ("finished", fmt_time(record.finished_at)),
        ("took", _duration(record.started_at, record.finished_at)),
    ]
    if record.worker is not None:
        rows.append(("worker", record.worker))
    if job.chain is not None:
        rows.append(("chain", f"{job.chain.chain_id} step {job.chain.step + 1}"))
    if record.result is not None:
        rows.append(("result", _short(json_text(record.result))))
    if record.error is not None:
        rows.append(("error", _error_text(record.error)))
    _key_values(rows, state=record.state.value)
    if record.errors:
        click.echo()
        _attempts(record.errors)
    if tracebacks:
        for error in record.errors:
            click.echo()
            click.echo(printable(f"attempt {error.attempt} ({_error_text(error)}):"))
            click.echo(_traceback_text(error))
    elif record.error is not None and record.error.traceback and record.state.value == "failed":
        click.echo()
        click.echo(_traceback_text(record.error))


def _attempts(errors: tuple[ErrorInfo, ...]) -> None:
    """The failed attempts, oldest first: when, what, and the backoff before the next one."""
    print_table(
        [Column("attempt", "right"), Column("failed at"), Column("error"), Column("retried after", "right")],
        [
            [e.attempt, fmt_time(e.at), printable(cut(_error_text(e), 80)), fmt_seconds(e.retry_in)]
            for e in errors
        ],
        title="attempts that failed",
    )


def _traceback_text(error: ErrorInfo) -> str:
    """An error's traceback, each line with its control characters escaped (``(none kept)`` if absent)."""
    if not error.traceback:
        return "(no traceback kept)"
    return "\n".join(printable(line) for line in error.traceback.rstrip().splitlines())


def _show_chain(app: App, record: ChainRecord, as_json: bool) -> None:
    steps = []
    for index, step in enumerate(record.steps, start=1):
        for member in step.members:
            job = app.backend.get_job(member.job_id)
            steps.append(
                {
                    "step": index,
                    "task": member.task,
                    "state": member.state.value,
                    "job_id": member.job_id,
                    "attempt": job.job.attempt if job is not None else None,
                    "started_at": member.started_at,
                    "finished_at": member.finished_at,
                    "result": member.result,
                    "error": None if member.error is None else member.error.to_wire(),
                }
            )
    if as_json:
        echo_json(
            {
                "kind": record.kind,
                "id": record.id,
                "name": record.name,
                "state": record.state.value,
                "created_at": record.created_at,
                "finished_at": record.finished_at,
                "rendered": record.render(),
                "result": record.result,
                "steps": steps,
            }
        )
        return
    _key_values(
        [
            (record.kind, f"{record.id}" + (f" ({record.name})" if record.name else "")),
            ("state", record.state.value),
            ("steps", record.render()),
            ("created", fmt_time(record.created_at)),
            ("finished", fmt_time(record.finished_at)),
            ("took", _duration(record.created_at, record.finished_at)),
        ],
        state=record.state.value,
    )
    click.echo()
    rows: list[list[Any]] = []
    styles: list[str | None] = []
    for row in steps:
        state = str(row["state"]).replace("_", " ")
        error = row["error"]
        outcome = f"{error['type']}: {error['message']}" if error else _short(json_text(row["result"]))
        if state in ("pending", "not executed"):
            outcome = ""
        rows.append(
            [
                row["step"],
                row["task"],
                state,
                row["job_id"],
                row["attempt"],
                _duration(row["started_at"], row["finished_at"]),
                outcome,
            ]
        )
        styles.append(state_style(state) or None)
    print_table(
        [
            Column("step", "right"),
            Column("task"),
            Column("state"),
            Column("job id"),
            Column("attempt", "right"),
            Column("took", "right"),
            Column("result / error"),
        ],
        rows,
        styles=styles,
    )


def _key_values(rows: list[tuple[str, str]], *, state: str) -> None:
    rows = [(key, printable(value)) for key, value in rows]  # task, queue, names: escape control characters
    width = max(len(key) for key, _ in rows) + 2
    if is_tty():
        out = console()
        for key, value in rows:
            style = state_style(value) if key == "state" else ""
            text = f"[{style}]{escape(value)}[/]" if style else escape(value)
            out.print(f"[bold]{key:<{width}}[/]{text}", markup=True, highlight=False)
        return
    for key, value in rows:
        click.echo(f"{key:<{width}}{value}")


def _short(text: str, limit: int = 100) -> str:
    return cut(text, limit)


#: one job's JSON form and its printed view, shared with ``jobchain jobs``
job_json = _job_json
show_job = _show_job
#: a job's failed attempts as a table, shared with ``jobchain failed show``
attempts_table = _attempts
