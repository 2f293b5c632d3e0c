"""Logging for the command line: structlog configured by the CLI, always to stderr.

The library never configures logging; the ``jobchain`` command does: a console
renderer when stderr is a terminal, JSON lines otherwise, and a level filter.
stdout is left to reports and ``--json`` output.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import structlog

__all__ = ["LEVELS", "configure_logging", "level_from_env"]

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


class _StderrLogger:
    """Writes each line to whatever ``sys.stderr`` is at that moment.

    rich's live display swaps ``sys.stderr`` for a proxy that prints above the
    progress bar; a logger holding the original stream would tear the display.
    """

    def msg(self, message: str) -> None:
        stream = sys.stderr
        stream.write(message + "\n")
        stream.flush()

    log = debug = info = warn = warning = error = critical = exception = fatal = msg


def _factory(*_args: Any) -> _StderrLogger:
    return _StderrLogger()


def level_from_env(default: str = "warning") -> str:
    """``JOBCHAIN_LOG_LEVEL`` if it names a level, else ``default``."""
    value = os.environ.get("JOBCHAIN_LOG_LEVEL", "").strip().lower()
    return value if value in LEVELS else default


def configure_logging(level: str = "warning", fmt: str = "auto") -> None:
    """Configure structlog for this process: ``fmt`` is ``auto``, ``console`` or ``json``."""
    console = sys.stderr.isatty() if fmt == "auto" else fmt == "console"
    processors: list[Any] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=False),
        structlog.processors.StackInfoRenderer(),
    ]
    if console:
        # plain tracebacks: a rich one would print every frame's local variables (request bodies, secrets)
        processors.append(
            structlog.dev.ConsoleRenderer(
                colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback
            )
        )
    else:
        processors += [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS.get(level, logging.WARNING)),
        logger_factory=_factory,
        cache_logger_on_first_use=False,
    )
