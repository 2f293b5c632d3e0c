"""``jobchain scheduler`` (submit the due slots of a config's schedules) and ``jobchain schedules``.

``schedules list`` shows each schedule with its next and last run and the
last run's outcome; ``schedules pause|resume NAME`` flips its paused flag
on the backend (every scheduler honours it at its next tick).
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import click

from jobchain.app import App
from jobchain.capabilities import ScheduleSlots, require
from jobchain.cli.common import backend_option, config_option, json_option, open_app, setup_logging
from jobchain.cli.output import echo_json, printable
from jobchain.scheduler import Scheduler, describe

__all__ = ["scheduler", "schedules", "start_scheduler"]

#: seconds added to the backend's clock by every scheduler of this process: tests of skewed clocks only
CLOCK_OFFSET_ENV = "JOBCHAIN_TEST_SCHEDULER_OFFSET"


def start_scheduler(app: App, poll: float = 1.0) -> Scheduler:
    """A scheduler of all ``app``'s schedules, running in a thread (``worker --schedules``)."""
    running = Scheduler(app, poll=poll, clock_offset=float(os.environ.get(CLOCK_OFFSET_ENV, "0") or 0))
    running.start()
    return running


@click.command()
@config_option(required=True, help="Python file or dotted module that defines the App and its schedules.")
@backend_option
@click.option(
    "--poll",
    type=click.FloatRange(min=0.05),
    default=1.0,
    show_default=True,
    metavar="SECONDS",
    help="Look at the schedules at least this often (a pause is seen within it).",
)
@click.pass_context
def scheduler(ctx: click.Context, config: str, backend: str | None, poll: float) -> None:
    """Submit the due slots of --config's schedules until stopped (SIGTERM, Ctrl-C).

    Run as many as you like: each slot is submitted once whatever their number.
    """
    setup_logging(ctx, "info")
    app = open_app(config, backend).app
    try:
        running = Scheduler(app, poll=poll, clock_offset=float(os.environ.get(CLOCK_OFFSET_ENV, "0") or 0))
    except Exception:
        app.close()
        raise
    if not running.schedules:
        app.close()
        raise click.UsageError(f"{config} declares no schedule (app.schedule() or @app.periodic)")
    names = ", ".join(s.name for s in running.schedules)
    click.echo(f"scheduler: {names} · {app.backend_url} (Ctrl-C to stop)", err=True)
    with _stop_on_signals(running.stop_event):
        running.run()
    click.echo("scheduler stopped", err=True)
    app.close()


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    def handler(signum: int, frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@click.group()
def schedules() -> None:
    """List, pause and resume the schedules of a config."""


@schedules.command("list")
@config_option(required=True)
@backend_option
@json_option
def list_schedules(config: str, backend: str | None, as_json: bool) -> None:
    """Each schedule: its timing, next run, last run and the last run's outcome."""
    app = open_app(config, backend).app
    try:
        rows = describe(app)
    finally:
        app.close()
    if as_json:
        echo_json([row.to_json() for row in rows])
        return
    if not rows:
        click.echo("no schedules")
        return
    header = ("NAME", "WHEN", "TARGET", "NEXT", "LAST", "OUTCOME")
    table = [header] + [
        (
            printable(r.name),
            r.spec,
            printable(r.target),
            "paused" if r.paused else _when(r.next_run),
            _when(r.last_run),
            r.last_outcome or "-",
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def _when(t: float | None) -> str:
    return "-" if t is None else datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _flip(config: str, backend: str | None, name: str, paused: bool) -> None:
    app = open_app(config, backend).app
    try:
        app.get_schedule(name)  # an unknown name is an error, not a silent flag
        slots = require(app.backend, ScheduleSlots)
        if paused:
            slots.pause_schedule(name)
        else:
            slots.resume_schedule(name)
    finally:
        app.close()
    click.echo(f"schedule {name} {'paused' if paused else 'resumed'}")


@schedules.command()
@config_option(required=True)
@backend_option
@click.argument("name")
def pause(config: str, backend: str | None, name: str) -> None:
    """Pause schedule NAME: no scheduler submits its slots until it is resumed."""
    _flip(config, backend, name, True)


@schedules.command()
@config_option(required=True)
@backend_option
@click.argument("name")
def resume(config: str, backend: str | None, name: str) -> None:
    """Resume schedule NAME; the slots it missed follow its missed-slot policy."""
    _flip(config, backend, name, False)
