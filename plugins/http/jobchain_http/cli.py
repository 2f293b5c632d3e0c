"""``jobchain http serve | push | pull``, added to the ``jobchain`` command by this plugin."""

from __future__ import annotations

import os
import re
import signal
import stat
import sys
from pathlib import Path
from types import FrameType
from typing import Any

import click

from jobchain.cli.common import CliError, backend_option, config_option, open_app, setup_logging
from jobchain.cli.listening import is_loopback, listen, parse_bind
from jobchain.cli.output import plural
from jobchain.errors import JobchainError
from jobchain.ids import new_id
from jobchain_http.client import TOKEN_ENV, HttpBackend
from jobchain_http.streams import Hub

__all__ = ["http"]

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|kb|kib|mb|mib|gb|gib|k|m|g)?\s*$", re.IGNORECASE)
_UNITS = {
    None: 1,
    "b": 1,
    "k": 1024,
    "kb": 1000,
    "kib": 1024,
    "m": 1024**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gb": 1000**3,
    "gib": 1024**3,
}


def parse_size(text: str) -> int:
    """``1MiB``, ``512k``, ``2000000`` → bytes."""
    found = _SIZE.match(text)
    if not found:
        raise click.BadParameter(
            f"{text!r} is not a size like 1MiB, 512KiB or 100000", param_hint="'--max-body'"
        )
    unit = found.group(2).lower() if found.group(2) else None
    return int(float(found.group(1)) * _UNITS[unit])


def _csv(values: tuple[str, ...]) -> list[str]:
    return [part.strip() for item in values for part in item.split(",") if part.strip()]


@click.group("http")
def http() -> None:
    """The HTTP gateway: serve a backend over HTTP, and move files through line queues."""


@http.command("serve")
@config_option(help="Python file or module whose tasks and chains may be submitted by name (optional).")
@backend_option
@click.option(
    "--bind", default="127.0.0.1:8080", show_default=True, metavar="HOST:PORT", help="Where to listen."
)
@click.option(
    "--token", envvar=TOKEN_ENV, metavar="TOKEN", help=f"Bearer token clients must send (or ${TOKEN_ENV})."
)
@click.option(
    "--allow-task", "allow", multiple=True, metavar="NAME", help="Only these tasks (repeatable, or A,B)."
)
@click.option("--max-body", default="2MiB", show_default=True, metavar="SIZE", help="Largest request body.")
@click.option(
    "--max-wait",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="Longest long poll, seconds.",
)
@click.option(
    "--ping-interval",
    type=click.FloatRange(min=0.05),
    default=5.0,
    show_default=True,
    help="Seconds between pings on an idle stream (how soon a dead one is noticed).",
)
@click.option("--insecure", is_flag=True, help="Allow a non-loopback address without a token.")
@click.pass_context
def serve(
    ctx: click.Context,
    config: str | None,
    backend: str | None,
    bind: str,
    token: str | None,
    allow: tuple[str, ...],
    max_body: str,
    max_wait: float,
    ping_interval: float,
    insecure: bool,
) -> None:
    """Serve a backend (memory:// by default) over HTTP until SIGTERM or Ctrl-C."""
    setup_logging(ctx, "info")
    host, port = parse_bind(bind)
    limit = parse_size(max_body)
    if not is_loopback(host) and not token and not insecure:
        raise CliError(
            f"refusing to serve {host} without a token",
            hint=f"set --token or ${TOKEN_ENV}, bind 127.0.0.1, or pass --insecure behind a proxy "
            "that checks one",
        )
    import uvicorn

    from jobchain_http.catalog import Catalog
    from jobchain_http.gateway import GatewayConfig, create_app

    opened = open_app(config, backend)
    app = opened.app
    store = app.backend
    if isinstance(store, HttpBackend):
        raise CliError("a gateway in front of another gateway is not supported; give it a real backend")
    allowed = _csv(allow) or None
    catalog = Catalog(
        store,
        app=app if opened.loaded is not None else None,
        module=opened.loaded.module if opened.loaded is not None else None,
        allow=allowed,
    )
    hub = Hub(store, ping_interval=ping_interval)
    asgi = create_app(
        GatewayConfig(
            backend=store,
            catalog=catalog,
            token=token or None,
            max_body=limit,
            max_wait=max_wait,
            hub=hub,
            ping_interval=ping_interval,
        )
    )
    sock, url = listen(host, port, backlog=2048, bind=bind)
    sock.set_inheritable(True)
    config_obj = uvicorn.Config(
        asgi,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=max(5, int(ping_interval) + 2),
        lifespan="off",
    )
    server = _server(config_obj, hub)
    auth = "token required" if token else "NO TOKEN (loopback only)"
    click.echo(
        f"jobchain http: serving {store.url or 'memory://'} on {url} ({auth}); Ctrl-C to stop", err=True
    )
    sys.stderr.flush()
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        app.close()


def _server(config: Any, hub: Hub) -> Any:
    """uvicorn's server, telling open streams to end when asked to stop (they would hold it up)."""
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            super().handle_exit(sig, frame)
            hub.request_shutdown()

    return Server(config)


def _backend(url: str, token: str | None) -> HttpBackend:
    if not url.startswith(("http://", "https://")):
        raise click.BadParameter(f"{url!r} is not a gateway URL (http://host:port)", param_hint="'URL'")
    return HttpBackend.from_url(url, token=token, delivery="poll")


def _queue_name(name: str) -> str:
    if not re.match(r"^[A-Za-z0-9._-]{1,100}$", name):
        raise click.BadParameter("a queue name is 1 to 100 of A-Z a-z 0-9 . _ -", param_hint="'QUEUE'")
    return name


@http.command("push")
@click.argument("url")
@click.argument("queue")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True, path_type=str))
@click.option("--token", envvar=TOKEN_ENV, metavar="TOKEN", help=f"The gateway's token (or ${TOKEN_ENV}).")
@click.option("--lines-per-message", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option(
    "--id",
    "push_id",
    metavar="ID",
    help="This push's id (A-Z a-z 0-9 _ -): run again with the same id and input, nothing is stored "
    "twice. A failed push prints the id to re-run it with.",
)
@click.option(
    "--max-delay",
    type=click.FloatRange(min=0.01),
    default=0.2,
    show_default=True,
    metavar="SECONDS",
    help="From a pipe or terminal: longest a line read waits before it is sent.",
)
@click.pass_context
def push_cmd(
    ctx: click.Context,
    url: str,
    queue: str,
    file: str,
    token: str | None,
    lines_per_message: int,
    push_id: str | None,
    max_delay: float,
) -> None:
    """Send FILE (UTF-8, `-` for stdin) line by line to line queue QUEUE of the gateway at URL.

    Lines are sent as they are read: `tail -f app.log | jobchain http push URL logs -` delivers
    each line within --max-delay. A regular file is cut the same way every time, so pushing it
    again with the same --id stores nothing twice.
    """
    from jobchain_http.transfer import PUSH_ID, NotTextError, PushReport, push

    setup_logging(ctx)
    queue = _queue_name(queue)
    if push_id is not None and not PUSH_ID.match(push_id):
        raise click.BadParameter("1 to 64 of A-Z a-z 0-9 _ -", param_hint="'--id'")
    report = PushReport(push_id=push_id or new_id())
    backend = _backend(url, token)
    try:
        with click.open_file(file, "rb") as source:
            try:
                regular = stat.S_ISREG(os.fstat(source.fileno()).st_mode)
            except (OSError, ValueError):
                regular = False
            push(
                backend,
                queue,
                source,
                lines_per_message=lines_per_message,
                max_delay=None if regular else max_delay,
                report=report,
            )
    except (NotTextError, JobchainError, OSError) as exc:
        what = f"{file}: {exc}" if isinstance(exc, NotTextError) else str(exc)
        again = "the same file" if file != "-" else "the same input from its start"
        raise CliError(
            f"push stopped after {plural(report.lines, 'line')} (byte {report.stored_bytes}): {what}",
            hint=f"to send the rest without duplicates, push {again} again with --id {report.push_id}",
        ) from None
    finally:
        backend.close()
    click.echo(
        f"pushed {plural(report.lines, 'line')} in {plural(report.messages, 'message')} to {queue} "
        f"(id {report.push_id})",
        err=True,
    )


@http.command("pull")
@click.argument("url")
@click.argument("queue")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--token", envvar=TOKEN_ENV, metavar="TOKEN", help=f"The gateway's token (or ${TOKEN_ENV}).")
@click.option(
    "--follow", "-f", is_flag=True, help="Keep waiting for more lines instead of stopping when drained."
)
@click.option("--append", is_flag=True, help="FILE may exist: add the lines after what it holds.")
@click.option("--force", is_flag=True, help="FILE may exist: replace it.")
@click.option(
    "--lease", type=click.FloatRange(min=0.1), default=30.0, show_default=True, help="Seconds per lease."
)
@click.option(
    "--batch", type=click.IntRange(min=1, max=1000), default=64, show_default=True, help="Messages per poll."
)
@click.pass_context
def pull_cmd(
    ctx: click.Context,
    url: str,
    queue: str,
    file: Path,
    token: str | None,
    follow: bool,
    append: bool,
    force: bool,
    lease: float,
    batch: int,
) -> None:
    """Write the lines of line queue QUEUE to FILE, in order; resumes where a killed pull stopped.

    An existing FILE is refused unless --append or --force says what to do with it (a pull that
    was cut short resumes whatever the flags). A queue nothing was ever pushed to is an error,
    but with --follow, which waits for the first push.
    """
    from jobchain_http.transfer import pull

    setup_logging(ctx)
    if append and force:
        raise click.UsageError("--append and --force exclude each other")
    backend = _backend(url, token)
    stop = {"now": False}

    def handler(signum: int, frame: FrameType | None) -> None:
        stop["now"] = True

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        report = pull(
            backend,
            _queue_name(queue),
            file,
            follow=follow,
            existing="append" if append else "replace" if force else "refuse",
            lease=lease,
            batch=batch,
            wait=1.0,
            should_stop=lambda: stop["now"],
        )
    except RuntimeError as exc:
        raise CliError(str(exc)) from None
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        backend.close()
    resumed = f" (resumed at byte {report.resumed_at})" if report.resumed_at is not None else ""
    click.echo(
        f"pulled {plural(report.lines, 'line')} in {plural(report.messages, 'message')} "
        f"from {queue} to {file}{resumed}",
        err=True,
    )
