"""The fault suite's harness: worker tasks that record every run, a recording client, and the checks.

Two halves in one module, which imports only jobchain and the standard library:

* **In the worker processes** (``jobchain worker --config`` this file): the
  tasks ``job(key)`` and the chain ``first -> second -> third``. Every run
  appends a JSON line (task, key, job id, chain id, step, pid, start, end) to a
  file of its own process under ``$FAULT_TEST_RUNS``, and every answer the
  backend gives to a settlement another (job id, outcome, accepted): runs and
  outcomes are recorded outside the Redis under test, one ``os.write`` per line
  through an ``O_APPEND`` descriptor. The backend is the worker's
  ``--backend`` URL (for redis-streams with a short ``?orphan_idle=``).
* **In the test**: :class:`Submitter` (a thread submitting a job or a chain
  every 10 ms and recording each attempt: tried, acknowledged = the handle
  returned, buffered, stored), :func:`start_workers` / :func:`stop_workers`
  (real processes, stopped by their PID), :func:`drain` (until nothing is
  ready, delayed or in flight and every acknowledged submit has its outcome)
  and :func:`check` (lost 0, one outcome per job, no chain step enqueued twice,
  duplicates only for jobs held at a fault, chains in order).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobchain import App, chain, hookimpl
from jobchain.model import ChainState, Delivery, Job, JobState, Outcome, SettleResult

QUEUE = "default"
STEPS = ("first", "second", "third")


# --- the worker side ----------------------------------------------------------------------------


class Recorder:
    """Writes this process' run and settlement lines (a pluggy plugin of the worker's App)."""

    def __init__(self, directory: str, app: App) -> None:
        self.app = app
        self.directory = directory
        self.local = threading.local()
        self.fd: int | None = None
        self.lock = threading.Lock()
        self.wrapped = False

    def write(self, **fields: Any) -> None:
        line = (json.dumps({**fields, "pid": os.getpid()}) + "\n").encode()
        with self.lock:
            if self.fd is None:
                path = os.path.join(self.directory, f"runs-{os.getpid()}.jsonl")
                self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.write(self.fd, line)

    def run(self, task: str, key: str, started: float) -> None:
        job: Job = self.local.job
        chain_id, step = (None, None) if job.chain is None else (job.chain.chain_id, job.chain.step)
        self.write(
            kind="run",
            task=task,
            key=key,
            job=job.id,
            chain=chain_id,
            step=step,
            start=started,
            end=time.time(),
        )

    @hookimpl
    def jobchain_job_started(self, job: Job) -> None:
        self.local.job = job

    @hookimpl
    def jobchain_worker_started(self) -> None:
        if self.wrapped:
            return
        self.wrapped = True
        backend = self.app.backend
        settle, settle_and_take = backend.settle, backend.settle_and_take

        def answered(outcomes: Sequence[Outcome], results: Sequence[SettleResult]) -> None:
            for outcome, result in zip(outcomes, results, strict=True):
                self.write(
                    kind="settle",
                    job=outcome.delivery.job.id,
                    outcome=type(outcome).__name__,
                    accepted=bool(result.accepted),
                    at=time.time(),
                )

        def recorded_settle(outcomes: Sequence[Outcome]) -> list[SettleResult]:
            results = settle(outcomes)
            answered(outcomes, results)
            return results

        def recorded_settle_and_take(
            outcomes: Sequence[Outcome], **options: Any
        ) -> tuple[list[SettleResult], list[Delivery]]:
            results, taken = settle_and_take(outcomes, **options)
            answered(outcomes, results)
            return results, taken

        backend.settle = recorded_settle  # type: ignore[method-assign]
        backend.settle_and_take = recorded_settle_and_take  # type: ignore[method-assign]


app = App()
_recorder = Recorder(os.environ["FAULT_TEST_RUNS"], app) if os.environ.get("FAULT_TEST_RUNS") else None
if _recorder is not None:
    app.plugins.register(_recorder, name="fault-recorder")


def _ran(task: str, key: str, started: float) -> None:
    if _recorder is not None:
        _recorder.run(task, key, started)


@app.task
def job(key: str) -> str:
    started = time.time()
    time.sleep(0.01)
    _ran("job", key, started)
    return key


@app.task
def first(key: str) -> list[str]:
    started = time.time()
    time.sleep(0.005)
    _ran("first", key, started)
    return [key]


@app.task
def second(acc: list[str]) -> list[str]:
    started = time.time()
    time.sleep(0.005)
    _ran("second", acc[0], started)
    return [*acc, "2"]


@app.task
def third(acc: list[str]) -> list[str]:
    started = time.time()
    time.sleep(0.005)
    _ran("third", acc[0], started)
    return [*acc, "3"]


def three_steps(key: str) -> Any:
    """The chain first(key) -> second -> third, whose result is [key, "2", "3"]."""
    return chain(first.s(key), second, third, name="three-steps")


# --- the test side: workers ---------------------------------------------------------------------


def worker_env(runs: Path) -> dict[str, str]:
    """The worker processes' environment: this interpreter's jobchain and jobchain-redis first on the path."""
    import jobchain_redis

    import jobchain

    sources = [str(Path(m.__file__ or "").resolve().parents[1]) for m in (jobchain, jobchain_redis)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JOBCHAIN_", "FAULT_TEST_"))}
    env["PYTHONPATH"] = os.pathsep.join([*dict.fromkeys(sources), env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep
    )
    env["FAULT_TEST_RUNS"] = str(runs)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def start_workers(
    count: int, url: str, runs: Path, logs: Path, *, threads: int, lease: float
) -> list[subprocess.Popen[bytes]]:
    """``count`` processes of ``python -m jobchain worker --config fault_harness.py --backend URL``."""
    import forkserver  # tests/forkserver.py (tests/ is on sys.path under pytest)

    procs = []
    for index in range(count):
        with (logs / f"worker-{index}.log").open("wb") as out:
            procs.append(
                forkserver.popen(
                    [
                        sys.executable,
                        "-m",
                        "jobchain",
                        "worker",
                        "--config",
                        str(Path(__file__).resolve()),
                        "--backend",
                        url,
                        "--concurrency",
                        str(threads),
                        "--lease",
                        str(lease),
                        "--grace",
                        "10",
                        "--name",
                        f"fault-{index}",
                    ],
                    env=worker_env(runs),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
    return procs


def stop_workers(procs: Sequence[subprocess.Popen[bytes]], timeout: float = 20.0) -> list[int | None]:
    """SIGTERM the worker processes the test started (by PID), wait; SIGKILL what is left (code None)."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    codes: list[int | None] = []
    for proc in procs:
        try:
            codes.append(proc.wait(timeout))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
            codes.append(None)
    return codes


def wait_for(
    check: Callable[[], bool], timeout: float, what: str, detail: Callable[[], object] = lambda: ""
) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what} {detail()}")
        time.sleep(0.05)


# --- the test side: the client ------------------------------------------------------------------


@dataclass
class Attempt:
    """One submit as the client saw it: acknowledged when ``handle`` is set (stored, or buffered)."""

    kind: str  # "job" or "chain"
    key: str
    tried: float
    answered: float
    handle: Any = None
    error: str | None = None
    buffered: bool = False


class Submitter:
    """Submits a job, or every fifth time a three-step chain, every ``interval`` seconds from a thread.

    A submit that returned a handle is acknowledged (stored, or held in the
    App's submit buffer and stored later) and must not be lost; one that raised
    is not acknowledged, and the next attempt uses a fresh key.
    """

    def __init__(self, client: App, interval: float = 0.01, prefix: str = "") -> None:
        self.app = client
        self.interval = interval
        self.prefix = prefix
        self.attempts: list[Attempt] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="submitter", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        assert not self._thread.is_alive(), "the submitter is stuck"

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        n, due = 0, time.monotonic()
        while not self._stop.is_set():
            n += 1
            kind = "chain" if n % 5 == 0 else "job"
            key = f"{self.prefix}{kind[0]}{n}"
            target = three_steps(key) if kind == "chain" else job.s(key)
            tried = time.time()
            try:
                handle = self.app.submit(target)
            except Exception as exc:  # recorded: the checks say which errors are allowed
                self.attempts.append(Attempt(kind, key, tried, time.time(), error=type(exc).__name__))
            else:
                buffered = bool(getattr(handle, "buffered", False))
                self.attempts.append(Attempt(kind, key, tried, time.time(), handle, buffered=buffered))
            due += self.interval
            self._stop.wait(max(0.0, due - time.monotonic()))

    def burst(self, count: int, prefix: str = "burst") -> None:
        """``submit_many`` of ``count`` jobs at once (a backlog: peak load); recorded as acknowledged."""
        keys = [f"{prefix}{i}" for i in range(count)]
        tried = time.time()
        handles = self.app.submit_many(job.s(k) for k in keys)
        answered = time.time()
        for key, handle in zip(keys, handles, strict=True):
            self.attempts.append(
                Attempt(
                    "job", key, tried, answered, handle, buffered=bool(getattr(handle, "buffered", False))
                )
            )

    @property
    def acknowledged(self) -> list[Attempt]:
        return [a for a in self.attempts if a.handle is not None]


# --- the test side: drain and check -------------------------------------------------------------


@dataclass
class Fault:
    """When a fault was injected and when it was healed (wall clock)."""

    name: str
    start: float
    end: float


@dataclass
class Report:
    """What a run did, for the assertion messages and the printed figures."""

    attempts: int = 0
    acknowledged: int = 0
    buffered: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    runs: int = 0
    jobs: int = 0
    lost: int = 0
    ran_twice: int = 0
    held_at_fault: int = 0
    figures: dict[str, float] = field(default_factory=dict)

    def line(self) -> str:
        figures = ", ".join(f"{k} {v:.2f}s" for k, v in self.figures.items())
        return (
            f"submits {self.attempts}, acknowledged {self.acknowledged} (buffered {self.buffered}), "
            f"refused {dict(self.refused)}; jobs {self.jobs}, runs {self.runs}, ran twice {self.ran_twice} "
            f"(held at a fault {self.held_at_fault}), lost {self.lost}; {figures}"
        )


def read_records(directory: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(runs, settlement answers) from every worker process' file."""
    lines: list[dict[str, Any]] = []
    for path in directory.glob("runs-*.jsonl"):
        text = path.read_text()
        # a worker may be writing a line as we read: only lines ending in a newline are complete
        complete = text[: text.rfind("\n") + 1]
        lines += [json.loads(line) for line in complete.splitlines() if line.strip()]
    return [r for r in lines if r["kind"] == "run"], [r for r in lines if r["kind"] == "settle"]


def expected_runs(acked: Sequence[Attempt]) -> set[tuple[str, str]]:
    """(task, key) of every run an acknowledged submit must lead to."""
    return {("job", a.key) for a in acked if a.kind == "job"} | {
        (task, a.key) for a in acked if a.kind == "chain" for task in STEPS
    }


def drain(client: App, acked: Sequence[Attempt], runs_dir: Path, timeout: float) -> None:
    """Wait until every acknowledged submit is stored, has run and has its outcome, and the queue is empty."""
    deadline = time.monotonic() + timeout
    for attempt in acked:
        attempt.handle.wait_stored(max(0.1, deadline - time.monotonic()))
    expected = expected_runs(acked)

    def not_run() -> object:
        missing = expected - {(r["task"], r["key"]) for r in read_records(runs_dir)[0]}
        return len(missing), sorted(missing)[:5]

    wait_for(
        lambda: expected <= {(r["task"], r["key"]) for r in read_records(runs_dir)[0]},
        max(0.1, deadline - time.monotonic()),
        "every acknowledged submit to run",
        not_run,
    )

    def settled() -> bool:
        backend = client.backend
        if any(s.ready or s.delayed or s.in_flight for s in backend.stats() if s.queue == QUEUE):
            return False
        for a in acked:
            if a.kind == "job":
                record = backend.get_job(a.handle.id)
                if record is None or not record.state.finished:
                    return False
            else:
                chain_record = backend.get_chain(a.handle.id)
                if chain_record is None or not chain_record.finished:
                    return False
        return True

    def in_queue() -> object:
        return [s for s in client.backend.stats() if s.queue == QUEUE]

    wait_for(settled, max(0.1, deadline - time.monotonic()), "nothing ready, delayed or in flight", in_queue)


def check(
    client: App,
    submitter: Submitter,
    runs_dir: Path,
    faults: Sequence[Fault],
    *,
    slack: float,
    stored_job_ids: set[str] | None = None,
    allowed_errors: frozenset[str] = frozenset({"BackendUnavailableError"}),
) -> Report:
    """Assert the fault suite's invariants over a drained run; return the figures.

    A run is held by a worker at a fault if it started before the fault was
    healed and ended after ``slack`` seconds before it began (running, or
    finished with its settlement still on the way).
    ``stored_job_ids``: every job id the backend stores, if the caller could
    list them: then it must be exactly the acknowledged jobs and chain steps.
    """
    acked = submitter.acknowledged
    runs, settles = read_records(runs_dir)
    report = Report(
        attempts=len(submitter.attempts),
        acknowledged=len(acked),
        buffered=sum(a.buffered for a in acked),
        refused=Counter(a.error for a in submitter.attempts if a.error is not None),
        runs=len(runs),
    )
    assert set(report.refused) <= allowed_errors, report.refused
    backend = client.backend

    # lost: acknowledged submits without their recorded outcome (a run, and the backend's record)
    #: job id -> (task, key, chain id, step)
    expected_ids: dict[str, tuple[str, str, str | None, int | None]] = {}
    lost: list[str] = []
    for a in acked:
        if a.kind == "job":
            record = backend.get_job(a.handle.id)
            if record is None or (record.state, record.result) != (JobState.SUCCEEDED, a.key):
                lost.append(f"job {a.key}: {None if record is None else record.state}")
                continue
            expected_ids[a.handle.id] = ("job", a.key, None, None)
        else:
            chain_record = backend.get_chain(a.handle.id)
            if chain_record is None or chain_record.state is not ChainState.COMPLETED:
                lost.append(f"chain {a.key}: {None if chain_record is None else chain_record.render()}")
                continue
            assert chain_record.result == [a.key, "2", "3"], chain_record.render()
            for index, step in enumerate(chain_record.steps):
                (member,) = step.members
                expected_ids[member.job_id] = (STEPS[index], a.key, a.handle.id, index)
    ran = {(r["task"], r["key"]) for r in runs}
    lost += [f"{task} {key} never ran" for task, key in sorted(expected_runs(acked) - ran)]
    report.lost = len(lost)
    report.jobs = len(expected_ids)
    assert not lost, f"lost {len(lost)} acknowledged: {lost[:10]}"

    # no duplicate job from a retried submit, no chain step enqueued twice: only the expected job ids
    # ran, each (task, key) under one job id, each chain step under the id its chain record gives it
    assert {r["job"] for r in runs} == set(expected_ids), {r["job"] for r in runs} ^ set(expected_ids)
    ids_of: dict[tuple[str, str], set[str]] = defaultdict(set)
    for r in runs:
        ids_of[r["task"], r["key"]].add(r["job"])
        task, key, chain_id, step = expected_ids[r["job"]]
        assert (r["task"], r["key"], r["chain"], r["step"]) == (task, key, chain_id, step), r
    doubled = {k: ids for k, ids in ids_of.items() if len(ids) > 1}
    assert not doubled, f"submitted or enqueued twice: {doubled}"
    if stored_job_ids is not None:
        extra = stored_job_ids - set(expected_ids)
        assert not extra, f"{len(extra)} jobs stored that no acknowledged submit made: {sorted(extra)[:5]}"

    # one outcome per job: the backend accepted at most one settlement of each job, never a failure
    accepted = Counter(s["job"] for s in settles if s["accepted"])
    twice_accepted = sorted(j for j, n in accepted.items() if n > 1)
    assert not twice_accepted, (
        f"the outcomes of {len(twice_accepted)} jobs were accepted twice: "
        + "; ".join(
            f"{j}: runs {[r for r in runs if r['job'] == j]}, answers {[s for s in settles if s['job'] == j]}"
            for j in twice_accepted[:3]
        )
    )
    assert {s["outcome"] for s in settles} <= {"Completed"}, Counter(s["outcome"] for s in settles)
    assert backend.failed() == []

    # duplicates: a job runs twice only if a worker held it at a fault (its earlier run overlaps one)
    runs_of: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in sorted(runs, key=lambda r: r["start"]):
        runs_of[r["job"]].append(r)

    def held(r: dict[str, Any]) -> bool:
        return any(r["start"] <= f.end and r["end"] >= f.start - slack for f in faults)

    twice = {j: rs for j, rs in runs_of.items() if len(rs) > 1}
    report.ran_twice = len(twice)
    report.held_at_fault = len({r["job"] for r in runs if held(r)})
    not_held = {j: rs for j, rs in twice.items() if not all(held(r) for r in rs[:-1])}
    assert not not_held, f"ran twice though no worker held it at a fault: {list(not_held.values())[:3]}"

    # chains in order: no step started before its predecessor had ended (first runs)
    first_start = {j: rs[0]["start"] for j, rs in runs_of.items()}
    first_end = {j: min(r["end"] for r in rs) for j, rs in runs_of.items()}
    by_step = {(c, s): j for j, (_, _, c, s) in expected_ids.items() if c is not None}
    for (chain_id, step), job_id in by_step.items():
        if step:
            previous = by_step[chain_id, step - 1]
            assert first_end[previous] <= first_start[job_id], (chain_id, step)

    # recovery figures, from the end of the last fault
    if faults:
        healed = max(f.end for f in faults)
        after = [r["start"] for r in runs if r["start"] >= healed]
        direct = [a.answered for a in submitter.attempts if a.tried >= healed and a.handle and not a.buffered]
        if after:
            report.figures["first run after heal"] = min(after) - healed
        if direct:
            report.figures["first direct store after heal"] = min(direct) - healed
        ends = [r["end"] for r in runs]
        report.figures["last run"] = max(ends) - healed
    return report
