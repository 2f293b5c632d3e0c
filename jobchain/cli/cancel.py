"""``jobchain jobs cancel ID...`` and ``jobchain queues purge QUEUE``.

Both are commands of groups defined elsewhere (:mod:`jobchain.cli.jobs`,
:mod:`jobchain.cli.queues`); :mod:`jobchain.cli.main` adds them.
"""

from __future__ import annotations

import click

from jobchain.app import App
from jobchain.capabilities import Stats, supports
from jobchain.cli.common import backend_option, config_option, json_option, open_app, setup_logging
from jobchain.cli.output import echo_json, plural, printable

__all__ = ["cancel", "purge"]

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
@click.argument("ids", nargs=-1, required=True, metavar="ID...")
@backend_option
@config_option()
@json_option
@click.pass_context
def cancel(
    ctx: click.Context, ids: tuple[str, ...], backend: str | None, config: str | None, as_json: bool
) -> None:
    """Cancel jobs: ready or delayed ones are removed (recorded cancelled, their chains end);
    running ones are asked to stop (a task sees it with jobchain.current_job().cancel_requested).

    Unknown ids and finished jobs are reported, not errors.
    """
    app = _open(ctx, config, backend)
    report = app.cancel(ids)
    if as_json:
        echo_json(report.to_wire())
        return
    for field, said in _SAID:
        found: tuple[str, ...] = getattr(report, field)
        if found:
            click.echo(f"{said}: {', '.join(printable(i) for i in found)}")


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
