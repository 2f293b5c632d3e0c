"""Payload signing: a job changed after it was signed, or unsigned where signing is required, never runs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from attrs import evolve

from jobchain import App, ChainState, ConfigurationError, Worker, chain, group
from jobchain.clock import ManualClock
from jobchain.ids import new_id
from jobchain.memory import MemoryBackend
from jobchain.model import ChainRef, Completed, FailedEntry, Job
from jobchain.plugins import Plugins
from jobchain.signing import KEYS_ENV, Signer, check_job, sign_job, sign_result, signer_from_config

KEY = "k" * 32
OLD = "o" * 32

StartWorker = Callable[..., Worker]


def _app(backend: MemoryBackend, keys: list[str] | None, **options: Any) -> App:
    return App(backend, plugins=Plugins(entry_points=False), signing_keys=keys, **options)


@pytest.fixture
def backend() -> MemoryBackend:
    return MemoryBackend()


@pytest.fixture
def ran() -> list[tuple[Any, ...]]:
    return []


@pytest.fixture
def declare(ran: list[tuple[Any, ...]]) -> Callable[[App], None]:
    """Declare the same tasks on an App: ``echo`` records its arguments; ``upper`` and ``join`` chain."""

    def declare_on(app: App) -> None:
        @app.task(name="echo")
        def echo(*args: Any, **kwargs: Any) -> Any:
            ran.append(("echo", args, kwargs))
            return args[0] if args else None

        @app.task(name="upper")
        def upper(text: str, suffix: str = "") -> str:
            ran.append(("upper", (text,), {}))
            return text.upper() + suffix

        @app.task(name="join")
        def join(parts: list[str], sep: str = "+") -> str:
            ran.append(("join", (parts,), {}))
            return sep.join(parts)

    return declare_on


@pytest.fixture
def worker_app(backend: MemoryBackend, declare: Callable[[App], None]) -> Iterator[App]:
    """The workers' App: the same backend, keys [KEY]."""
    app = _app(backend, [KEY])
    declare(app)
    yield app
    app.close()


def _drain(app: App, start_worker: StartWorker) -> Worker:
    worker = start_worker(app)
    assert worker.drain(timeout=5.0)
    return worker


def _failed_types(app: App) -> dict[str, str]:
    return {e.job.id: e.error.type for e in app.failed.iter()}


def _enqueue_raw(backend: MemoryBackend, job: Job) -> None:
    """What someone with write access to the store does: put a job there directly."""
    backend.enqueue([job])


# --- the signer -------------------------------------------------------------------------


def test_signer_signs_with_the_first_key_and_accepts_any() -> None:
    """Rotation: a job signed with the old key verifies under [new, old], and not under [new] alone."""
    clock = ManualClock()
    job = Job(id=new_id(), task="echo", args=(1,), enqueued_at=clock.now())
    signed_old = sign_job(Signer([OLD]), job)
    assert check_job(Signer([KEY, OLD]), signed_old) is None
    assert check_job(Signer([KEY]), signed_old) is not None
    signed_new = sign_job(Signer([KEY, OLD]), job)
    assert check_job(Signer([KEY]), signed_new) is None
    assert signed_new.sig != signed_old.sig


def test_signer_refuses_short_keys_and_hides_them() -> None:
    """A key under 16 bytes is refused with a clear error; repr never shows a key."""
    with pytest.raises(ConfigurationError, match="at least 16"):
        Signer(["short"])
    with pytest.raises(ConfigurationError, match="list of keys"):
        signer_from_config(KEY)
    assert KEY not in repr(Signer([KEY]))
    assert KEY not in repr(_app(MemoryBackend(), [KEY]).signer)


def test_keys_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """JOBCHAIN_SIGNING_KEYS (comma-separated) configures an App given no keys; [] turns it off."""
    monkeypatch.setenv(KEYS_ENV, f"{KEY}, {OLD}")
    job = sign_job(Signer([OLD]), Job(id=new_id(), task="echo", enqueued_at=0.0))
    signer = _app(MemoryBackend(), None).signer
    assert signer is not None
    assert check_job(signer, job) is None
    assert _app(MemoryBackend(), []).signer is None


def test_the_signature_covers_what_decides_what_runs() -> None:
    """Changing id, task, args, kwargs, queue, priority or the chain reference breaks the signature."""
    signer = Signer([KEY])
    job = sign_job(signer, Job(id=new_id(), task="echo", args=(1,), kwargs={"a": 1}, enqueued_at=0.0))
    for change in (
        {"id": new_id()},
        {"task": "other"},
        {"args": (2,)},
        {"kwargs": {"a": 2}},
        {"queue": "fast"},
        {"priority": 9},
        {"chain": ChainRef(chain_id="c", step=0)},
    ):
        assert check_job(signer, evolve(job, **change)) is not None, change
    for harmless in ({"attempt": 3}, {"not_before": 5.0}, {"enqueued_at": 7.0}, {"expires_at": 9.0}):
        assert check_job(signer, evolve(job, **harmless)) is None, harmless


def test_the_signature_travels_in_the_stored_form() -> None:
    """``sig``/``psig`` are optional wire fields: kept through to_wire/from_wire; old jobs still read."""
    job = sign_job(Signer([KEY]), Job(id=new_id(), task="echo", args=(1,), enqueued_at=0.0))
    assert Job.from_wire(job.to_wire()) == job
    assert "sig" in job.to_wire()
    plain = Job(id=new_id(), task="echo", enqueued_at=0.0)
    assert "sig" not in plain.to_wire()
    assert "psig" not in plain.to_wire()
    assert Job.from_wire(plain.to_wire()).sig is None


# --- workers ----------------------------------------------------------------------------


def test_a_rewritten_argument_fails_as_bad_signature_and_never_runs(
    backend: MemoryBackend, worker_app: App, ran: list[tuple[Any, ...]], start_worker: StartWorker
) -> None:
    """A signed job whose args were changed in the store goes to the failed queue as BadSignature."""
    good = worker_app.submit("echo", "hello")
    signed = worker_app.backend.get_job(good.id)
    assert signed is not None
    assert signed.job.sig is not None
    forged = evolve(signed.job, id=new_id(), args=("rm -rf /",))
    _enqueue_raw(backend, forged)
    _drain(worker_app, start_worker)
    assert ran == [("echo", ("hello",), {})]
    assert _failed_types(worker_app) == {forged.id: "BadSignature"}
    entry = worker_app.failed.show(forged.id)
    assert isinstance(entry, FailedEntry)
    assert "does not verify" in entry.error.message
    assert KEY not in entry.error.message


def test_an_unsigned_job_fails_when_signatures_are_required(
    backend: MemoryBackend, worker_app: App, ran: list[tuple[Any, ...]], start_worker: StartWorker
) -> None:
    """An unsigned job injected fails as BadSignature; with require_signatures=False it runs."""
    injected = Job(id=new_id(), task="echo", args=("injected",), enqueued_at=backend.now())
    _enqueue_raw(backend, injected)
    _drain(worker_app, start_worker).stop(timeout=5)
    assert ran == []
    assert _failed_types(worker_app) == {injected.id: "BadSignature"}
    assert "unsigned" in (worker_app.failed.list()[0].error.message)

    lenient = _app(backend, [KEY], require_signatures=False)
    seen: list[str] = []
    lenient.task(name="echo")(lambda *a: seen.append("ran"))
    worker_app.failed.redrive([injected.id])
    forged = evolve(sign_job(worker_app.signer, injected), id=new_id(), args=("forged",))
    forged = evolve(forged, task="echo")
    _enqueue_raw(backend, forged)
    _drain(lenient, start_worker)
    assert seen == ["ran"], "the unsigned job runs on a lenient worker; the forged one does not"
    assert _failed_types(lenient) == {forged.id: "BadSignature"}


def test_a_redrive_checks_the_signature_again(
    backend: MemoryBackend, worker_app: App, ran: list[tuple[Any, ...]], start_worker: StartWorker
) -> None:
    """A BadSignature job re-driven from the failed queue fails again and still never runs."""
    injected = Job(id=new_id(), task="echo", args=("injected",), enqueued_at=backend.now())
    _enqueue_raw(backend, injected)
    worker = _drain(worker_app, start_worker)
    assert worker_app.failed.redrive([injected.id]) == [injected.id]
    assert worker.drain(timeout=5.0)
    assert ran == []
    assert _failed_types(worker_app) == {injected.id: "BadSignature"}


def test_without_keys_nothing_changes(
    backend: MemoryBackend,
    declare: Callable[[App], None],
    ran: list[tuple[Any, ...]],
    start_worker: StartWorker,
) -> None:
    """No keys: jobs are stored unsigned and run, signed or not (the worker cannot check)."""
    app = _app(backend, [])
    declare(app)
    handle = app.submit("echo", "plain")
    record = app.backend.get_job(handle.id)
    assert record is not None
    assert record.job.sig is None
    _enqueue_raw(backend, Job(id=new_id(), task="echo", args=("raw",), enqueued_at=backend.now()))
    _drain(app, start_worker)
    assert sorted(r[1][0] for r in ran) == ["plain", "raw"]
    assert list(app.failed) == []


# --- chains -----------------------------------------------------------------------------


def test_signed_chains_and_groups_run_to_the_end(
    worker_app: App, ran: list[tuple[Any, ...]], start_worker: StartWorker
) -> None:
    """Every step verifies: results flow through a chain, a group's fan-in, bound and immutable steps."""
    upper, join, echo = worker_app.tasks["upper"], worker_app.tasks["join"], worker_app.tasks["echo"]
    first = chain(upper, upper.s(suffix="!"), echo.si("fixed"), upper).submit("a")
    fanned = chain(group(upper.s(), upper.s(suffix="?")), join.s(sep="/")).submit("b")
    _drain(worker_app, start_worker)
    assert list(worker_app.failed) == []
    assert first.wait(timeout=5) == "FIXED"
    assert fanned.wait(timeout=5) == "B/B?"


def test_a_chain_step_with_a_forged_previous_result_never_runs(
    backend: MemoryBackend, worker_app: App, ran: list[tuple[Any, ...]]
) -> None:
    """The next step's job carries the previous result's signature: a changed first argument fails."""
    clock_now = backend.now()
    upper = worker_app.tasks["upper"]
    handle = chain(upper, upper.s(suffix="!")).submit("a")
    [step0] = backend.reserve(["default"], limit=1, lease=30.0, worker="w")
    assert check_job(worker_app.signer, step0.job) is None
    result_sig = sign_result(worker_app.signer, step0.job, "A")
    backend.settle(
        [
            Completed(
                delivery=step0, result="A", started_at=clock_now, finished_at=clock_now, result_sig=result_sig
            )
        ]
    )
    [step1] = backend.reserve(["default"], limit=1, lease=30.0, worker="w")
    job = step1.job
    assert (job.args, job.psig is not None) == (("A",), True)
    assert check_job(worker_app.signer, job) is None
    assert check_job(worker_app.signer, evolve(job, args=("EVIL",))) is not None
    assert check_job(worker_app.signer, evolve(job, args=("A", "extra"))) is not None
    assert check_job(worker_app.signer, evolve(job, psig=None)) is not None, "dropping psig must not help"
    assert check_job(worker_app.signer, evolve(job, psig="g:" + job.psig[2:])) is not None  # type: ignore[index]
    assert check_job(worker_app.signer, evolve(job, args=(["A"],), psig="g:" + job.psig[2:])) is not None  # type: ignore[index]
    assert handle.record().steps[0].members[0].result_sig == result_sig  # type: ignore[union-attr]


def test_an_unsigned_result_makes_the_next_step_fail(
    backend: MemoryBackend, worker_app: App, ran: list[tuple[Any, ...]], start_worker: StartWorker
) -> None:
    """A step completed without a result signature (a worker without keys): the next step fails."""
    upper = worker_app.tasks["upper"]
    handle = chain(upper, upper).submit("a")
    [step0] = backend.reserve(["default"], limit=1, lease=30.0, worker="w")
    now = backend.now()
    backend.settle([Completed(delivery=step0, result="EVIL", started_at=now, finished_at=now)])
    _drain(worker_app, start_worker)
    assert ran == []
    assert list(_failed_types(worker_app).values()) == ["BadSignature"]
    assert handle.record().state is ChainState.HALTED  # type: ignore[union-attr]
