"""The root ``jobchain`` command group; subcommands live in sibling modules."""

from __future__ import annotations

import sys

import click

from jobchain import __version__
from jobchain.plugins import default_plugins


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="jobchain")
def cli() -> None:
    """jobchain: parallel jobs and sequential chains over pluggable backends."""


@cli.command()
def backends() -> None:
    """List installed backend plugins, their schemes, and plugins that failed to load."""
    plugins = default_plugins()
    for spec in plugins.backends.specs():
        click.echo(f"{spec.scheme + '://':<28} {spec.distribution:<18} {spec.summary}")
    for failure in plugins.failures:
        click.echo(f"failed: {failure.distribution} ({failure.entry_point}): {failure.reason}", err=True)


def main() -> None:
    plugins = default_plugins()
    try:
        plugins.call_all("jobchain_add_commands", cli=cli)
    except Exception as exc:  # a plugin's command failed to register: say so, keep the rest
        click.echo(f"warning: a plugin failed to add its commands: {exc}", err=True)
    sys.exit(cli.main(standalone_mode=True))
