"""The entry point of ``jobchain-sqlite``: registers the ``sqlite`` URL scheme."""

from __future__ import annotations

from jobchain import hookimpl
from jobchain.registry import BackendRegistry
from jobchain_sqlite.backend import SqliteBackend

__all__ = ["jobchain_register_backends"]


@hookimpl
def jobchain_register_backends(registry: BackendRegistry) -> None:
    summary = "a SQLite file (WAL): persistent, server-less, shared by the processes of one machine"
    registry.add("sqlite", SqliteBackend.from_url, summary=summary)
