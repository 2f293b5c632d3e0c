"""The SQLite backend (jobchain-sqlite) runs the whole conformance suite, on a file in a temp directory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from jobchain_sqlite import SqliteBackend

from jobchain.clock import ManualClock
from jobchain.testing import BackendConformance


class TestSqliteBackend(BackendConformance):
    @pytest.fixture
    def backend(self, clock: ManualClock, tmp_path: Path) -> Iterator[SqliteBackend]:
        backend = SqliteBackend(str(tmp_path / "jobs.db"), clock=clock)
        yield backend
        backend.close()


class TestSqliteBackendFromUrl(BackendConformance):
    """The same suite on a backend opened by URL through the plugin manager, as the CLI does."""

    @pytest.fixture
    def backend(self, clock: ManualClock, tmp_path: Path) -> Iterator[SqliteBackend]:
        from jobchain.plugins import Plugins

        backend = Plugins().open_backend(f"sqlite://{tmp_path}/jobs.db?busy_timeout=5", clock=clock)
        assert isinstance(backend, SqliteBackend)
        yield backend
        backend.close()
