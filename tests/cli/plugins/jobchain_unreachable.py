"""A backend plugin for the tests whose server is never there: URLs ``unreachable://host:port``.

Opening the backend fails the way a networked backend's does when nothing
answers: with :class:`jobchain.BackendUnavailableError` naming the address.
"""

from __future__ import annotations

from typing import Any

import jobchain
from jobchain.errors import BackendUnavailableError


def open_unreachable(url: str, **options: Any) -> jobchain.Backend:
    raise BackendUnavailableError(url, "connection refused")


@jobchain.hookimpl
def jobchain_register_backends(registry: jobchain.BackendRegistry) -> None:
    registry.add("unreachable", open_unreachable, summary="test: a server that never answers")
