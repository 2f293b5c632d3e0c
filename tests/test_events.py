"""The typed events facade: one method per event hook, and the plugins' error isolation kept."""

from __future__ import annotations

import inspect
import typing
from typing import Any

import structlog

from jobchain import ErrorInfo, Job, Plugins, hookimpl, hookspecs
from jobchain.events import EventName, Events

#: hooks the core calls for an answer, not events
NOT_EVENTS = {"jobchain_register_backends", "jobchain_add_commands"}

EVENT_HOOKS = sorted(
    name for name in vars(hookspecs) if name.startswith("jobchain_") and name not in NOT_EVENTS
)


def test_every_event_hook_has_a_facade_method_with_its_parameters() -> None:
    assert EVENT_HOOKS  # the hookspecs were found
    for hook in EVENT_HOOKS:
        event = hook.removeprefix("jobchain_")
        method = getattr(Events, event, None)
        assert method is not None, f"Events has no method for {hook}"
        spec = inspect.signature(getattr(hookspecs, hook))
        facade = inspect.signature(method)
        assert list(facade.parameters)[1:] == list(spec.parameters), hook
        assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in list(facade.parameters.values())[1:]), (
            hook
        )


def test_event_names_are_the_event_hooks() -> None:
    assert sorted(typing.get_args(EventName)) == sorted(h.removeprefix("jobchain_") for h in EVENT_HOOKS)


def test_the_facade_calls_the_hooks_and_isolates_a_failing_plugin() -> None:
    calls: list[tuple[str, Any]] = []

    class Broken:
        @hookimpl
        def jobchain_job_failed(self, job: Job) -> None:
            raise RuntimeError("boom")

    class Recorder:
        @hookimpl
        def jobchain_job_failed(self, job: Job, duration: float) -> None:
            calls.append(("job_failed", (job.id, duration)))

        @hookimpl
        def jobchain_worker_stopped(self, worker: str, processed: int) -> None:
            calls.append(("worker_stopped", (worker, processed)))

    plugins = Plugins(entry_points=False)
    plugins.register(Broken(), name="broken")
    plugins.register(Recorder(), name="recorder")
    events = Events(plugins)
    job = Job(id="j1", task="t", enqueued_at=0.0)
    error = ErrorInfo(type="ValueError", message="bad", attempt=1, at=0.0)
    with structlog.testing.capture_logs() as logs:
        events.job_failed(job=job, error=error, duration=0.5, worker="w", thread="t1")
        events.worker_stopped(worker="w", processed=3)
    assert calls == [("job_failed", ("j1", 0.5)), ("worker_stopped", ("w", 3))]
    assert [(e["event"], e["hook"], e["plugin"]) for e in logs] == [
        ("hook_failed", "jobchain_job_failed", "broken")
    ]


def test_has_listeners() -> None:
    class Progress:
        @hookimpl
        def jobchain_progress(self, done: int) -> None:
            pass

    events = Events(Plugins(entry_points=False, plugins=[Progress()]))
    assert events.has_listeners("progress")
    assert not events.has_listeners("job_started")
