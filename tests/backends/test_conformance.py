"""The memory backend runs the whole conformance suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from jobchain.clock import ManualClock
from jobchain.memory import MemoryBackend
from jobchain.testing import BackendConformance


class TestMemoryBackend(BackendConformance):
    @pytest.fixture
    def backend(self, clock: ManualClock) -> Iterator[MemoryBackend]:
        backend = MemoryBackend(clock=clock)
        yield backend
        backend.close()


class TestMemoryBackendFromUrl(BackendConformance):
    """The same suite on a backend opened by URL through the plugin manager, as the CLI does."""

    @pytest.fixture
    def backend(self, clock: ManualClock) -> Iterator[MemoryBackend]:
        from jobchain.plugins import Plugins

        backend = Plugins().open_backend("memory://", clock=clock)
        assert isinstance(backend, MemoryBackend)
        yield backend
        backend.close()
