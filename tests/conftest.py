"""Shared fixtures: a manual clock, an App on a private memory backend, workers that stop themselves."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import structlog

from jobchain import App, ManualClock, Plugins, Worker
from jobchain.memory import MemoryBackend

#: the conformance suite's shared fixtures (``clock``, ``make_job``); a fixture defined here wins;
#: the Redis server fixtures of tests/backends and tests/cli (tests/redis_fixtures.py)
pytest_plugins = ["jobchain.testing", "redis_fixtures"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--soak", action="store_true", default=False, help="also run the long soak tests (marker: soak)"
    )
    parser.addoption(
        "--peers",
        action="store_true",
        default=False,
        help="also run the peer benchmark's quick mode (marker: peers; needs the package registry)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the ``soak`` tests unless ``--soak`` or ``JOBCHAIN_SOAK=1``, and the ``peers`` tests unless
    ``--peers`` or ``JOBCHAIN_PEERS=1``: the default run stays short and needs no package registry."""
    optional = {
        "soak": (
            config.getoption("--soak") or os.environ.get("JOBCHAIN_SOAK") == "1",
            "soak test, skipped by design in the default run (minutes long): use --soak or JOBCHAIN_SOAK=1",
        ),
        "peers": (
            config.getoption("--peers") or os.environ.get("JOBCHAIN_PEERS") == "1",
            "peer benchmark, skipped by design in the default run (makes venvs from the package registry, "
            "minutes long): use --peers or JOBCHAIN_PEERS=1",
        ),
    }
    for marker, (wanted, reason) in optional.items():
        if wanted:
            continue
        skip = pytest.mark.skip(reason=reason)
        for item in items:
            if item.get_closest_marker(marker) is not None:  # not item.keywords: it holds folder names too
                item.add_marker(skip)


@pytest.fixture(autouse=True)
def _structlog_config_restored() -> Iterator[None]:
    """A test that runs the CLI in-process configures structlog for the whole process: undo it after.

    (Otherwise a level filter left behind drops the info events later tests capture, depending on
    which tests shared the process: with pytest-xdist, on how files were spread over the workers.)
    """
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.fixture
def clock() -> ManualClock:
    """A clock that moves only when the test says so."""
    return ManualClock()


@pytest.fixture
def plugins() -> Plugins:
    """A plugin manager with no installed plugins: tests register what they need."""
    return Plugins(entry_points=False)


@pytest.fixture
def app(plugins: Plugins) -> Iterator[App]:
    """An App on its own memory backend, on the system clock."""
    application = App(MemoryBackend(), plugins=plugins)
    yield application
    application.close()


@pytest.fixture
def manual_app(plugins: Plugins, clock: ManualClock) -> Iterator[App]:
    """An App whose backend and submissions both use the manual clock."""
    application = App(MemoryBackend(clock=clock), plugins=plugins, clock=clock)
    yield application
    application.close()


@pytest.fixture
def start_worker() -> Iterator[Callable[..., Worker]]:
    """Start a fast-polling worker for an App; every worker started is stopped at teardown."""
    started: list[Worker] = []

    def start(application: App, **options: Any) -> Worker:
        options.setdefault("concurrency", 2)
        options.setdefault("poll", 0.02)
        worker = application.worker(**options).start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop(timeout=5)
