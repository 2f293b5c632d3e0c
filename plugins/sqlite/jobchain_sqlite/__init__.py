"""jobchain-sqlite: the ``sqlite://`` backend, one database file shared by the processes of one machine."""

from __future__ import annotations

from jobchain_sqlite.backend import SCHEMA_VERSION, SqliteBackend

__all__ = ["SCHEMA_VERSION", "SqliteBackend"]
