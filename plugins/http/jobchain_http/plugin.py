"""The module named by this distribution's ``jobchain`` entry point: backends and commands."""

from __future__ import annotations

from typing import Any

import jobchain
from jobchain_http.client import HttpBackend


@jobchain.hookimpl
def jobchain_register_backends(registry: jobchain.BackendRegistry) -> None:
    summary = "a jobchain HTTP gateway (jobchain http serve): streamed delivery, long poll as fallback"
    registry.add("http", HttpBackend.from_url, summary=summary)
    registry.add("https", HttpBackend.from_url, summary="the same over TLS (a gateway behind a TLS proxy)")


@jobchain.hookimpl
def jobchain_add_commands(cli: Any) -> None:
    from jobchain_http.cli import http

    cli.add_command(http)
