"""``jobchain dashboard``: serve the dashboard for a backend, on 127.0.0.1 unless a token is set."""

from __future__ import annotations

import sys

import click

from jobchain.cli.common import CliError, backend_option, config_option, open_app, setup_logging
from jobchain.cli.listening import is_loopback, listen, parse_bind
from jobchain_dashboard.security import Auth

__all__ = ["TOKEN_ENV", "dashboard"]

#: environment variables holding the tokens (kept out of the process list)
TOKEN_ENV = "JOBCHAIN_DASHBOARD_TOKEN"
READ_TOKEN_ENV = "JOBCHAIN_DASHBOARD_READ_TOKEN"


@click.command("dashboard")
@backend_option
@config_option(help="Python file or module whose App, tasks and schedules the dashboard shows (optional).")
@click.option(
    "--bind", default="127.0.0.1:8181", show_default=True, metavar="HOST:PORT", help="Where to listen."
)
@click.option(
    "--token",
    envvar=TOKEN_ENV,
    metavar="TOKEN",
    help=f"Log in with this token to see and change everything (or ${TOKEN_ENV}).",
)
@click.option(
    "--read-token",
    envvar=READ_TOKEN_ENV,
    metavar="TOKEN",
    help=f"Log in with this token to see everything and change nothing (or ${READ_TOKEN_ENV}).",
)
@click.option(
    "--read-only", is_flag=True, help="Nobody may change anything (pause, cancel, re-drive, purge)."
)
@click.option(
    "--interval",
    type=click.FloatRange(0.2, 60),
    default=1.0,
    show_default=True,
    metavar="SECONDS",
    help="Least time between two live updates (the server enforces it for every browser).",
)
@click.option(
    "--window",
    type=click.FloatRange(10, 86_400),
    default=300.0,
    show_default=True,
    metavar="SECONDS",
    help="The overview's throughput and wait/run-time window.",
)
@click.option(
    "--secure-cookies/--no-secure-cookies",
    default=None,
    help="Send the session cookie over HTTPS only (default: when the request came over HTTPS).",
)
@click.pass_context
def dashboard(
    ctx: click.Context,
    backend: str | None,
    config: str | None,
    bind: str,
    token: str | None,
    read_token: str | None,
    read_only: bool,
    interval: float,
    window: float,
    secure_cookies: bool | None,
) -> None:
    """Serve the web dashboard until SIGTERM or Ctrl-C.

    Without a token it listens on a loopback address only; anywhere else it
    needs --token (or --read-token).
    """
    setup_logging(ctx, "info")
    host, port = parse_bind(bind)
    try:
        auth = Auth(
            admin_tokens=(token,) if token else (),
            read_tokens=(read_token,) if read_token else (),
            read_only=read_only,
        )
    except ValueError as exc:
        raise CliError(
            str(exc), hint="generate one with: python -c 'import secrets; print(secrets.token_urlsafe())'"
        ) from None
    if not is_loopback(host) and not auth.required:
        raise CliError(
            f"refusing to serve the dashboard on {host} without a token",
            hint=f"set --token (or ${TOKEN_ENV}), or bind 127.0.0.1",
        )
    import uvicorn

    from jobchain_dashboard.web import DashboardConfig, create_app

    opened = open_app(config, backend)
    app = opened.app
    shown_backend = app.backend.url or "memory://"  # opened now: a bad URL stops here; passwords hidden
    asgi = create_app(
        DashboardConfig(
            app=app, auth=auth, min_interval=interval, window=window, secure_cookies=secure_cookies
        )
    )
    sock, url = listen(host, port, backlog=512, bind=bind)
    url += "/"
    server = uvicorn.Server(
        uvicorn.Config(asgi, log_config=None, access_log=False, lifespan="off", timeout_graceful_shutdown=3)
    )
    who = "token required" if auth.required else "no token: this machine only"
    if read_only:
        who += ", read-only"
    click.echo(f"jobchain dashboard: {shown_backend} on {url} ({who}); Ctrl-C to stop", err=True)
    sys.stderr.flush()
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        app.close()
