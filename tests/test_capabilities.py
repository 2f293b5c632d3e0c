"""jobchain.capabilities: declaring, asking for and listing the optional parts of the backend contract."""

from __future__ import annotations

import abc
import json
from collections.abc import Sequence

import pytest
from click.testing import CliRunner

import jobchain.contract as contract
from jobchain import JobchainError, NotSupportedError
from jobchain.app import App
from jobchain.capabilities import (
    ALL,
    Browse,
    Cancel,
    Capability,
    ConcurrencyLimits,
    FailedQueue,
    Pause,
    RateLimits,
    ScheduleSlots,
    Stats,
    Uniqueness,
    WorkerRegistry,
    capabilities,
    require,
    supports,
)
from jobchain.cli.main import cli
from jobchain.errors import ConfigurationError
from jobchain.memory import MemoryBackend
from jobchain.model import ChainRecord, Delivery, Job, JobRecord, JobState, Outcome, QueueStats, SettleResult
from jobchain.plugins import Plugins
from jobchain.registry import BackendSpec


class CoreOnly(contract.Backend):
    url = "core://x"

    def enqueue(self, jobs: Sequence[Job], chains: Sequence[ChainRecord] = ()) -> None: ...

    def reserve(
        self, queues: Sequence[str], *, limit: int, lease: float, worker: str, wait: float = 0.0
    ) -> list[Delivery]:
        return []

    def extend(self, deliveries: Sequence[Delivery], lease: float) -> list[bool]:
        return []

    def settle(self, outcomes: Sequence[Outcome]) -> list[SettleResult]:
        return []

    def get_job(self, job_id: str) -> JobRecord | None:
        return None

    def get_chain(self, chain_id: str) -> ChainRecord | None:
        return None


class WithStats(CoreOnly, Stats):
    def stats(self) -> list[QueueStats]:
        return []


def test_the_core_is_six_abstract_methods() -> None:
    assert sorted(contract.Backend.__abstractmethods__) == [
        "enqueue",
        "extend",
        "get_chain",
        "get_job",
        "reserve",
        "settle",
    ]
    CoreOnly()  # nothing else to write


def test_supports_and_capabilities_read_the_class_statement() -> None:
    expected = [
        "FailedQueue",
        "WorkerRegistry",
        "Stats",
        "Browse",
        "Cancel",
        "Pause",
        "Uniqueness",
        "RateLimits",
        "ConcurrencyLimits",
        "ScheduleSlots",
        "AsyncClient",
    ]
    assert capabilities(MemoryBackend) == expected
    assert capabilities(MemoryBackend()) == expected
    assert capabilities(CoreOnly()) == []
    assert capabilities(WithStats) == ["Stats"]
    assert supports(WithStats(), Stats)
    assert not supports(WithStats(), FailedQueue)
    assert supports(MemoryBackend, WorkerRegistry)


def test_require_returns_the_backend_as_the_capability() -> None:
    backend = WithStats()
    assert require(backend, Stats) is backend
    assert require(backend, Stats).stats() == []


def test_require_of_a_missing_capability_names_the_url_the_capability_and_who_has_it() -> None:
    with pytest.raises(NotSupportedError) as caught:
        require(CoreOnly(), FailedQueue)
    error = caught.value
    assert isinstance(error, ConfigurationError)
    assert isinstance(error, JobchainError)
    assert isinstance(error, NotImplementedError)
    assert not isinstance(error, AttributeError)
    assert (error.url, error.capability, error.what) == ("core://x", "FailedQueue", "the failed queue")
    assert "memory" in error.supported_by  # one scheme per installed distribution
    assert not any("+" in scheme or scheme.startswith("rediss") for scheme in error.supported_by)
    assert str(error).startswith(
        "core://x does not support the failed queue (capability FailedQueue); use a backend that does, e.g. "
    )
    assert "memory://" in str(error)


class _Teleport(Capability):
    """A capability no backend implements."""

    what = "teleporting jobs"

    @abc.abstractmethod
    def teleport(self) -> None:
        """Move every job elsewhere."""


def test_a_capability_nobody_has_says_so() -> None:
    with pytest.raises(
        NotSupportedError, match=r"does not support teleporting jobs \(capability _Teleport\); no installed"
    ):
        require(MemoryBackend(), _Teleport)
    with pytest.raises(
        NotSupportedError, match=r"capability ScheduleSlots\); use a backend that does, e.g. "
    ):
        require(CoreOnly(), ScheduleSlots)


def test_a_declared_capability_must_be_implemented_in_full() -> None:
    class HalfDone(CoreOnly, FailedQueue):
        def failed(self, *, limit: int = 100, offset: int = 0) -> list[object]:  # type: ignore[override]
            return []

    with pytest.raises(TypeError, match="abstract"):
        HalfDone()  # type: ignore[abstract]


def test_limits_are_implemented_by_the_built_in_backends() -> None:
    """RateLimits and ConcurrencyLimits left the provisional list: the memory backend declares both."""
    for capability in (RateLimits, ConcurrencyLimits):
        assert capability in ALL
        assert "Provisional" not in (capability.__doc__ or "")
        assert supports(MemoryBackend, capability)
    assert require(MemoryBackend(), RateLimits).take_tokens("k", [(1, 1.0)]) == 0.0


def test_browse_is_implemented_and_reached_through_the_app() -> None:
    """Browse left the provisional list: the built-in backends declare it; app.jobs asks for it."""
    assert "Provisional" not in (Browse.__doc__ or "")
    assert supports(MemoryBackend, Browse)
    app = App(backend=MemoryBackend(), plugins=Plugins(entry_points=False))
    assert app.jobs.list("q", "ready").records == ()
    assert app.jobs.counts("q")[JobState.QUEUED] == 0
    assert app.jobs.get("nope") is None
    with pytest.raises(ValueError, match="unknown job state 'later'"):
        app.jobs.list("q", "later")
    other = App(backend=CoreOnly(), plugins=Plugins(entry_points=False))
    with pytest.raises(NotSupportedError, match=r"does not support browsing jobs \(capability Browse\)"):
        other.jobs.list("q")
    assert other.jobs.get("nope") is None


def test_pause_is_implemented_and_reached_through_the_app() -> None:
    """Pause left the provisional list: the built-in backends declare it; the App asks for it."""
    assert "Provisional" not in (Pause.__doc__ or "")
    assert supports(MemoryBackend, Pause)
    app = App(backend=MemoryBackend(), plugins=Plugins(entry_points=False))
    app.pause("a", "b")
    app.pause("a")
    assert app.paused() == ["a", "b"]
    app.resume("a", "c")
    assert app.paused() == ["b"]
    with pytest.raises(NotSupportedError, match=r"does not support pausing queues \(capability Pause\)"):
        App(backend=CoreOnly(), plugins=Plugins(entry_points=False)).pause("a")


def test_uniqueness_is_implemented_by_the_built_in_backends() -> None:
    """Uniqueness left the provisional list: the memory backend declares it; the App asks for it."""
    assert "Provisional" not in (Uniqueness.__doc__ or "")
    assert supports(MemoryBackend, Uniqueness)
    app = App(backend=CoreOnly(), plugins=Plugins(entry_points=False))

    @app.task
    def echo(x: int) -> int:
        return x

    with pytest.raises(NotSupportedError, match=r"does not support unique jobs \(capability Uniqueness\)"):
        echo.submit(1, unique_key="k")


def test_cancel_is_implemented_and_reached_through_the_app() -> None:
    """Cancel left the provisional list: the built-in backends declare it; the App asks for it."""
    assert "Provisional" not in (Cancel.__doc__ or "")
    assert supports(MemoryBackend, Cancel)
    app = App(backend=MemoryBackend(), plugins=Plugins(entry_points=False))
    assert app.cancel("nope").unknown == ("nope",)
    assert app.purge("q") == 0
    with pytest.raises(NotSupportedError, match=r"does not support cancelling jobs \(capability Cancel\)"):
        App(backend=CoreOnly(), plugins=Plugins(entry_points=False)).cancel(["a"])


def test_schedule_slots_are_implemented_and_reached_through_the_scheduler() -> None:
    """ScheduleSlots left the provisional list: the built-in backends declare it; a Scheduler asks for it."""
    from jobchain.scheduler import Scheduler

    assert "Provisional" not in (ScheduleSlots.__doc__ or "")
    assert supports(MemoryBackend, ScheduleSlots)
    with pytest.raises(NotSupportedError, match=r"does not support schedules \(capability ScheduleSlots\)"):
        Scheduler(App(backend=CoreOnly(), plugins=Plugins(entry_points=False)))


def test_the_contract_module_exports_what_an_author_needs() -> None:
    for name in contract.__all__:
        assert hasattr(contract, name), name
    for name in (
        "Backend",
        "FailedQueue",
        "Stats",
        "WorkerRegistry",
        "require",
        "supports",
        "workflow",
        "NotSupportedError",
        "BackendRegistry",
        "hookimpl",
        "order_key",
        "Clock",
        "Job",
        "Delivery",
    ):
        assert name in contract.__all__


def test_a_spec_knows_its_backends_capabilities() -> None:
    assert BackendSpec("m", MemoryBackend.from_url, "", "x").capabilities == [
        "FailedQueue",
        "WorkerRegistry",
        "Stats",
        "Cancel",
        "Pause",
        "Browse",
        "Uniqueness",
        "ScheduleSlots",
        "RateLimits",
        "ConcurrencyLimits",
        "AsyncClient",
    ]
    assert BackendSpec("c", CoreOnly, "", "x").capabilities == []
    assert BackendSpec("f", lambda url, **kw: MemoryBackend(), "", "x").capabilities is None


def test_jobchain_backends_lists_capabilities() -> None:
    result = CliRunner().invoke(cli, ["backends", "--json"])
    assert result.exit_code == 0, result.output
    memory = next(b for b in json.loads(result.output)["backends"] if b["scheme"] == "memory")
    expected = [
        "FailedQueue",
        "WorkerRegistry",
        "Stats",
        "Cancel",
        "Pause",
        "Browse",
        "Uniqueness",
        "ScheduleSlots",
        "RateLimits",
        "ConcurrencyLimits",
        "AsyncClient",
    ]
    assert memory["capabilities"] == expected
    table = CliRunner().invoke(cli, ["backends"])
    assert "capabilities" in table.output.splitlines()[0]
