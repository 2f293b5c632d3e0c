"""The client's submit buffer: submits accepted while the backend is down, stored once, in order, bounded."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
import structlog

from jobchain import (
    App,
    BackendUnavailableError,
    ChainHandle,
    ConfigurationError,
    InvalidJobError,
    JobHandle,
    NotReadyError,
    Plugins,
    SubmitBuffer,
    SubmitBufferFullError,
    SubmitsNotStoredError,
    WaitTimeoutError,
)
from jobchain.memory import MemoryBackend
from jobchain.model import ChainRecord, Job

#: a buffer that retries fast, so that tests wait milliseconds for a flush
FAST = SubmitBuffer(retry_base=0.01, retry_cap=0.05)


class FaultyBackend(MemoryBackend):
    """A memory backend whose submits fail on demand, like a Redis that went away.

    ``down``: every submit raises BackendUnavailableError before writing.
    ``lose_replies``: that many of the next submits write, then raise (the reply was lost).
    ``refuse``: ids whose submit raises InvalidJobError (the backend refuses them for good).
    ``stored`` lists job ids in the order they were first stored.
    """

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.lose_replies = 0
        self.refuse: set[str] = set()
        self.stored: list[str] = []
        self.calls: list[tuple[str, tuple[str, ...]]] = []
        self._fault_lock = threading.Lock()

    def _submit(self, how: str, jobs: Sequence[Job], chains: Sequence[ChainRecord]) -> None:
        with self._fault_lock:
            self.calls.append((how, tuple(j.id for j in jobs)))
            if self.down:
                raise BackendUnavailableError("faulty://", "connection refused (injected)")
            if any(j.id in self.refuse for j in jobs):
                raise InvalidJobError("refused (injected)")
            if how == "enqueue_new":
                assert not any(self.get_job(j.id) for j in jobs), "enqueue_new with an id that exists"
            self.stored += [j.id for j in jobs if self.get_job(j.id) is None]
            MemoryBackend.enqueue(self, jobs, chains)
            if self.lose_replies:
                self.lose_replies -= 1
                raise BackendUnavailableError("faulty://", "connection reset after the write (injected)")

    def enqueue(self, jobs: Sequence[Job], chains: Sequence[ChainRecord] = ()) -> None:
        self._submit("enqueue", jobs, chains)

    def enqueue_new(self, jobs: Sequence[Job], chains: Sequence[ChainRecord] = ()) -> None:
        self._submit("enqueue_new", jobs, chains)


@pytest.fixture
def backend() -> FaultyBackend:
    return FaultyBackend()


@pytest.fixture
def make_app(plugins: Plugins, backend: FaultyBackend) -> Iterator[Callable[..., App]]:
    """An App on the faulty backend, with a task ``echo``; closed (buffer given up) at teardown."""
    made: list[App] = []

    def make(buffer: SubmitBuffer | None = FAST) -> App:
        app = App(backend, plugins=plugins, buffer=buffer)

        @app.task
        def echo(x: Any) -> Any:
            return x

        made.append(app)
        return app

    yield make
    backend.down = False
    for app in made:
        app.close(timeout=5)


def test_a_submit_while_down_is_buffered_then_stored(
    make_app: Callable[..., App], backend: FaultyBackend
) -> None:
    """A submit that cannot reach the backend returns a handle that says buffered, then queued once stored."""
    app = make_app()
    backend.down = True
    handle = app.submit("echo", 1)
    assert isinstance(handle, JobHandle)
    assert handle.buffered
    assert handle.status() == "buffered"
    assert handle.record() is None
    with pytest.raises(NotReadyError, match="buffered"):
        handle.result()
    assert app.buffer is not None
    assert len(app.buffer) == 1
    backend.down = False
    handle.wait_stored(timeout=10)
    assert not handle.buffered
    assert handle.status() == "queued"
    assert backend.stored == [handle.id]
    assert len(app.buffer) == 0
    assert app.buffer.bytes == 0


def test_buffered_submits_are_stored_in_submit_order(
    make_app: Callable[..., App], backend: FaultyBackend
) -> None:
    """Jobs buffered during an outage are stored in the order they were submitted, each once."""
    app = make_app()
    before = [app.submit("echo", i) for i in range(3)]
    backend.down = True
    during = [app.submit("echo", i) for i in range(3, 40)]
    assert all(h.status() == "buffered" for h in during)
    backend.down = False
    assert app.buffer is not None
    assert app.buffer.wait_empty(10)
    assert backend.stored == [h.id for h in before + during]
    deliveries = backend.reserve(["default"], limit=100, lease=30, worker="check")
    assert [d.job.args[0] for d in deliveries] == list(range(40))


def test_new_submits_queue_behind_the_buffer_even_when_the_backend_is_back(
    make_app: Callable[..., App], backend: FaultyBackend
) -> None:
    """While anything is buffered, a new submit goes behind it, not straight to the backend."""
    app = make_app(SubmitBuffer(retry_base=0.5, retry_cap=0.5))
    backend.down = True
    first = app.submit("echo", "first")
    backend.down = False  # back, but the flusher is still backing off
    second = app.submit("echo", "second")
    assert second.status() == "buffered"
    assert [how for how, _ in backend.calls] == ["enqueue_new"]  # the second one did not try
    second.wait_stored(timeout=10)
    assert first.status() == "queued"
    assert backend.stored == [first.id, second.id]


def test_a_flush_retried_after_a_lost_reply_stores_each_job_once(
    make_app: Callable[..., App], backend: FaultyBackend
) -> None:
    """A flush whose write went through but whose reply was lost is retried without a second job."""
    app = make_app()
    backend.down = True
    handles = [app.submit("echo", i) for i in range(5)]
    backend.lose_replies = 1
    backend.down = False
    for handle in handles:
        handle.wait_stored(timeout=10)
    flushes = [ids for how, ids in backend.calls if how == "enqueue"]
    assert len(flushes) >= 2
    assert flushes[0] == flushes[1]
    assert backend.stored == [h.id for h in handles]
    deliveries = backend.reserve(["default"], limit=100, lease=30, worker="check")
    assert sorted(d.job.id for d in deliveries) == sorted(h.id for h in handles)


def test_a_submit_whose_reply_was_lost_is_stored_once(
    make_app: Callable[..., App], backend: FaultyBackend
) -> None:
    """A direct submit that was written before its reply was lost is buffered and not stored again."""
    app = make_app()
    backend.lose_replies = 1
    handle = app.submit("echo", "x")
    assert handle.status() == "buffered"  # the client cannot know that it was stored
    handle.wait_stored(timeout=10)
    assert [how for how, _ in backend.calls][:2] == ["enqueue_new", "enqueue"]
    assert backend.stored == [handle.id]
    assert len(backend.reserve(["default"], limit=10, lease=30, worker="check")) == 1


def test_a_full_buffer_raises_at_the_job_limit_and_keeps_what_it_accepted(
    make_app: Callable[..., App], backend: FaultyBackend
) -> None:
    """The submit that would pass max_jobs raises SubmitBufferFullError; the accepted ones are stored."""
    app = make_app(SubmitBuffer(max_jobs=3, retry_base=0.01, retry_cap=0.05))
    backend.down = True
    accepted = [app.submit("echo", i) for i in range(3)]
    with pytest.raises(SubmitBufferFullError, match=r"max_jobs=3") as caught:
        app.submit("echo", 3)
    assert isinstance(caught.value, BackendUnavailableError)
    assert (caught.value.held_jobs, caught.value.max_jobs, caught.value.needed_jobs) == (3, 3, 1)
    backend.down = False
    assert app.buffer is not None
    assert app.buffer.wait_empty(10)
    assert backend.stored == [h.id for h in accepted]


def test_a_full_buffer_raises_at_the_byte_limit(make_app: Callable[..., App], backend: FaultyBackend) -> None:
    """max_bytes bounds the JSON size held; the error names the limit."""
    app = make_app(SubmitBuffer(max_bytes=2_000, retry_base=0.01, retry_cap=0.05))
    backend.down = True
    app.submit("echo", "a" * 800)
    with pytest.raises(SubmitBufferFullError, match=r"max_bytes=2000 \(2.0 KiB\)") as caught:
        app.submit("echo", "b" * 1500)
    assert caught.value.held_bytes < 2_000 < caught.value.held_bytes + caught.value.needed_bytes
    assert app.buffer is not None
    assert len(app.buffer) == 1


def test_a_submit_many_that_does_not_fit_is_refused_whole(
    make_app: Callable[..., App], backend: FaultyBackend
) -> None:
    """submit_many is all or nothing in the buffer too: none of its jobs is kept when they do not all fit."""
    app = make_app(SubmitBuffer(max_jobs=5, retry_base=0.01, retry_cap=0.05))
    backend.down = True
    app.submit("echo", 0)
    with pytest.raises(SubmitBufferFullError):
        app.submit_many([app.tasks["echo"].s(i) for i in range(5)])
    assert app.buffer is not None
    assert len(app.buffer) == 1
    handles = app.submit_many([app.tasks["echo"].s(i) for i in range(4)])
    assert [h.status() for h in handles] == ["buffered"] * 4
    backend.down = False
    for handle in handles:
        handle.wait_stored(timeout=10)
    assert len(backend.stored) == 5


def test_invalid_jobs_are_refused_at_submit_not_buffered(
    make_app: Callable[..., App], backend: FaultyBackend
) -> None:
    """Only an unreachable backend buffers: a job that is not valid raises at once, down or not."""
    app = make_app()
    backend.down = True
    with pytest.raises(InvalidJobError):
        app.submit("echo", object())
    with pytest.raises(InvalidJobError):
        app.submit("echo", 1, 2)
    assert app.buffer is not None
    assert len(app.buffer) == 0


def test_without_a_buffer_submit_raises_unavailable(
    make_app: Callable[..., App], backend: FaultyBackend
) -> None:
    """App(buffer=None) turns buffering off: submit raises BackendUnavailableError."""
    app = make_app(buffer=None)
    backend.down = True
    with pytest.raises(BackendUnavailableError) as caught:
        app.submit("echo", 1)
    assert not isinstance(caught.value, SubmitBufferFullError)
    assert app.buffer is None


def test_close_stores_what_is_buffered_within_its_timeout(
    make_app: Callable[..., App], backend: FaultyBackend
) -> None:
    """App.close(timeout) waits for the buffer to drain when the backend returns in time."""
    app = make_app(SubmitBuffer(retry_base=0.05, retry_cap=0.1))
    backend.down = True
    handles = [app.submit("echo", i) for i in range(3)]
    threading.Timer(0.3, lambda: setattr(backend, "down", False)).start()
    started = time.monotonic()
    app.close(timeout=10)
    assert time.monotonic() - started < 8
    assert backend.stored == [h.id for h in handles]
    assert [h.status() for h in handles] == ["queued"] * 3


def test_close_with_leftovers_raises_naming_the_job_ids(
    make_app: Callable[..., App], backend: FaultyBackend
) -> None:
    """App.close(timeout) raises SubmitsNotStoredError naming every job id not stored, carrying the jobs."""
    app = make_app()
    backend.down = True
    job = app.submit("echo", 1)
    chain = app.submit(app.tasks["echo"].s(2) >> app.tasks["echo"].s())
    with structlog.testing.capture_logs() as logs, pytest.raises(SubmitsNotStoredError) as caught:
        app.close(timeout=0.2)
    error = caught.value
    first_step = chain.job_ids()[0][0]
    assert error.job_ids == (job.id, first_step)
    assert error.chain_ids == (chain.id,)
    assert [j.id for j in error.jobs] == [job.id, first_step]
    assert job.id in str(error)
    assert first_step in str(error)
    assert chain.id in str(error)
    assert job.status() == "not_stored"
    assert chain.status() == "not_stored"
    with pytest.raises(SubmitsNotStoredError):
        job.wait_stored(timeout=1)
    assert [e["job_ids"] for e in logs if e["event"] == "buffered_submits_not_stored"] == [
        [job.id, first_step]
    ]
    assert backend.stored == []


def test_a_chain_submitted_while_down_is_buffered_then_runs(
    make_app: Callable[..., App], backend: FaultyBackend, start_worker: Callable[..., Any]
) -> None:
    """A chain's handle says buffered, knows its job ids, and its wait() covers the outage."""
    app = make_app()
    echo = app.tasks["echo"]
    backend.down = True
    handle = app.submit(echo.s(5) >> echo.s())
    assert isinstance(handle, ChainHandle)
    assert handle.status() == "buffered"
    assert len(handle.job_ids()) == 2
    start_worker(app)
    threading.Timer(0.2, lambda: setattr(backend, "down", False)).start()
    assert handle.wait(timeout=20) == 5
    assert handle.status() == "succeeded"


def test_wait_stored_times_out_while_the_backend_stays_down(
    make_app: Callable[..., App], backend: FaultyBackend
) -> None:
    """wait_stored(timeout) raises WaitTimeoutError saying the job is still buffered."""
    app = make_app()
    backend.down = True
    handle = app.submit("echo", 1)
    with pytest.raises(WaitTimeoutError, match="buffered"):
        handle.wait_stored(timeout=0.1)
    stored = app.submit("echo", 2)  # goes behind: also buffered
    backend.down = False
    stored.wait_stored(timeout=10)
    handle.wait_stored(timeout=0)  # stored before it


def test_a_job_the_backend_refuses_while_flushing_is_reported_and_skipped(
    make_app: Callable[..., App], backend: FaultyBackend
) -> None:
    """A buffered submit the backend refuses for good is given up (not_stored); later ones are stored."""
    app = make_app()
    backend.down = True
    handles = [app.submit("echo", i) for i in range(3)]
    backend.refuse.add(handles[1].id)
    with structlog.testing.capture_logs() as logs:
        backend.down = False
        assert app.buffer is not None
        assert app.buffer.wait_empty(10)
    assert [h.status() for h in handles] == ["queued", "not_stored", "queued"]
    with pytest.raises(SubmitsNotStoredError, match="refused"):
        handles[1].wait_stored(timeout=1)
    assert backend.stored == [handles[0].id, handles[2].id]
    assert [e["job_ids"] for e in logs if e["event"] == "buffered_submit_refused"] == [[handles[1].id]]


def test_an_outage_logs_once_when_buffering_starts_and_once_when_flushed(
    make_app: Callable[..., App], backend: FaultyBackend
) -> None:
    """One warning when the buffer starts filling, one info line when it is flushed, none per submit."""
    app = make_app()
    with structlog.testing.capture_logs() as logs:
        backend.down = True
        for i in range(20):
            app.submit("echo", i)
        time.sleep(0.2)
        backend.down = False
        assert app.buffer is not None
        assert app.buffer.wait_empty(10)
        deadline = time.monotonic() + 5
        while not any(e["event"] == "submit_buffer_flushed" for e in logs) and time.monotonic() < deadline:
            time.sleep(0.01)
    events = [e["event"] for e in logs]
    assert events.count("submits_buffered") == 1
    assert events.count("submit_buffer_waiting") == 1
    assert events.count("submit_buffer_flushed") == 1
    flushed = next(e for e in logs if e["event"] == "submit_buffer_flushed")
    assert flushed["jobs"] == 20


def test_the_flusher_backs_off_while_the_backend_stays_down(
    make_app: Callable[..., App], backend: FaultyBackend
) -> None:
    """Flush attempts are spaced by capped exponential backoff, not a busy loop."""
    app = make_app(SubmitBuffer(retry_base=0.02, retry_cap=0.1))
    backend.down = True
    app.submit("echo", 1)
    time.sleep(1.0)
    attempts = sum(1 for how, _ in backend.calls if how == "enqueue")
    # waits of 0.01-0.02, 0.02-0.04, 0.04-0.08, then 0.05-0.1 each: at most about 20 in a second
    assert 3 <= attempts <= 25


@pytest.mark.parametrize(
    "options",
    [
        {"max_jobs": 0},
        {"max_bytes": -1},
        {"max_jobs": True},
        {"retry_base": 0},
        {"retry_base": 2.0, "retry_cap": 1.0},
        {"flush_batch": 0},
        {"exit_timeout": -1},
    ],
)
def test_buffer_settings_are_validated(options: dict[str, Any]) -> None:
    """Bad SubmitBuffer settings raise ConfigurationError when built."""
    with pytest.raises(ConfigurationError, match="SubmitBuffer"):
        SubmitBuffer(**options)


def test_app_refuses_a_buffer_that_is_not_a_submit_buffer(plugins: Plugins) -> None:
    """App(buffer=...) takes a SubmitBuffer or None."""
    with pytest.raises(ConfigurationError, match="SubmitBuffer"):
        App(MemoryBackend(), plugins=plugins, buffer=10_000)  # type: ignore[arg-type]


EXIT_SCRIPT = """
from jobchain import App, BackendUnavailableError, Plugins, SubmitBuffer
from jobchain.memory import MemoryBackend

class Down(MemoryBackend):
    def enqueue(self, jobs, chains=()):
        raise BackendUnavailableError("down://", "refused")

    enqueue_new = enqueue

app = App(Down(), plugins=Plugins(entry_points=False), buffer=SubmitBuffer(exit_timeout=0.2))

@app.task
def echo(x):
    return x

print("submitted", echo.submit(1).id, flush=True)
"""


def test_a_process_that_exits_with_a_buffer_logs_the_job_ids_it_could_not_store(tmp_path: Any) -> None:
    """At interpreter exit a non-empty buffer gets exit_timeout seconds, then its job ids are logged."""
    import subprocess
    import sys

    script = tmp_path / "exit_app.py"
    script.write_text(EXIT_SCRIPT)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.split("submitted ", 1)[1].split()[0]
    [line] = [ln for ln in done.stdout.splitlines() if "buffered_submits_not_stored" in ln]
    assert job_id in line


# --- explicit ids across the buffer ------------------------------------------------------


def test_a_buffered_explicit_id_replayed_after_it_landed_stores_nothing(
    make_app: Callable[..., App], backend: FaultyBackend
) -> None:
    """A submit under an id buffered while down is not stored again when that id landed meanwhile."""
    app = make_app()
    backend.down = True
    buffered = app.submit_as("order-7", "echo", "from the buffer")
    assert buffered.status() == "buffered"
    backend.down = False
    other = make_app()
    landed = other.submit_as("order-7", "echo", "landed first")  # another client, the backend back
    assert landed.id == buffered.id
    assert app.buffer is not None
    assert app.buffer.wait_empty(10)
    assert backend.stored == ["order-7"]
    [delivery] = backend.reserve(["default"], limit=10, lease=30, worker="check")
    assert delivery.job.args == ("landed first",)
    assert buffered.status() == "running"


def test_a_buffered_explicit_id_whose_write_landed_before_the_lost_reply_is_stored_once(
    make_app: Callable[..., App], backend: FaultyBackend
) -> None:
    """The submit under an id whose reply was lost is buffered and replayed; the replay stores nothing."""
    app = make_app()
    backend.lose_replies = 1
    handle = app.submit_as("once-only", "echo", 1)
    handle.wait_stored(timeout=10)
    again = app.submit_as("once-only", "echo", 2)
    assert again.id == handle.id
    assert backend.stored == ["once-only"]
    assert [c[0] for c in backend.calls] == ["enqueue", "enqueue", "enqueue"]
    assert len(backend.reserve(["default"], limit=10, lease=30, worker="check")) == 1


def test_a_unique_submit_while_down_raises_instead_of_buffering(
    make_app: Callable[..., App], backend: FaultyBackend
) -> None:
    """Only the backend knows which job holds a key: a unique submit is never buffered."""
    app = make_app()
    real = backend.enqueue_unique

    def down(*args: Any, **kwargs: Any) -> list[str]:
        raise BackendUnavailableError("faulty://", "connection refused (injected)")

    backend.enqueue_unique = down  # type: ignore[method-assign]
    with pytest.raises(BackendUnavailableError):
        app.submit(app.tasks["echo"].s(1).set(unique_key="k"))
    assert app.buffer is not None
    assert len(app.buffer) == 0
    backend.enqueue_unique = real  # type: ignore[method-assign]
    assert app.submit(app.tasks["echo"].s(1).set(unique_key="k")).status() == "queued"
