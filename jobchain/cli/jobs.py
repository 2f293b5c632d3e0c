"""``jobchain jobs``: the group of the commands about single jobs (``jobs cancel`` …)."""

from __future__ import annotations

import click

__all__ = ["jobs"]


@click.group()
def jobs() -> None:
    """Act on jobs by id: cancel them."""
