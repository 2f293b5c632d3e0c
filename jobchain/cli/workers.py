"""``jobchain workers [list]`` and ``jobchain workers stop NAME``."""

from __future__ import annotations

import click

from jobchain.app import App
from jobchain.capabilities import WorkerRegistry, require
from jobchain.cli.common import (
    CliError,
    backend_option,
    config_option,
    json_option,
    open_app,
    private_backend_note,
    setup_logging,
)
from jobchain.cli.output import Column, echo_json, fmt_age, print_table, printable

__all__ = ["workers"]


def _open(ctx: click.Context, config: str | None, backend: str | None) -> App:
    setup_logging(ctx)
    app = open_app(config, backend).app
    require(app.backend, WorkerRegistry)  # a one-line error, never an AttributeError
    return app


@click.group(invoke_without_command=True)
@backend_option
@config_option()
@json_option
@click.pass_context
def workers(ctx: click.Context, backend: str | None, config: str | None, as_json: bool) -> None:
    """Live workers (the same as `workers list`); `workers stop NAME` stops one."""
    if ctx.invoked_subcommand is None:
        _list(ctx, backend, config, as_json)


@workers.command("list")
@backend_option
@config_option()
@json_option
@click.pass_context
def list_(ctx: click.Context, backend: str | None, config: str | None, as_json: bool) -> None:
    """List live workers: name, host, pid, queues, labels, threads, heartbeat."""
    parent = ctx.parent.params if ctx.parent is not None else {}
    _list(
        ctx,
        backend or parent.get("backend"),
        config or parent.get("config"),
        as_json or parent.get("as_json", False),
    )


def _list(ctx: click.Context, backend: str | None, config: str | None, as_json: bool) -> None:
    app = _open(ctx, config, backend)
    live = app.workers()
    if as_json:
        echo_json([info.to_wire() for info in live])
        return
    if not live:
        click.echo(f"no live workers on {app.backend_url}")
        note = private_backend_note(app)
        if note:
            click.echo(note, err=True)
        return
    print_table(
        [
            Column("name"),
            Column("host"),
            Column("pid", "right"),
            Column("queues"),
            Column("labels"),
            Column("threads", "right"),
            Column("state"),
            Column("started"),
            Column("heartbeat"),
        ],
        [
            [
                w.name,
                w.host,
                w.pid,
                ",".join(w.queues),
                ",".join(f"{k}={v}" for k, v in w.labels.items()) or "-",
                w.concurrency,
                w.state,
                fmt_age(w.started_at),
                fmt_age(w.heartbeat_at),
            ]
            for w in live
        ],
    )


@workers.command("stop")
@click.argument("name")
@backend_option
@config_option()
@click.pass_context
def stop(ctx: click.Context, name: str, backend: str | None, config: str | None) -> None:
    """Ask the live worker NAME to stop gracefully (it finishes its running jobs)."""
    parent = ctx.parent.params if ctx.parent is not None else {}
    app = _open(ctx, config or parent.get("config"), backend or parent.get("backend"))
    if not app.stop_worker(name):
        names = ", ".join(printable(w.name) for w in app.workers()) or "none"
        raise CliError(
            f"no live worker named {name!r} on {app.backend_url}; live workers: {names}",
            hint=private_backend_note(app),
        )
    click.echo(f"asked worker {name} to stop; it finishes its running jobs first")
