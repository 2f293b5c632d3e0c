"""The submit pipeline: one builder for every job and chain record, explicit ids, the buffered backend."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from jobchain import App, BackendUnavailableError, InvalidJobError, JobState, Plugins, SubmitBuffer, chain
from jobchain.buffer import BufferedSubmits
from jobchain.memory import MemoryBackend
from jobchain.model import ChainRecord, Job
from jobchain.signing import Signer, check_job
from jobchain.submission import MAX_ID_LENGTH, Builder, check_id, member_id, member_job
from jobchain.workflow import job_for_member

KEY = "k" * 32


class RecordingBackend(MemoryBackend):
    """A memory backend that records which way each submit was stored, and can be down."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, tuple[str, ...]]] = []
        self.down = False

    def enqueue(self, jobs: Sequence[Job], chains: Sequence[ChainRecord] = ()) -> None:
        self.calls.append(("enqueue", tuple(j.id for j in jobs)))
        if self.down:
            raise BackendUnavailableError("recording://", "down (injected)")
        super().enqueue(jobs, chains)

    def enqueue_new(self, jobs: Sequence[Job], chains: Sequence[ChainRecord] = ()) -> None:
        self.calls.append(("enqueue_new", tuple(j.id for j in jobs)))
        if self.down:
            raise BackendUnavailableError("recording://", "down (injected)")
        assert not any(self.get_job(j.id) for j in jobs), "enqueue_new with an id that exists"
        super().enqueue(jobs, chains)


@pytest.fixture
def backend() -> RecordingBackend:
    return RecordingBackend()


@pytest.fixture
def tasks(plugins: Plugins, backend: RecordingBackend) -> Iterator[App]:
    """An App on the recording backend with tasks ``add``, ``double`` and ``stamp``."""
    app = App(backend, plugins=plugins, buffer=SubmitBuffer(retry_base=0.01, retry_cap=0.05))

    @app.task(priority=1)
    def add(a: int, b: int) -> int:
        return a + b

    @app.task(expires=30.0)
    def double(n: int) -> int:
        return 2 * n

    @app.task
    def stamp(job_id: str) -> str:
        return job_id

    yield app
    backend.down = False
    app.close(timeout=5)


# --- ids ---------------------------------------------------------------------------------


@pytest.mark.parametrize("good", ["a", "report-2024-01-01", "nightly:2024-01-01T00:00", "é" * 200])
def test_check_id_accepts_printable_ids(good: str) -> None:
    """Printable ids without whitespace or '/', up to MAX_ID_LENGTH characters, are accepted as they are."""
    assert check_id(good) == good


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        ("", "must not be empty"),
        ("x" * (MAX_ID_LENGTH + 1), "at most 200"),
        ("a b", "whitespace"),
        ("a\tb", "whitespace"),
        ("a\x00b", "unprintable"),
        ("a\x7fb", "unprintable"),
        ("\ud800", "unprintable"),
        ("a/b", "'/'"),
        (42, "must be a string"),
        (None, "must be a string"),
    ],
)
def test_check_id_refuses_what_cannot_be_an_id(bad: Any, says: str) -> None:
    """An id that is empty, too long, has whitespace, control characters or '/' is an InvalidJobError."""
    with pytest.raises(InvalidJobError, match=says):
        check_id(bad)


def test_job_for_member_is_the_builders() -> None:
    """Backends build a chain step's jobs with the submit pipeline's member_job."""
    assert job_for_member is member_job


# --- explicit job ids ----------------------------------------------------------------------


def test_task_submit_takes_an_explicit_job_id(tasks: App, backend: RecordingBackend) -> None:
    """task.submit(..., job_id=...) stores the job under that id, through enqueue (ids may exist)."""
    handle = tasks.tasks["add"].submit(1, 2, job_id="sum-1")
    assert handle.id == "sum-1"
    record = backend.get_job("sum-1")
    assert record is not None
    assert record.job.args == (1, 2)
    assert record.state is JobState.QUEUED
    assert backend.calls == [("enqueue", ("sum-1",))]


def test_fresh_ids_are_stored_with_enqueue_new(tasks: App, backend: RecordingBackend) -> None:
    """Without an explicit id the submit goes through enqueue_new, as before."""
    handle = tasks.tasks["add"].submit(1, 2)
    assert backend.calls == [("enqueue_new", (handle.id,))]


def test_submitting_an_existing_id_stores_nothing_and_returns_its_handle(
    tasks: App, backend: RecordingBackend
) -> None:
    """A second submit with the same id stores nothing: the handle is the first job's."""
    first = tasks.tasks["add"].submit(1, 2, job_id="once")
    again = tasks.tasks["add"].submit(40, 2, job_id="once")
    assert again.id == first.id == "once"
    record = backend.get_job("once")
    assert record is not None
    assert record.job.args == (1, 2)
    assert sum(s.ready for s in backend.stats()) == 1


def test_an_invalid_job_id_is_refused_and_nothing_is_stored(tasks: App, backend: RecordingBackend) -> None:
    """An id that check_id refuses raises InvalidJobError at submit; nothing reaches the backend."""
    with pytest.raises(InvalidJobError, match="whitespace"):
        tasks.tasks["add"].submit(1, 2, job_id="has space")
    assert backend.calls == []


def test_signature_option_and_app_submit_as(tasks: App, backend: RecordingBackend) -> None:
    """The id can come with the signature (set(job_id=)) or from app.submit_as; submit_many keeps it."""
    add = tasks.tasks["add"]
    assert add.s(1, 2).set(job_id="sig-1").submit().id == "sig-1"
    assert add.s(1).submit(2, job_id="sig-2").id == "sig-2"
    assert tasks.submit_as("as-1", "add", 3, 4).id == "as-1"
    handles = tasks.submit_many([add.s(5, 6).set(job_id="many-1"), add.s(7, 8)])
    assert handles[0].id == "many-1"
    assert backend.calls[-1] == ("enqueue", ("many-1", handles[1].id))
    assert {"sig-1", "sig-2", "as-1", "many-1"} <= {j for _, ids in backend.calls for j in ids}


def test_a_task_argument_named_job_id_travels_through_a_signature(
    tasks: App, backend: RecordingBackend
) -> None:
    """task.submit reserves job_id for the job's id; the task gets such an argument with task.s(job_id=)."""
    handle = tasks.tasks["stamp"].s(job_id="an-argument").submit()
    record = backend.get_job(handle.id)
    assert record is not None
    assert handle.id != "an-argument"
    assert record.job.kwargs == {"job_id": "an-argument"}


# --- explicit chain ids ----------------------------------------------------------------------


def test_chain_submit_takes_an_explicit_chain_id(tasks: App, backend: RecordingBackend) -> None:
    """chain.submit(..., chain_id=) names the record; its members' job ids derive from it."""
    pipeline = chain(tasks.tasks["add"], tasks.tasks["double"], name="pipeline")
    handle = pipeline.submit(1, 2, chain_id="pipe-1")
    assert handle.id == "pipe-1"
    record = backend.get_chain("pipe-1")
    assert record is not None
    assert [m.job_id for s in record.steps for m in s.members] == ["pipe-1.0.0", "pipe-1.1.0"]
    assert member_id("pipe-1", 1, 0) == "pipe-1.1.0"
    assert backend.calls == [("enqueue", ("pipe-1.0.0",))]
    again = pipeline.submit(5, 5, chain_id="pipe-1")
    assert again.id == "pipe-1"
    stored = backend.get_job("pipe-1.0.0")
    assert stored is not None
    assert stored.job.args == (1, 2)
    assert sum(s.ready for s in backend.stats()) == 1


def test_a_group_takes_an_explicit_chain_id(tasks: App, backend: RecordingBackend) -> None:
    """A group is a chain of one step: its id and member ids follow the same rule."""
    from jobchain import group

    handle = group(tasks.tasks["double"].s(1), tasks.tasks["double"].s(2)).submit(chain_id="fan")
    record = backend.get_chain(handle.id)
    assert record is not None
    assert record.kind == "group"
    assert [m.job_id for m in record.steps[0].members] == ["fan.0.0", "fan.0.1"]


def test_an_invalid_chain_id_is_refused(tasks: App, backend: RecordingBackend) -> None:
    """A chain id goes through the same check as a job id."""
    with pytest.raises(InvalidJobError, match="chain id"):
        chain(tasks.tasks["add"], tasks.tasks["double"]).submit(1, 2, chain_id="a/b")
    assert backend.calls == []


# --- the builder ----------------------------------------------------------------------------


def test_builder_options_win_over_the_signature_and_the_task(tasks: App) -> None:
    """Options given to the builder beat the signature's, which beat the task's; delay, expires timed."""
    builder = Builder()
    add, double = tasks.tasks["add"], tasks.tasks["double"]
    job = builder.job(add.s(1).set(queue="q1", priority=5, delay=2.0), (2,), now=100.0)
    assert (job.args, job.queue, job.priority, job.not_before) == ((1, 2), "q1", 5, 102.0)
    job = builder.job(
        add.s(1).set(queue="q1", priority=5), (2,), now=100.0, queue="q2", priority=-1, delay=1.0
    )
    assert (job.queue, job.priority, job.not_before) == ("q2", -1, 101.0)
    job = builder.job(double.s(), (3,), now=100.0)
    assert (job.queue, job.priority, job.expires_at, job.not_before) == ("default", 0, 130.0, None)


def test_builder_checks_payload_and_call_once_for_every_way_in(tasks: App) -> None:
    """Non-JSON arguments, an oversized payload and a call the task cannot take are refused."""
    builder = Builder(max_payload=64)
    add = tasks.tasks["add"]
    with pytest.raises(InvalidJobError, match="JSON-serialisable"):
        builder.job(add.s(), ({1, 2}, 3), now=0.0)
    with pytest.raises(InvalidJobError, match="over the limit"):
        builder.job(add.s(), ("x" * 100, 3), now=0.0)
    with pytest.raises(InvalidJobError, match="cannot take these arguments"):
        builder.job(add.s(), (1, 2, 3), now=0.0)
    with pytest.raises(InvalidJobError, match="over the limit"):
        builder.named_job("anything", ["x" * 100], now=0.0)


def test_builder_signs_jobs_and_chain_members(tasks: App) -> None:
    """With a signer, jobs and a chain's first jobs verify; without one, nothing is signed."""
    signer = Signer([KEY])
    builder = Builder(signer=signer)
    job = builder.named_job("add", [1, 2], now=0.0, job_id="signed")
    assert job.sig is not None
    assert check_job(signer, job) is None
    record, first = builder.chain(chain(tasks.tasks["add"], tasks.tasks["double"]), (1, 2), now=0.0)
    assert all(m.sig is not None for s in record.steps for m in s.members)
    assert check_job(signer, first[0]) is None
    assert Builder().named_job("add", [1, 2], now=0.0).sig is None


# --- the buffered backend ------------------------------------------------------------------


def test_buffered_submits_wrap_a_backend() -> None:
    """BufferedSubmits stores through the backend it wraps (None: stored), or holds while it is down."""
    backend = RecordingBackend()
    buffered = BufferedSubmits(backend, SubmitBuffer(retry_base=0.01, retry_cap=0.05))
    job = Builder().named_job("echo", [1], now=0.0)
    assert buffered.enqueue_new([job]) is None
    assert backend.get_job(job.id) is not None
    backend.down = True
    later = Builder().named_job("echo", [2], now=0.0, job_id="later")
    pending = buffered.enqueue([later])
    assert pending is not None
    assert len(buffered) == 1
    backend.down = False
    assert buffered.wait_empty(10)
    assert pending.state == "stored"
    assert backend.get_job("later") is not None
    buffered.close(1)


def test_an_explicit_id_buffered_while_down_is_stored_once(tasks: App, backend: RecordingBackend) -> None:
    """An explicit-id submit made during an outage waits in the buffer, then is stored through enqueue."""
    backend.down = True
    handle = tasks.tasks["add"].submit(1, 2, job_id="during-outage")
    assert handle.buffered
    backend.down = False
    handle.wait_stored(10)
    assert handle.status() == "queued"
    assert [how for how, ids in backend.calls if "during-outage" in ids] == ["enqueue", "enqueue"]


def test_app_buffer_follows_a_backend_switch(plugins: Plugins) -> None:
    """use_backend points the App's buffer at the new backend."""
    first, second = MemoryBackend(), MemoryBackend()
    app = App(first, plugins=plugins)
    assert app.buffer is not None
    assert app.buffer.backend is first
    app.use_backend(second)
    assert app.buffer.backend is second
    assert App(first, plugins=plugins, buffer=None).buffer is None
    app.close()
