"""A plugin for the tests that adds a command through ``jobchain_add_commands``."""

from __future__ import annotations

from typing import Any

import click

import jobchain


@click.command()
@click.argument("name", default="world")
def hello(name: str) -> None:
    """Say hello (a command added by a plugin)."""
    click.echo(f"hello, {name}")


@jobchain.hookimpl
def jobchain_add_commands(cli: Any) -> None:
    cli.add_command(hello)
