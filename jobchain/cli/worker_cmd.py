"""``jobchain worker``: a long-running consumer of a config's tasks.

SIGTERM or Ctrl-C asks it to stop: running jobs finish (up to ``--grace``
seconds), the ones it holds but has not started go back to the queue. A
second signal quits at once; leases then expire and other workers take the
jobs over, so nothing is lost either way. ``jobchain workers stop NAME`` asks
the same thing through the backend.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from jobchain.cli.common import (
    EXIT_INTERRUPTED,
    backend_option,
    config_option,
    is_private_backend,
    log_jobs,
    open_app,
    setup_logging,
)
from jobchain.worker import Worker

__all__ = ["worker"]


def _csv(values: tuple[str, ...] | str | None) -> list[str]:
    if not values:
        return []
    items = [values] if isinstance(values, str) else list(values)
    return [part.strip() for item in items for part in item.split(",") if part.strip()]


def _labels(values: tuple[str, ...]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for item in _csv(values):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="'--labels'")
        labels[key.strip()] = value.strip()
    return labels


@click.command("worker")
@config_option(required=True)
@backend_option
@click.option("--queues", "-Q", metavar="A,B", help="Queues to take jobs from (default: every task's queue).")
@click.option(
    "--labels", "-l", metavar="K=V", multiple=True, help="Labels to advertise (repeatable, or k=v,k2=v2)."
)
@click.option(
    "--concurrency",
    "-j",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="Threads running jobs.",
)
@click.option("--name", "-n", help="Worker name, unique among live workers (default: host-pid-random).")
@click.option(
    "--lease",
    type=click.FloatRange(min=0, min_open=True),
    default=30.0,
    show_default=True,
    help="Seconds a job is held before another worker may take it (extended while it runs).",
)
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="Seconds running jobs get to finish when stopping.",
)
@click.pass_context
def worker(
    ctx: click.Context,
    config: str,
    backend: str | None,
    queues: str | None,
    labels: tuple[str, ...],
    concurrency: int,
    name: str | None,
    lease: float,
    grace: float,
) -> None:
    """Run the tasks of --config from the backend until stopped (SIGTERM, Ctrl-C, `workers stop`)."""
    level = setup_logging(ctx, "info")
    label_map = _labels(labels)
    opened = open_app(config, backend)
    app = opened.app
    log_jobs(app, level)
    consumer = Worker(
        app,
        queues=_csv(queues) or None,
        concurrency=concurrency,
        name=name,
        labels=label_map,
        lease=lease,
    )
    if is_private_backend(app):
        click.echo(
            f"note: {app.backend_url} lives in this process: only jobs that {config} submits itself "
            "will run; use --backend to serve a shared backend",
            err=True,
        )
    click.echo(
        f"worker {consumer.name}: queues {', '.join(consumer.queues)} · {concurrency} threads · "
        f"{app.backend_url} (Ctrl-C to stop)",
        err=True,
    )
    with _stop_on_signals(consumer):
        consumer.start()
        try:
            while not consumer.stopping:
                time.sleep(0.2)
        finally:
            clean = _stop(consumer, grace)
    counters = consumer.counters
    click.echo(
        f"worker {consumer.name} stopped: {counters.done} succeeded, {counters.failed} failed, "
        f"{counters.retried} retried"
        + ("" if clean else "; some jobs were still running (their leases expire)"),
        err=True,
    )
    app.close()


def _stop(consumer: Worker, grace: float) -> bool:
    try:
        return consumer.stop(timeout=grace)
    except KeyboardInterrupt:
        click.echo("quitting now: jobs still running go back to the queue when their leases expire", err=True)
        raise click.exceptions.Exit(EXIT_INTERRUPTED) from None


@contextmanager
def _stop_on_signals(consumer: Worker) -> Iterator[None]:
    """First SIGINT/SIGTERM: stop gracefully. Second: quit now."""
    signals = (signal.SIGINT, signal.SIGTERM)

    def handler(signum: int, frame: Any) -> None:
        if consumer.stopping:
            raise KeyboardInterrupt
        click.echo(
            f"received {signal.Signals(signum).name}: finishing running jobs (again to quit now)", err=True
        )
        consumer.request_stop()

    previous = {sig: signal.signal(sig, handler) for sig in signals}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
