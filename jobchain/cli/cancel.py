"""``jobchain jobs cancel ID...`` (or by filter) and ``jobchain queues purge QUEUE``.

Both are commands of groups defined elsewhere (:mod:`jobchain.cli.jobs`,
:mod:`jobchain.cli.queues`); :mod:`jobchain.cli.main` adds them.
"""

from __future__ import annotations

import click

from jobchain.app import App
from jobchain.browsing import MAX_LIMIT, parse_state
from jobchain.capabilities import CancelReport, Stats, supports
from jobchain.cli.common import backend_option, config_option, json_option, open_app, setup_logging
from jobchain.cli.output import echo_json, plural, printable
from jobchain.model import JobState

__all__ = ["cancel", "purge"]

#: the states a filter may cancel (finished jobs are left as they are)
_CANCELLABLE = (JobState.QUEUED, JobState.DELAYED, JobState.RUNNING)

#: how each part of a cancel report is told, one line per part that has ids
_SAID = (
    ("cancelled", "cancelled (never run)"),
    ("requested", "running: asked to stop"),
    ("finished", "already finished, left as they are"),
    ("unknown", "unknown"),
)


def _open(ctx: click.Context, config: str | None, backend: str | None) -> App:
    setup_logging(ctx)
    parent = ctx.parent.params if ctx.parent is not None else {}
    return open_app(config or parent.get("config"), backend or parent.get("backend")).app


@click.command("cancel")
@click.argument("ids", nargs=-1, metavar="[ID...]")
@click.option("--queue", "-q", default=None, help="Cancel by filter: this queue's jobs (with --state).")
@click.option(
    "--state",
    "-s",
    default=None,
    help="Cancel by filter: jobs in this state: ready (queued), delayed or running.",
)
@click.option("--task", "-t", default=None, help="Cancel by filter: only this task's jobs.")
@click.option("--yes", "-y", is_flag=True, help="Cancel by filter without asking.")
@backend_option
@config_option()
@json_option
@click.pass_context
def cancel(
    ctx: click.Context,
    ids: tuple[str, ...],
    queue: str | None,
    state: str | None,
    task: str | None,
    yes: bool,
    backend: str | None,
    config: str | None,
    as_json: bool,
) -> None:
    """Cancel jobs by id, or by filter (--queue Q --state S [--task T]: counted, confirmed unless --yes).

    Ready or delayed jobs are removed (recorded cancelled, their chains end);
    running ones are asked to stop (a task sees it with
    jobchain.current_job().cancel_requested). Unknown ids and finished jobs
    are reported, not errors.
    """
    by_filter = queue is not None or state is not None or task is not None
    if ids and by_filter:
        raise click.UsageError("give job ids, or a filter (--queue/--state/--task), not both")
    if not ids and not by_filter:
        raise click.UsageError("give the ID... of the jobs to cancel, or a filter: --queue Q --state S")
    if by_filter and (queue is None or state is None):
        raise click.UsageError("cancel by filter needs --queue and --state (ready, delayed or running)")
    app = _open(ctx, config, backend)
    if by_filter:
        assert queue is not None
        assert state is not None
        wanted = _cancellable_state(state)
        ids = _matching(app, queue, wanted, task)
        what = f"{plural(len(ids), wanted.value + ' job')} of queue {printable(queue)}"
        if task is not None:
            what += f" (task {printable(task)})"
        if not ids:
            click.echo(
                f"no {wanted.value} job of queue {printable(queue)} matches: nothing to cancel", err=True
            )
            if as_json:
                echo_json(CancelReport().to_wire())
            return
        if not yes:
            click.confirm(f"cancel {what} on {app.backend_url}?", abort=True, err=True)
    report = app.cancel(ids)
    if as_json:
        echo_json(report.to_wire())
        return
    for field, said in _SAID:
        found: tuple[str, ...] = getattr(report, field)
        if found:
            click.echo(f"{said}: {', '.join(printable(i) for i in found)}")


def _cancellable_state(text: str) -> JobState:
    """The state a filter names; only ready, delayed and running jobs can be cancelled."""
    try:
        state = parse_state(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--state") from None
    if state not in _CANCELLABLE:
        raise click.BadParameter(
            f"{state.value} jobs are finished: only ready, delayed or running jobs can be cancelled",
            param_hint="--state",
        )
    return state


def _matching(app: App, queue: str, state: JobState, task: str | None) -> tuple[str, ...]:
    """Every job of ``queue`` in ``state`` (of ``task``), listed page by page (needs Browse)."""
    found: list[str] = []
    cursor: str | None = None
    while True:
        page = app.jobs.list(queue, state, task=task, limit=MAX_LIMIT, cursor=cursor, oldest_first=True)
        found += (record.job.id for record in page.records)
        cursor = page.cursor
        if cursor is None:
            return tuple(dict.fromkeys(found))


@click.command("purge")
@click.argument("queue", metavar="QUEUE")
@click.option("--yes", "-y", is_flag=True, help="Purge without asking.")
@backend_option
@config_option()
@click.pass_context
def purge(ctx: click.Context, queue: str, yes: bool, backend: str | None, config: str | None) -> None:
    """Cancel every ready and delayed job of QUEUE (shows how many first and asks, unless --yes).

    Running jobs are left alone; the purged jobs are recorded cancelled and their chains end.
    """
    app = _open(ctx, config, backend)
    name = printable(queue)
    if not yes:
        waiting = _waiting(app, queue)
        what = "its ready and delayed jobs" if waiting is None else plural(waiting, "ready or delayed job")
        if waiting == 0:
            click.echo(f"queue {name} has no ready or delayed job on {app.backend_url}: nothing to purge")
            return
        click.confirm(f"purge {what} of queue {name} on {app.backend_url}?", abort=True, err=True)
    count = app.purge(queue)
    click.echo(f"purged {plural(count, 'job')} of queue {name} (recorded cancelled)")


def _waiting(app: App, queue: str) -> int | None:
    """Ready and delayed jobs of ``queue`` now; None when the backend keeps no counts."""
    if not supports(app.backend, Stats):
        return None
    for stats in app.stats():
        if stats.queue == queue:
            return stats.ready + stats.delayed
    return 0
