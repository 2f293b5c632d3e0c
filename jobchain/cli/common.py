"""What the commands share: the error they raise, common options and opening the App.

:class:`CliError` is how a command reports a user's mistake: one line
(``error: ...``), an optional hint line, a non-zero exit code and no
traceback. The root group turns :class:`jobchain.JobchainError` and
connection errors into the same shape.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from jobchain.app import App
from jobchain.payload import MAX_DEPTH
from jobchain.plugins import default_plugins, scheme_of

if TYPE_CHECKING:
    from jobchain.cli.config import LoadedConfig

__all__ = [
    "AUTH_HINT",
    "CliError",
    "Opened",
    "backend_option",
    "check_shareable",
    "config_option",
    "is_private_backend",
    "json_option",
    "open_app",
    "parse_args_json",
    "processes_option",
    "split_args",
]

F = TypeVar("F", bound=Callable[..., Any])

#: exit codes: 1 for errors, 2 for usage errors (click's), 124 for a --wait that timed out, 130 interrupted
EXIT_ERROR = 1
EXIT_TIMEOUT = 124
EXIT_INTERRUPTED = 130

#: the hint under an authentication failure (jobchain.BackendAuthError)
AUTH_HINT = "check the user and password in the URL (scheme://user:password@host:port/db) and the user's ACL"


class CliError(click.ClickException):
    """A user-facing error: ``error: message`` and, if given, a hint on the next line."""

    exit_code = EXIT_ERROR

    def __init__(self, message: str, *, hint: str | None = None, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.hint = hint
        if exit_code is not None:
            # click declares exit_code a ClassVar (8.5) but reads it from the instance: set it there
            vars(self)["exit_code"] = exit_code

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)
        if self.hint:
            click.echo(self.hint, err=True)


def _check_url(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and "://" not in value:
        raise click.BadParameter(
            f"{value!r} is not a backend URL; they look like memory:// or redis-lists://host:6379/0"
        )
    return value


def backend_option(fn: F) -> F:
    return click.option(
        "--backend",
        "-b",
        metavar="URL",
        callback=_check_url,
        help="Backend URL (memory://, redis-lists://host:6379/0 ...); default: the config's App, "
        "else $JOBCHAIN_BACKEND, else memory://.",
    )(fn)


def config_option(*, required: bool = False, help: str | None = None) -> Callable[[F], F]:
    text = help or "Python file or dotted module that defines the App (FILE_OR_MODULE[:APP])."
    return click.option("--config", "-c", "config", metavar="FILE_OR_MODULE", required=required, help=text)


def json_option(fn: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")(fn)


class Opened:
    """An App opened for a command, with the config it came from (if any)."""

    def __init__(self, app: App, loaded: LoadedConfig | None) -> None:
        self.app = app
        self.loaded = loaded

    @property
    def url(self) -> str:
        return self.app.backend_url


def open_app(config: str | None, backend: str | None, *, connect: bool = True) -> Opened:
    """The config's App (or a bare App), switched to ``backend`` if given, its backend opened."""
    loaded = None
    if config is not None:
        from jobchain.cli.config import load_config

        loaded = load_config(config)
        app = loaded.app
        if backend:
            scheme_of(backend)  # a malformed URL fails here, before anything else
            app.use_backend(backend)
    else:
        app = App(backend or None, plugins=default_plugins())
    if connect:
        _ = app.backend  # unknown scheme, unreachable server: fail now, with the URL in the message
    return Opened(app, loaded)


def is_private_backend(app: App) -> bool:
    """True for memory://: its jobs live in this process only, so other commands cannot see them."""
    try:
        return scheme_of(app.backend_url) == "memory"
    except Exception:
        return False


def processes_option(what: str) -> Callable[[F], F]:
    return click.option(
        "--processes",
        "-p",
        type=click.IntRange(min=1),
        default=1,
        show_default=True,
        help=f"Worker processes, {what}; needs a backend they can share (not memory://).",
    )


def check_shareable(app: App, processes: int) -> None:
    """``--processes`` above 1 on a backend that lives in one process is a usage error (exit code 2)."""
    if processes > 1 and is_private_backend(app):
        raise click.UsageError(
            f"--processes {processes}: the memory backend ({app.backend_url}) lives inside one process "
            "and cannot be shared between processes; use a Redis backend, e.g. "
            "--backend redis-lists://localhost:6379/0 or redis-streams://localhost:6379/0"
        )


def private_backend_note(app: App) -> str | None:
    """A hint for commands that found nothing on memory:// (its store dies with each process)."""
    if not is_private_backend(app):
        return None
    return (
        f"note: {app.backend_url} lives inside one process, so a new command starts with an empty store; "
        "use --backend (or JOBCHAIN_BACKEND) to reach a shared backend"
    )


def parse_args_json(raw: str | None, what: str = "ARGS_JSON") -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Arguments from JSON: an array is positional, an object is keywords, anything else one argument."""
    if raw is None or raw == "":
        return (), {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(
            f"not valid JSON ({exc.msg} at column {exc.colno}): {raw!r}", param_hint=what
        ) from None
    except RecursionError:
        raise click.BadParameter(
            f"nested too deeply (arguments may nest at most {MAX_DEPTH} levels of lists and objects)",
            param_hint=what,
        ) from None
    return split_args(value)


def split_args(value: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    if isinstance(value, list):
        return tuple(value), {}
    if isinstance(value, dict):
        return (), dict(value)
    return (value,), {}


class CliState:
    """Options of the root command, handed to subcommands as ``ctx.obj``."""

    def __init__(self, *, log_level: str | None = None, log_format: str = "auto", verbose: int = 0) -> None:
        self.log_level = log_level
        self.log_format = log_format
        self.verbose = verbose


def setup_logging(ctx: click.Context, default: str = "warning") -> str:
    """Configure logging for this command; returns the level in force.

    ``--log-level`` wins, then ``-v`` (info) / ``-vv`` (debug), then
    ``JOBCHAIN_LOG_LEVEL``, then the command's default.
    """
    from jobchain.cli.logs import configure_logging, level_from_env

    state = ctx.find_object(CliState) or CliState()
    if state.log_level:
        level = state.log_level
    elif state.verbose:
        level = "info" if state.verbose == 1 else "debug"
    else:
        level = level_from_env(default)
    configure_logging(level, state.log_format)
    return level


def log_jobs(app: App, level: str) -> None:
    """Log job and chain events (a line per retry and failure; per job at debug level)."""
    if level not in ("debug", "info"):
        return
    from jobchain.logplugin import JobLogger

    app.plugins.register(JobLogger(verbose=level == "debug"))
