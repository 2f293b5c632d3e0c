"""The root ``jobchain`` command: global options, error handling and the subcommands.

Each subcommand lives in its own module; plugins add theirs through the
``jobchain_add_commands`` hook. Every error a user can cause ends as one or two
lines on stderr and a non-zero exit code: 1 for errors, 2 for bad usage,
124 for a wait that timed out, 130 when interrupted.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Sequence
from typing import Any

import click

from jobchain import __version__
from jobchain.cli.backends import backends
from jobchain.cli.cancel import cancel, purge
from jobchain.cli.common import AUTH_HINT, EXIT_ERROR, EXIT_INTERRUPTED, CliError, CliState
from jobchain.cli.failed import failed
from jobchain.cli.jobs import jobs
from jobchain.cli.logs import LEVELS, configure_logging, level_from_env
from jobchain.cli.queues import queues
from jobchain.cli.run import run
from jobchain.cli.schedules import scheduler, schedules
from jobchain.cli.status import status
from jobchain.cli.submit import submit
from jobchain.cli.worker_cmd import worker
from jobchain.cli.workers import workers
from jobchain.errors import BackendAuthError, BackendUnavailableError, JobchainError

__all__ = ["cli", "main"]


class JobchainGroup(click.Group):
    """A group that turns jobchain's errors into ``error: ...`` lines instead of tracebacks."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)  # in the order they were added: run first, not alphabetical

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except BackendUnavailableError as exc:
            raise CliError(str(exc), hint="is the server running, and is the URL right?") from None
        except BackendAuthError as exc:
            raise CliError(str(exc), hint=AUTH_HINT) from None
        except JobchainError as exc:
            raise CliError(str(exc)) from None
        except ConnectionError as exc:  # a backend plugin that let its client's error through
            raise CliError(f"cannot reach the backend: {type(exc).__name__}: {exc}") from None


@click.group(cls=JobchainGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="jobchain")
@click.option(
    "--log-level",
    type=click.Choice(list(LEVELS), case_sensitive=False),
    help="Log level on stderr (default: warning; info for `worker`; or $JOBCHAIN_LOG_LEVEL).",
)
@click.option(
    "--log-format",
    type=click.Choice(["auto", "console", "json"]),
    default="auto",
    show_default=True,
    envvar="JOBCHAIN_LOG_FORMAT",
    help="Log lines for people (console) or machines (json); auto: console on a terminal, "
    "JSON otherwise (or $JOBCHAIN_LOG_FORMAT).",
)
@click.option("--verbose", "-v", count=True, help="-v logs info (a line per retry and failure), -vv debug.")
@click.pass_context
def cli(ctx: click.Context, log_level: str | None, log_format: str, verbose: int) -> None:
    """jobchain: parallel jobs and sequential chains over pluggable backends.

    Start with `jobchain run --workers 8 --iterations 1000`.
    """
    ctx.obj = CliState(
        log_level=log_level.lower() if log_level else None, log_format=log_format, verbose=verbose
    )


jobs.add_command(cancel)
queues.add_command(purge)
for command in (run, worker, submit, status, jobs, queues, failed, workers, backends, scheduler, schedules):
    cli.add_command(command)


def _after_command_verbose(ctx: click.Context, param: click.Parameter, value: int) -> None:
    state = ctx.find_object(CliState)
    if state is not None and value:
        state.verbose += value


def _accept_verbose_after(command: click.Command) -> None:
    """Let ``-v``/``-vv`` follow the command too (``jobchain worker -v``), as the docs write it.

    Added to every subcommand (plugins' included) that has no ``-v`` of its own;
    the counts before and after the command add up.
    """
    taken = {name for param in command.params for name in getattr(param, "opts", [])}
    if not {"-v", "--verbose"} & taken:
        command.params.append(
            click.Option(
                ["--verbose", "-v"],
                count=True,
                expose_value=False,
                callback=_after_command_verbose,
                help="-v logs info, -vv debug (as before the command).",
            )
        )
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _accept_verbose_after(sub)


def _add_plugin_commands() -> None:
    from jobchain.plugins import default_plugins

    try:
        default_plugins().call_all("jobchain_add_commands", cli=cli)
    except Exception as exc:  # a plugin's command failed to register: say so, keep the rest
        click.echo(f"warning: a plugin failed to add its commands: {type(exc).__name__}: {exc}", err=True)
    for command in cli.commands.values():
        _accept_verbose_after(command)


def main(argv: Sequence[str] | None = None) -> None:
    """The ``jobchain`` console script."""
    # plugins load before the options are parsed (they may add commands): keep their logs off stdout
    configure_logging(level_from_env("warning"))
    _add_plugin_commands()
    try:
        code = cli.main(
            args=list(argv) if argv is not None else None, prog_name="jobchain", standalone_mode=False
        )
    except click.UsageError as exc:
        _usage_error(exc)
        code = exc.exit_code
    except click.ClickException as exc:
        exc.show()
        code = exc.exit_code
    except click.Abort as exc:
        interrupted = isinstance(exc.__cause__, KeyboardInterrupt)
        click.echo("interrupted" if interrupted else "aborted", err=True)
        code = EXIT_INTERRUPTED if interrupted else EXIT_ERROR
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        code = EXIT_INTERRUPTED
    except OSError as exc:
        if exc.errno != errno.EPIPE:
            raise
        # the reader went away (`jobchain ... | head`): not an error worth a traceback
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = EXIT_ERROR
    sys.exit(code if isinstance(code, int) else 0)


def _usage_error(exc: click.UsageError) -> None:
    """Two lines instead of click's four: what is wrong, and where to find help."""
    message = exc.format_message()
    click.echo(f"error: {message[:1].lower()}{message[1:]}", err=True)
    ctx = exc.ctx
    if ctx is not None:
        click.echo(f"Try '{ctx.command_path} {ctx.help_option_names[0]}' for help.", err=True)
