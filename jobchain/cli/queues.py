"""``jobchain queues [list]``, ``jobchain queues pause Q...`` and ``jobchain queues resume Q...``."""

from __future__ import annotations

import click

from jobchain.app import App
from jobchain.capabilities import Pause, Stats, require, supports
from jobchain.cli.common import (
    backend_option,
    config_option,
    json_option,
    open_app,
    private_backend_note,
    setup_logging,
)
from jobchain.cli.output import Column, echo_json, print_table
from jobchain.model import QueueStats

__all__ = ["queue_rows", "queues"]


def queue_rows(app: App) -> list[tuple[QueueStats, bool]]:
    """Every queue with its counts and whether it is paused (a paused queue never seen counts zero).

    A backend without :class:`~jobchain.capabilities.Pause` shows no queue paused.
    """
    stats = {s.queue: s for s in require(app.backend, Stats).stats()}
    paused = set(app.paused()) if supports(app.backend, Pause) else set()
    for queue in paused - stats.keys():
        stats[queue] = QueueStats(queue=queue)
    return [(stats[q], q in paused) for q in sorted(stats)]


def _open(ctx: click.Context, config: str | None, backend: str | None) -> App:
    setup_logging(ctx)
    parent = ctx.parent.params if ctx.parent is not None else {}
    return open_app(config or parent.get("config"), backend or parent.get("backend")).app


@click.group(invoke_without_command=True)
@backend_option
@config_option()
@json_option
@click.pass_context
def queues(ctx: click.Context, backend: str | None, config: str | None, as_json: bool) -> None:
    """Queues with their counts and whether they are paused (the same as `queues list`)."""
    if ctx.invoked_subcommand is None:
        _list(_open(ctx, config, backend), as_json)


@queues.command("list")
@backend_option
@config_option()
@json_option
@click.pass_context
def list_(ctx: click.Context, backend: str | None, config: str | None, as_json: bool) -> None:
    """List queues: ready, delayed, in flight, failed, and paused or not."""
    parent = ctx.parent.params if ctx.parent is not None else {}
    _list(_open(ctx, config, backend), as_json or parent.get("as_json", False))


def _list(app: App, as_json: bool) -> None:
    rows = queue_rows(app)
    if as_json:
        echo_json([{**s.to_wire(), "paused": paused} for s, paused in rows])
        return
    if not rows:
        click.echo(f"no queues on {app.backend_url} yet")
        note = private_backend_note(app)
        if note:
            click.echo(note, err=True)
        return
    print_table(
        [
            Column("queue"),
            Column("ready", "right"),
            Column("delayed", "right"),
            Column("in flight", "right"),
            Column("failed", "right"),
            Column("state"),
        ],
        [
            [s.queue, s.ready, s.delayed, s.in_flight, s.failed, "paused" if paused else "active"]
            for s, paused in rows
        ],
    )


@queues.command("pause")
@click.argument("names", nargs=-1, required=True, metavar="QUEUE...")
@backend_option
@config_option()
@click.pass_context
def pause(ctx: click.Context, names: tuple[str, ...], backend: str | None, config: str | None) -> None:
    """Pause queues: submits are accepted, workers stop taking their jobs within a second.

    Running jobs finish. Pausing a paused queue changes nothing.
    """
    app = _open(ctx, config, backend)
    app.pause(*names)
    click.echo(f"paused {', '.join(names)} on {app.backend_url}; running jobs finish")
    note = private_backend_note(app)
    if note:
        click.echo(note, err=True)


@queues.command("resume")
@click.argument("names", nargs=-1, required=True, metavar="QUEUE...")
@backend_option
@config_option()
@click.pass_context
def resume(ctx: click.Context, names: tuple[str, ...], backend: str | None, config: str | None) -> None:
    """Serve paused queues again (resuming a queue that is not paused changes nothing)."""
    app = _open(ctx, config, backend)
    app.resume(*names)
    click.echo(f"resumed {', '.join(names)} on {app.backend_url}")
