"""The ``jobchain`` command."""

from jobchain.cli.main import cli, main

__all__ = ["cli", "main"]
