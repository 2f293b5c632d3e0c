"""The value objects: Job validation and wire format, chain records, ids."""

from __future__ import annotations

import json
import re
import threading
import time
from typing import Any

import pytest
from attrs import evolve
from hypothesis import given
from hypothesis import strategies as st

from jobchain import ChainRecord, InvalidJobError, Job, StepState
from jobchain.errortext import cap
from jobchain.ids import id_time, new_id
from jobchain.model import (
    MAX_KEPT_ERRORS,
    ChainRef,
    ChainState,
    Delivery,
    ErrorInfo,
    Failed,
    JobRecord,
    JobState,
    Retried,
    Step,
    StepMember,
    kept_errors,
)

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


def make_job(**overrides: Any) -> Job:
    fields: dict[str, Any] = {"id": "j1", "task": "t", "enqueued_at": 100.0}
    fields.update(overrides)
    return Job(**fields)


jobs = st.builds(
    Job,
    id=st.text(min_size=1, max_size=30),
    task=st.text(min_size=1, max_size=30),
    args=st.lists(json_values, max_size=4),
    kwargs=st.dictionaries(st.text(max_size=10), json_values, max_size=4),
    queue=st.text(min_size=1, max_size=10),
    priority=st.integers(-1000, 1000),
    attempt=st.integers(1, 50),
    enqueued_at=st.floats(0, 4e9),
    not_before=st.none() | st.floats(0, 4e9),
    expires_at=st.none() | st.floats(0, 4e9),
    chain=st.none()
    | st.builds(ChainRef, chain_id=st.text(min_size=1), step=st.integers(0, 20), member=st.integers(0, 20)),
)


# --- Job validation ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"id": ""}, ValueError),
        ({"task": ""}, ValueError),
        ({"queue": ""}, ValueError),
        ({"attempt": 0}, ValueError),
        ({"priority": "high"}, InvalidJobError),
        ({"priority": True}, InvalidJobError),
        ({"not_before": "soon"}, InvalidJobError),
        ({"expires_at": "later"}, InvalidJobError),
    ],
)
def test_job_rejects_invalid_fields(overrides: dict[str, Any], error: type[Exception]) -> None:
    """A Job cannot be built with an empty id, task or queue, a zero attempt or a non-numeric time."""
    with pytest.raises(error):
        make_job(**overrides)


def test_job_args_become_a_tuple() -> None:
    """Positional arguments given as a list are stored as a tuple, so a Job stays immutable."""
    assert make_job(args=[1, 2]).args == (1, 2)


def test_retried_job_keeps_enqueued_at() -> None:
    """The next attempt of a job keeps its enqueue time, so its aging still counts."""
    job = make_job(attempt=2)
    retried = job.retried(not_before=150.0)
    assert (retried.attempt, retried.enqueued_at, retried.not_before) == (3, 100.0, 150.0)


# --- wire format -----------------------------------------------------------------------


@given(jobs)
def test_job_wire_round_trip(job: Job) -> None:
    """A job survives to_wire, JSON encoding and from_wire unchanged."""
    raw = json.loads(json.dumps(job.to_wire()))
    assert Job.from_wire(raw) == job


def test_job_wire_omits_unset_optionals() -> None:
    """The stored form leaves out not_before, expires_at and chain when they are unset."""
    assert set(make_job().to_wire()) == {
        "v",
        "id",
        "task",
        "args",
        "kwargs",
        "queue",
        "priority",
        "attempt",
        "enqueued_at",
    }


@pytest.mark.parametrize(
    ("raw", "detail"),
    [
        ([1, 2], "expected an object, got list"),
        ("{}", "expected an object, got str"),
        ({"task": "t", "enqueued_at": 1.0}, "KeyError: 'id'"),
        ({"id": "j", "task": "t"}, "KeyError: 'enqueued_at'"),
        ({"id": "j", "task": "t", "enqueued_at": "noon"}, "ValueError"),
        ({"id": "j", "task": "t", "enqueued_at": 1.0, "args": "abc"}, "args must be a list"),
        ({"id": "j", "task": "t", "enqueued_at": 1.0, "kwargs": [1]}, "kwargs an object"),
        ({"id": "j", "task": "t", "enqueued_at": 1.0, "attempt": 0}, "attempt"),
        ({"id": "j", "task": "t", "enqueued_at": 1.0, "chain": ["c", 1]}, "IndexError"),
        ({"id": "", "task": "t", "enqueued_at": 1.0}, "id"),
    ],
)
def test_from_wire_rejects_malformed_payloads(raw: Any, detail: str) -> None:
    """A malformed stored job gives InvalidJobError saying what is wrong with it."""
    with pytest.raises(InvalidJobError, match=r"^malformed job payload") as info:
        Job.from_wire(raw)
    assert detail in str(info.value)


@pytest.mark.parametrize("version", [2, 0, "1", None])
def test_from_wire_refuses_an_unknown_payload_version(version: Any) -> None:
    """A stored job written by another version of the wire format is refused, naming the version."""
    raw = {**make_job().to_wire(), "v": version}
    with pytest.raises(InvalidJobError, match=rf"job payload version {version!r} is not known"):
        Job.from_wire(raw)


def test_from_wire_reads_a_payload_without_a_version_as_version_1() -> None:
    """Payloads stored before the version field existed are still read."""
    job = make_job()
    raw = {k: v for k, v in job.to_wire().items() if k != "v"}
    assert Job.from_wire(raw) == job


def test_error_info_from_exception_keeps_type_message_and_traceback() -> None:
    """An ErrorInfo built from a raised exception records its type name, message and traceback."""
    try:
        raise KeyError("missing")
    except KeyError as exc:
        info = ErrorInfo.from_exception(exc, attempt=2, at=5.0)
    assert (info.type, info.message, info.attempt, info.at) == ("KeyError", "'missing'", 2, 5.0)
    assert info.traceback is not None
    assert "test_error_info_from_exception" in info.traceback
    assert ErrorInfo.from_wire(json.loads(json.dumps(info.to_wire()))) == info


class BadStr(Exception):
    def __str__(self) -> str:
        raise BadStr()


class BadStrAndRepr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str")

    def __repr__(self) -> str:
        raise RuntimeError("no repr")


class BadNotes(Exception):
    @property
    def __notes__(self) -> list[str]:  # type: ignore[override]
        raise RuntimeError("no notes")


def raised(exc: BaseException) -> BaseException:
    """``exc`` after it was raised here, so that it has a traceback."""
    try:
        raise exc
    except BaseException as caught:
        return caught


@pytest.mark.parametrize(
    ("exc", "message"),
    [
        (BadStr("x"), "BadStr('x')"),
        (BadStrAndRepr(), "<unprintable BadStrAndRepr>"),
        (BadNotes("noted"), "noted"),
    ],
)
def test_error_info_from_an_unprintable_exception(exc: BaseException, message: str) -> None:
    """str() falls back to repr() and then to <unprintable ExcType>; type name and frames are kept."""
    info = ErrorInfo.from_exception(raised(exc), attempt=1, at=0.0)
    assert (info.type, info.message) == (type(exc).__name__, message)
    assert info.traceback is not None
    assert "in raised" in info.traceback
    assert type(exc).__name__ in info.traceback


def test_error_info_caps_a_huge_message_and_traceback() -> None:
    """A 10 MB message is cut to the cap, for message and traceback each, with a marker of what was cut."""
    big = "x" * 10_000_000
    info = ErrorInfo.from_exception(raised(ValueError(big)), attempt=1, at=0.0)
    head, marker = info.message.split("…")
    assert 64 * 1024 - 4 <= len(info.message.encode()) <= 64 * 1024
    assert set(head) == {"x"}
    assert marker == f" [cut {10_000_000 - len(head):,} bytes]"
    assert info.traceback is not None
    assert len(info.traceback.encode()) <= 64 * 1024
    assert info.traceback.startswith("Traceback (most recent call last):")
    assert "bytes] …\n" in info.traceback
    assert info.traceback.endswith("xxx\n")  # the end of the last line is kept


def test_error_info_cap_is_configurable_and_in_utf8_bytes() -> None:
    """The cap counts UTF-8 bytes and never splits a character."""
    info = ErrorInfo.from_exception(raised(ValueError("é" * 1000)), attempt=1, at=0.0, max_bytes=300)
    encoded = info.message.encode()
    assert len(encoded) <= 300
    head, marker = info.message.split("…")
    assert set(head) == {"é"}
    assert marker == f" [cut {2000 - 2 * len(head):,} bytes]"


def test_error_info_escapes_lone_surrogates() -> None:
    """A message holding a lone surrogate is recorded escaped, so every backend can store it."""
    info = ErrorInfo.from_exception(raised(ValueError("bad \ud800 char")), attempt=1, at=0.0)
    assert info.message == "bad \\ud800 char"
    assert info.traceback is not None
    info.traceback.encode()


@given(text=st.text(), limit=st.integers(min_value=64, max_value=400), keep_tail=st.booleans())
def test_cap_never_exceeds_its_limit(text: str, limit: int, keep_tail: bool) -> None:
    """cap() returns valid UTF-8 within the limit, the text itself when it fits."""
    capped = cap(text, limit, keep_tail=keep_tail)
    size = len(capped.encode("utf-8"))
    assert size <= limit
    escaped = text.encode("utf-8", "backslashreplace")
    if len(escaped) <= limit:
        assert capped == escaped.decode()
    else:
        assert re.search(r"… \[cut [\d,]+ bytes\]", capped)


# --- chain records ---------------------------------------------------------------------


def member(task: str, state: StepState) -> StepMember:
    return StepMember(job_id=f"id-{task}", task=task, state=state)


def record(*steps: Step, state: ChainState = ChainState.RUNNING) -> ChainRecord:
    return ChainRecord(id="c1", steps=steps, created_at=0.0, state=state)


def task_step(task: str, state: StepState) -> Step:
    return Step(kind="task", members=[member(task, state)])


def test_chain_record_renders_step_states() -> None:
    """A halted chain renders as `A (succeeded) -> B (failed) -> C (not executed)`."""
    halted = record(
        task_step("A", StepState.COMPLETED),
        task_step("B", StepState.FAILED),
        task_step("C", StepState.NOT_EXECUTED),
        state=ChainState.HALTED,
    )
    assert halted.render() == "A (succeeded) -> B (failed) -> C (not executed)"


def test_chain_record_renders_group_steps() -> None:
    """A group step renders as group(members) with the state of the step as a whole."""
    group_step = Step(
        kind="group", members=[member("x", StepState.COMPLETED), member("y", StepState.PENDING)]
    )
    chain = record(task_step("A", StepState.COMPLETED), group_step, task_step("C", StepState.PENDING))
    assert chain.render() == "A (succeeded) -> group(x, y) (running) -> C (pending)"


@pytest.mark.parametrize(
    ("states", "expected"),
    [
        ((StepState.COMPLETED, StepState.COMPLETED), StepState.COMPLETED),
        ((StepState.COMPLETED, StepState.FAILED), StepState.FAILED),
        ((StepState.PENDING, StepState.PENDING), StepState.PENDING),
        ((StepState.RUNNING, StepState.PENDING), StepState.RUNNING),
        ((StepState.NOT_EXECUTED, StepState.NOT_EXECUTED), StepState.NOT_EXECUTED),
    ],
)
def test_group_step_state_summarises_members(states: tuple[StepState, ...], expected: StepState) -> None:
    """A group step is failed if any member failed, completed only when all completed."""
    step = Step(kind="group", members=[member(f"m{i}", s) for i, s in enumerate(states)])
    assert step.state is expected


def test_chain_record_result_is_last_step_result_once_completed() -> None:
    """A chain's result is its last step's result, and None until the chain completed."""
    done = StepMember(job_id="j", task="A", state=StepState.COMPLETED, result=42)
    running = ChainRecord(id="c", steps=[Step(kind="task", members=[done])], created_at=0.0)
    completed = ChainRecord(
        id="c", steps=[Step(kind="task", members=[done])], created_at=0.0, state=ChainState.COMPLETED
    )
    assert (running.result, completed.result) == (None, 42)


def test_chain_record_needs_a_step() -> None:
    """A chain record without steps is rejected."""
    with pytest.raises(ValueError):
        ChainRecord(id="c", steps=[], created_at=0.0)


# --- ids -------------------------------------------------------------------------------


def test_ids_sort_in_creation_order() -> None:
    """Ids made one after another, across milliseconds, sort in the order they were made."""
    made = []
    for _ in range(5):
        made.extend(new_id() for _ in range(200))
        time.sleep(0.002)
    assert sorted(made) == made
    assert len(set(made)) == len(made)


def test_ids_carry_their_creation_time() -> None:
    """id_time recovers the wall-clock time at which an id was made, to the millisecond."""
    before = time.time()
    made = new_id()
    after = time.time()
    assert before - 0.001 <= id_time(made) <= after


def test_ids_are_unique_and_ordered_across_threads() -> None:
    """Ids made concurrently by many threads never collide, and each thread's ids increase."""
    per_thread: list[list[str]] = [[] for _ in range(8)]
    barrier = threading.Barrier(len(per_thread))

    def make(out: list[str]) -> None:
        barrier.wait()
        out.extend(new_id() for _ in range(5000))

    threads = [threading.Thread(target=make, args=(out,)) for out in per_thread]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    everything = [i for out in per_thread for i in out]
    assert len(set(everything)) == len(everything)
    assert all(out == sorted(out) for out in per_thread)


def test_error_info_writes_retry_in_only_when_set() -> None:
    """An error without a backoff keeps the wire form earlier versions wrote; one with it round-trips."""
    plain = ErrorInfo(type="E", message="m", attempt=2, at=3.0)
    assert "retry_in" not in plain.to_wire()
    retried = evolve(plain, retry_in=1.5)
    assert retried.to_wire()["retry_in"] == 1.5
    assert ErrorInfo.from_wire(retried.to_wire()) == retried
    assert ErrorInfo.from_wire(plain.to_wire()).retry_in is None


def test_kept_errors_appends_and_keeps_the_last() -> None:
    """The history grows by one per failed attempt and never holds more than MAX_KEPT_ERRORS."""
    history: tuple[ErrorInfo, ...] = ()
    for attempt in range(1, MAX_KEPT_ERRORS + 6):
        history = kept_errors(history, ErrorInfo(type="E", message=str(attempt), attempt=attempt))
    assert len(history) == MAX_KEPT_ERRORS
    assert [e.attempt for e in history] == list(range(6, MAX_KEPT_ERRORS + 6))


def test_outcomes_record_their_error_with_the_backoff() -> None:
    """A retried outcome's recorded error carries its delay; a failed one's carries none."""
    delivery = Delivery(job=Job(id="j", task="t", enqueued_at=1.0), token="k", lease_until=9.0, worker="w")
    error = ErrorInfo(type="E", message="m", retry_in=7.0)
    assert Retried(delivery=delivery, error=error, delay=2.0).recorded_error.retry_in == 2.0
    assert Failed(delivery=delivery, error=error).recorded_error.retry_in is None


def test_job_record_reads_a_record_without_a_history_as_its_error_alone() -> None:
    """A record from before histories (no ``errors`` key) reads with ``error`` as its one entry."""
    error = ErrorInfo(type="E", message="m")
    record = JobRecord(job=Job(id="j", task="t", enqueued_at=1.0), state=JobState.FAILED, error=error)
    wire = record.to_wire()
    assert wire["errors"] == []
    assert JobRecord.from_wire(wire) == record
    del wire["errors"]
    assert JobRecord.from_wire(wire).errors == (error,)
    full = evolve(record, errors=[evolve(error, retry_in=1.0), error])
    assert JobRecord.from_wire(full.to_wire()) == full


def test_error_info_writes_ran_only_when_set() -> None:
    plain = ErrorInfo(type="ValueError", message="bad", attempt=1, at=10.0)
    assert "ran" not in plain.to_wire()
    timed = evolve(plain, ran=0.25)
    assert timed.to_wire()["ran"] == 0.25
    assert ErrorInfo.from_wire(timed.to_wire()) == timed
    assert ErrorInfo.from_wire(plain.to_wire()).ran is None
