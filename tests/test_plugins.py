"""The plugin system: backend registry, entry-point loading, and event hooks that may fail."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from typing import Any

import pluggy
import pytest
import structlog.testing

import jobchain.memory
from jobchain import (
    App,
    Backend,
    BackendRegistry,
    DuplicateSchemeError,
    Job,
    PluginLoadError,
    Plugins,
    UnknownBackendError,
    Worker,
    hookimpl,
)
from jobchain.memory import MemoryBackend


class FakeDistribution:
    def __init__(self, name: str) -> None:
        self.name = name


class FakeEntryPoint:
    """Stands in for an importlib.metadata entry point of group `jobchain`."""

    def __init__(self, name: str, distribution: str, load: Callable[[], Any]) -> None:
        self.name = name
        self.dist = FakeDistribution(distribution)
        self.group = "jobchain"
        self._load = load
        self.loaded = 0

    def load(self) -> Any:
        self.loaded += 1
        return self._load()


@pytest.fixture
def fake_entry_points(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Make importlib.metadata report the given entry points for group `jobchain`."""

    def install(*points: FakeEntryPoint) -> None:
        def entry_points(**params: Any) -> list[FakeEntryPoint]:
            assert params == {"group": "jobchain"}
            return list(points)

        monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)

    monkeypatch.delenv("JOBCHAIN_DISABLE_PLUGINS", raising=False)
    return install


def core_entry_point() -> FakeEntryPoint:
    return FakeEntryPoint("jobchain-memory", "jobchain", lambda: jobchain.memory)


class SchemePlugin:
    """A backend plugin serving the given schemes with memory backends."""

    def __init__(self, *schemes: str) -> None:
        self.schemes = schemes
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def factory(self, url: str, **options: Any) -> Backend:
        self.calls.append((url, options))
        return MemoryBackend(url, **options)

    @hookimpl
    def jobchain_register_backends(self, registry: BackendRegistry) -> None:
        for scheme in self.schemes:
            registry.add(scheme, self.factory, summary=f"test backend {scheme}")


class Recorder:
    """Records job events as (hook, task) pairs."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    @hookimpl
    def jobchain_job_started(self, job: Job) -> None:
        self.events.append(("started", job.task))

    @hookimpl
    def jobchain_job_succeeded(self, job: Job, result: Any) -> None:
        self.events.append(("succeeded", job.task))


class Broken:
    """Raises in every job event it implements."""

    @hookimpl
    def jobchain_job_started(self, job: Job) -> None:
        raise RuntimeError(f"broken plugin saw {job.task}")

    @hookimpl
    def jobchain_job_succeeded(self, job: Job) -> None:
        raise RuntimeError("broken again")


# --- the real entry point -------------------------------------------------------------------


def test_installed_entry_point_provides_memory_backend() -> None:
    """The jobchain distribution's own entry point registers memory://, as a third party would."""
    plugins = Plugins()
    spec = plugins.backends.get("memory")
    assert spec is not None
    assert spec.distribution == "jobchain"
    assert isinstance(plugins.open_backend("memory://"), MemoryBackend)
    assert not [f for f in plugins.failures if f.distribution == "jobchain"]


# --- the registry ---------------------------------------------------------------------------


def test_plugin_registered_directly_serves_its_scheme(plugins: Plugins) -> None:
    """A plugin object registered by hand serves its scheme, with the App's clock and aging interval."""
    plugin = SchemePlugin("fake")
    plugins.register(plugin, distribution="my-app")
    app = App("fake://somewhere/1", plugins=plugins, aging_interval=4.0)
    assert isinstance(app.backend, MemoryBackend)
    ((url, options),) = plugin.calls
    assert url == "fake://somewhere/1"
    assert (options["aging_interval"], options["clock"]) == (4.0, app.clock)
    spec = plugins.backends.get("fake")
    assert spec is not None
    assert (spec.distribution, spec.summary) == ("my-app", "test backend fake")


def test_registering_later_rebuilds_the_registry(plugins: Plugins) -> None:
    """A plugin registered after the registry was first read is seen on the next read."""
    assert "late" not in plugins.backends
    plugins.register(SchemePlugin("late"))
    assert "late" in plugins.backends


def test_duplicate_scheme_names_both_distributions(fake_entry_points: Callable[..., None]) -> None:
    """Two installed plugins claiming one scheme give an error naming both distributions."""
    fake_entry_points(
        core_entry_point(),
        FakeEntryPoint("sqs", "jobchain-sqs", lambda: SchemePlugin("sqs")),
        FakeEntryPoint("sqs-fork", "jobchain-sqs-fork", lambda: SchemePlugin("sqs")),
    )
    plugins = Plugins()
    with pytest.raises(DuplicateSchemeError) as info:
        plugins.open_backend("sqs://queue")
    message = str(info.value)
    assert "backend scheme 'sqs' is registered twice" in message
    assert (info.value.first, info.value.second) == ("jobchain-sqs", "jobchain-sqs-fork")
    assert f"by {info.value.first} and by {info.value.second}" in message
    assert isinstance(plugins.open_backend("memory://"), MemoryBackend)


def test_registry_add_twice_is_an_error() -> None:
    """BackendRegistry.add refuses a scheme it already has, naming both distributions."""
    registry = BackendRegistry()
    registry._set_distribution("first-dist")
    registry.add("x", MemoryBackend)
    registry._set_distribution("second-dist")
    with pytest.raises(DuplicateSchemeError, match="by first-dist and by second-dist"):
        registry.add("X", MemoryBackend)


# --- unknown schemes ------------------------------------------------------------------------


@pytest.fixture
def memory_only(plugins: Plugins) -> Plugins:
    plugins.register(jobchain.memory, distribution="jobchain")
    return plugins


def test_unknown_scheme_lists_installed_schemes(memory_only: Plugins) -> None:
    """An unknown scheme is named, with the schemes that are installed."""
    memory_only.register(SchemePlugin("fake"))
    with pytest.raises(UnknownBackendError) as info:
        memory_only.open_backend("nope://host")
    assert str(info.value) == "no backend for 'nope://'; installed: fake, memory"
    assert (info.value.scheme, info.value.installed) == ("nope", ("fake", "memory"))


@pytest.mark.parametrize(
    "url", ["redis-lists://localhost:6379/0", "redis-streams+sentinel://h:26379/0", "rediss://h/0"]
)
def test_unknown_redis_scheme_hints_the_distribution(memory_only: Plugins, url: str) -> None:
    """A redis URL without the redis plugin says to install jobchain-redis."""
    with pytest.raises(UnknownBackendError) as info:
        memory_only.open_backend(url)
    scheme = url.split("://")[0]
    assert f"no backend for '{scheme}://'; installed: memory" in str(info.value)
    assert f"install jobchain-redis for {scheme}://" in str(info.value)
    assert "pip install jobchain-redis" in info.value.hint


def test_url_without_scheme_says_what_a_url_looks_like(memory_only: Plugins) -> None:
    """A backend 'URL' without :// is refused with an example of a URL."""
    with pytest.raises(UnknownBackendError, match="looks like memory://"):
        memory_only.open_backend("localhost:6379")


# --- loading from entry points ----------------------------------------------------------------


def failing_import() -> Any:
    raise ModuleNotFoundError("No module named 'jobchain_broken'")


def test_failing_entry_point_is_reported_with_its_distribution(
    fake_entry_points: Callable[..., None],
) -> None:
    """A plugin that fails to import is kept as a PluginLoadError naming its distribution."""
    fake_entry_points(core_entry_point(), FakeEntryPoint("broken", "jobchain-broken", failing_import))
    with structlog.testing.capture_logs() as logs:
        plugins = Plugins()
    (failure,) = plugins.failures
    assert isinstance(failure, PluginLoadError)
    assert (failure.entry_point, failure.distribution) == ("broken", "jobchain-broken")
    assert str(failure) == (
        "plugin 'broken' from jobchain-broken failed to load: "
        "ModuleNotFoundError: No module named 'jobchain_broken'"
    )
    assert [(e["event"], e["distribution"]) for e in logs] == [("plugin_load_failed", "jobchain-broken")]


def test_failing_entry_point_does_not_break_other_backends(fake_entry_points: Callable[..., None]) -> None:
    """With one plugin failing to load, the others still work and unknown schemes mention the failure."""
    fake_entry_points(core_entry_point(), FakeEntryPoint("broken", "jobchain-broken", failing_import))
    with structlog.testing.capture_logs():
        plugins = Plugins()
    assert isinstance(plugins.open_backend("memory://"), MemoryBackend)
    with pytest.raises(UnknownBackendError, match="plugins that failed to load: jobchain-broken"):
        plugins.open_backend("broken://x")


class Misspelt:
    @hookimpl
    def jobchain_job_startd(self, job: Job) -> None:
        return None


def test_misspelt_hook_in_entry_point_is_that_plugins_failure(
    fake_entry_points: Callable[..., None],
) -> None:
    """An installed plugin with an unknown hook fails to load on its own, and nothing else breaks."""
    fake_entry_points(core_entry_point(), FakeEntryPoint("typo", "jobchain-typo", Misspelt))
    with structlog.testing.capture_logs():
        plugins = Plugins()
    (failure,) = plugins.failures
    assert failure.distribution == "jobchain-typo"
    assert "jobchain_job_startd" in failure.reason
    assert not plugins.pm.has_plugin("typo")
    assert isinstance(plugins.open_backend("memory://"), MemoryBackend)


def test_misspelt_hook_registered_directly_fails_loudly(plugins: Plugins) -> None:
    """Registering an object with an unknown jobchain hook raises at once."""
    with pytest.raises(pluggy.PluginValidationError, match="jobchain_job_startd"):
        plugins.register(Misspelt())


@pytest.mark.parametrize("disabled", ["extra", "jobchain-extra", "*", "other, jobchain-extra"])
def test_disabled_plugins_are_not_loaded(
    fake_entry_points: Callable[..., None], monkeypatch: pytest.MonkeyPatch, disabled: str
) -> None:
    """JOBCHAIN_DISABLE_PLUGINS skips plugins by entry-point or distribution name, or all with *."""
    extra = FakeEntryPoint("extra", "jobchain-extra", lambda: SchemePlugin("extra"))
    fake_entry_points(core_entry_point(), extra)
    monkeypatch.setenv("JOBCHAIN_DISABLE_PLUGINS", disabled)
    plugins = Plugins()
    assert extra.loaded == 0
    assert plugins.backends.schemes() == ["memory"]


def test_enabled_plugins_are_loaded(fake_entry_points: Callable[..., None]) -> None:
    """Without JOBCHAIN_DISABLE_PLUGINS every installed plugin is loaded, with its distribution."""
    fake_entry_points(
        core_entry_point(), FakeEntryPoint("extra", "jobchain-extra", lambda: SchemePlugin("extra"))
    )
    plugins = Plugins()
    assert plugins.backends.schemes() == ["extra", "memory"]
    assert plugins.distributions == {"jobchain-memory": "jobchain", "extra": "jobchain-extra"}


def test_plugin_raising_while_registering_backends_is_reported(plugins: Plugins) -> None:
    """A plugin whose backend registration raises is reported; the other plugins' backends remain."""

    class Faulty:
        @hookimpl
        def jobchain_register_backends(self, registry: BackendRegistry) -> None:
            raise RuntimeError("no config")

    plugins.register(jobchain.memory, distribution="jobchain")
    plugins.register(Faulty(), distribution="jobchain-faulty")
    with structlog.testing.capture_logs():
        assert plugins.backends.schemes() == ["memory"]
    (failure,) = plugins.failures
    assert (failure.distribution, failure.reason) == ("jobchain-faulty", "RuntimeError: no config")


# --- event hooks ------------------------------------------------------------------------------


def test_raising_hook_is_logged_and_later_hooks_still_run(plugins: Plugins) -> None:
    """An event implementation that raises is logged with its plugin's name; the next one still runs."""
    before, after = Recorder(), Recorder()
    plugins.register(before)
    plugins.register(Broken(), name="broken-metrics")
    plugins.register(after)
    job = Job(id="j", task="t", enqueued_at=0.0)
    with structlog.testing.capture_logs() as logs:
        plugins.emit("jobchain_job_started", job=job, worker="w", thread="t1")
    assert before.events == after.events == [("started", "t")]
    (entry,) = logs
    assert entry["event"] == "hook_failed"
    assert (entry["plugin"], entry["hook"], entry["log_level"]) == (
        "broken-metrics",
        "jobchain_job_started",
        "warning",
    )
    assert (entry["error_type"], entry["error"]) == ("RuntimeError", "broken plugin saw t")
    assert entry["traceback"].endswith("RuntimeError: broken plugin saw t\n")


def test_plugin_without_a_name_is_logged_by_its_class(plugins: Plugins) -> None:
    """A plugin registered without a name is named after its class in logs."""
    plugins.register(Broken())
    with structlog.testing.capture_logs() as logs:
        plugins.emit(
            "jobchain_job_started", job=Job(id="j", task="t", enqueued_at=0.0), worker="w", thread="x"
        )
    assert [e["plugin"] for e in logs] == ["Broken"]


def test_hook_implementations_take_any_subset_of_arguments(plugins: Plugins) -> None:
    """An implementation is called with only the parameters it declares."""
    seen: list[Any] = []

    class Minimal:
        @hookimpl
        def jobchain_worker_stopped(self, processed: int) -> None:
            seen.append(processed)

    plugins.register(Minimal())
    plugins.emit("jobchain_worker_stopped", worker="w", processed=7)
    assert seen == [7]


def test_worker_goes_on_when_a_plugin_raises(app: App, start_worker: Callable[..., Worker]) -> None:
    """Jobs still succeed, and other plugins still hear of them, when a plugin raises in every event."""
    recorder = Recorder()
    app.plugins.register(Broken(), name="broken-metrics")
    app.plugins.register(recorder)

    @app.task
    def square(x: int) -> int:
        return x * x

    handles = [square.submit(i) for i in range(3)]
    with structlog.testing.capture_logs() as logs:
        start_worker(app)
        assert [h.wait(timeout=2) for h in handles] == [0, 1, 4]
    assert sorted(recorder.events) == [("started", "square")] * 3 + [("succeeded", "square")] * 3
    failures = [(e["plugin"], e["hook"]) for e in logs if e["event"] == "hook_failed"]
    assert (
        sorted(failures)
        == [("broken-metrics", "jobchain_job_started")] * 3
        + [("broken-metrics", "jobchain_job_succeeded")] * 3
    )
