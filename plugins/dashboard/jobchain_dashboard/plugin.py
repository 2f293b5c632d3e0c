"""The module named by this distribution's ``jobchain`` entry point: the ``jobchain dashboard`` command."""

from __future__ import annotations

from typing import Any

import jobchain


@jobchain.hookimpl
def jobchain_add_commands(cli: Any) -> None:
    from jobchain_dashboard.cli import dashboard

    cli.add_command(dashboard)
