"""``jobchain backends``: installed backend plugins, their schemes, and plugins that failed to load."""

from __future__ import annotations

import click

from jobchain.cli.common import json_option, setup_logging
from jobchain.cli.output import Column, echo_json, print_table
from jobchain.plugins import default_plugins

__all__ = ["backends"]


def _capabilities(names: list[str] | None) -> str:
    if names is None:
        return "?"  # a factory that is not a Backend class's: nothing to ask without opening it
    return ", ".join(names) or "core only"


@click.command()
@json_option
@click.pass_context
def backends(ctx: click.Context, as_json: bool) -> None:
    """List installed backend plugins, their URL schemes, distributions and capabilities.

    Capabilities are the optional parts of the backend contract a backend
    declares (failed queue, worker registry, stats ...). Plugins that failed
    to load are listed too, with the reason.
    """
    setup_logging(ctx)
    plugins = default_plugins()
    specs = plugins.backends.specs()
    failures = plugins.failures
    if as_json:
        echo_json(
            {
                "backends": [
                    {
                        "scheme": s.scheme,
                        "distribution": s.distribution,
                        "summary": s.summary,
                        "capabilities": s.capabilities,
                    }
                    for s in specs
                ],
                "failed": [
                    {"entry_point": f.entry_point, "distribution": f.distribution, "reason": f.reason}
                    for f in failures
                ],
            }
        )
        return
    print_table(
        [Column("scheme"), Column("distribution"), Column("description"), Column("capabilities")],
        [[f"{s.scheme}://", s.distribution, s.summary, _capabilities(s.capabilities)] for s in specs],
    )
    if failures:
        click.echo()
        print_table(
            [Column("plugin"), Column("distribution"), Column("failed to load")],
            [[f.entry_point, f.distribution, f.reason] for f in failures],
        )
