"""Crash recovery on a real redis-server with real worker processes, killed with SIGKILL.

2,000 jobs and 200 three-step chains, submitted in ten waves a second apart,
run on 4 ``jobchain worker`` processes (tests/backends/crash_app.py). A fifth
of a second after each wave, while it is being worked on, one worker process
is SIGKILLed and the test, as a supervisor would, starts it again under the
same name: ten kills in ten seconds. Leases are 2 s, so what a dead process
held is delivered again soon after. Executions are counted outside the Redis
under test, in the append-only files the worker processes write (see
crash_app), and checked:

* every submitted job reaches exactly one recorded outcome (succeeded), and
  the backend accepted exactly one completion for it;
* no chain step was completed twice or enqueued twice (a step only ever runs
  under the job id its chain record gives it, and its completion is accepted once);
* a chain step never starts before its predecessor's completion was sent;
* a job runs more than once only if a killed process held it (started it
  and had no accepted settlement for it), and runs again only after that kill.
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, NamedTuple

import crash_app  # tests/backends is on sys.path (pytest imports this module rootdir-less)
import forkserver
import pytest

from jobchain import App, chain
from jobchain.handles import ChainHandle, JobHandle
from jobchain.model import ChainState, JobState, StepState

ROOT = Path(__file__).resolve().parents[2]
CONFIG = "tests/backends/crash_app.py"
JOBS = 2000
CHAINS = 200
PROCESSES = 4
THREADS = 2
# coroutine jobs at once per process, with async tasks: as many as the threads, so a wave lasts as long
# (at 8 a wave of 2-20 ms sleeps was over in 0.1 s and a kill 0.2 s in could find nothing running)
ASYNC_CONCURRENCY = THREADS
WAVES = 10  # one a second, each some 0.4 s of work for the 8 threads
KILL_AFTER = 0.2  # seconds after each wave: one worker process is killed while the wave runs
LEASE = 2.0
DONE_TIMEOUT = 90.0


class RunLine(NamedTuple):
    """An S (start) or E (end) line."""

    kind: str
    job_id: str
    chain_id: str | None
    step: int | None
    pid: int
    mono: float


class SettleLine(NamedTuple):
    """A P line (``accepted`` None: about to settle) or a C line (the backend's answer)."""

    job_id: str
    outcome: str
    accepted: bool | None
    pid: int
    before: float


def read_records(directory: Path) -> tuple[list[RunLine], list[SettleLine]]:
    runs: list[RunLine] = []
    settles: list[SettleLine] = []
    for path in sorted(directory.glob("*.log")):
        for line in path.read_text().splitlines():
            fields = line.split()
            if fields[0] in ("S", "E"):
                kind, job_id, chain_id, step, pid, mono, _wall = fields
                runs.append(
                    RunLine(
                        kind,
                        job_id,
                        None if chain_id == "-" else chain_id,
                        None if step == "-" else int(step),
                        int(pid),
                        float(mono),
                    )
                )
            elif fields[0] == "P":
                _, job_id, outcome, pid, before = fields
                settles.append(SettleLine(job_id, outcome, None, int(pid), float(before)))
            else:
                _, job_id, outcome, accepted, pid, before, _after = fields
                settles.append(SettleLine(job_id, outcome, accepted == "1", int(pid), float(before)))
    return runs, settles


class Supervisor:
    """Starts the worker processes, kills one with SIGKILL and starts it again under its name."""

    def __init__(self, url: str, records: Path, logs: Path, kind: str = "threads") -> None:
        self.url = url
        self.kind = kind
        self.records = records
        self.logs = logs
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("JOBCHAIN_")}
        self.env["CRASH_RECORDS"] = str(records)
        self.env["PYTHONDONTWRITEBYTECODE"] = "1"
        self.env["CRASH_TASKS"] = kind
        self.slots: dict[int, subprocess.Popen[bytes]] = {}
        self.kills: dict[int, float] = {}  # pid -> monotonic time of its SIGKILL
        self._files: list[IO[bytes]] = []

    def start(self, slot: int) -> None:
        log = (self.logs / f"worker-{slot}-{len(self._files)}.log").open("wb")
        self._files.append(log)
        command = [
            sys.executable,
            "-m",
            "jobchain",
            "--log-level",
            "warning",
            "worker",
            "--config",
            CONFIG,
            "--backend",
            self.url,
            "--name",
            f"crash-{slot}",
            "--concurrency",
            str(THREADS),
            "--lease",
            str(LEASE),
            "--grace",
            "10",
        ]
        if self.kind == "async":  # the jobs run as coroutines on each process's event loop
            command += ["--async-concurrency", str(ASYNC_CONCURRENCY)]
        self.slots[slot] = forkserver.popen(
            command, cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL, stdout=log, stderr=log
        )

    def kill_and_restart(self, slot: int) -> None:
        process = self.slots[slot]
        self.kills[process.pid] = time.monotonic()
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        self.start(slot)

    def check_alive(self) -> None:
        for slot, process in self.slots.items():
            if process.poll() is not None:
                pytest.fail(
                    f"worker process crash-{slot} exited by itself ({process.returncode}): {self.tail()}"
                )

    def stop(self) -> dict[int, int | None]:
        """SIGTERM every worker process, as an operator would; their exit codes by pid."""
        for process in self.slots.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        codes: dict[int, int | None] = {}
        for process in self.slots.values():
            try:
                codes[process.pid] = process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)
                codes[process.pid] = None
        for log in self._files:
            log.close()
        return codes

    def tail(self) -> str:
        texts = []
        for path in sorted(self.logs.glob("*.log")):
            text = path.read_text(errors="replace").strip()
            if text:
                texts.append(f"--- {path.name}\n{text[-1500:]}")
        return "\n".join(texts)


@pytest.fixture(params=["threads", "async"])
def task_kind(request: pytest.FixtureRequest) -> str:
    """Plain functions on the pool threads, or ``async def`` tasks on each process's event loop."""
    return str(request.param)


@pytest.fixture
def supervisor(tmp_path: Path, crash_url: str, task_kind: str) -> Iterator[Supervisor]:
    records = tmp_path / "records"
    logs = tmp_path / "logs"
    records.mkdir()
    logs.mkdir()
    sup = Supervisor(crash_url, records, logs, task_kind)
    yield sup
    for process in sup.slots.values():  # a test that failed half-way: stop what is left
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
    for log in sup._files:
        log.close()


@pytest.fixture(params=["redis-lists", "redis-streams"])
def crash_url(request: pytest.FixtureRequest, redis_server_url: str) -> str:
    """A URL of the backend under test on the session's server, under a key prefix of its own."""
    return (
        redis_server_url.replace("redis://", f"{request.param}://") + f"?prefix=crash{uuid.uuid4().hex[:8]}"
    )


def _wave(app: App, wave: int, rng: random.Random) -> list[Any]:
    """Wave ``wave``'s jobs and chains, each step sleeping 2-20 ms."""
    tasks = app.tasks
    per_jobs, per_chains = JOBS // WAVES, CHAINS // WAVES
    targets: list[Any] = []
    for i in range(per_jobs):
        targets.append(tasks["job"].s(wave * per_jobs + i, ms=round(rng.uniform(2, 20), 2)))
        if i % (per_jobs // per_chains) == 0:
            n = wave * per_chains + i // (per_jobs // per_chains)
            targets.append(
                chain(
                    tasks["step1"].s(n * 10, ms=round(rng.uniform(2, 20), 2)),
                    tasks["step2"].s(ms=round(rng.uniform(2, 20), 2)),
                    tasks["step3"].s(ms=round(rng.uniform(2, 20), 2)),
                    name=f"chain-{n}",
                )
            )
    return targets


def _wait_registered(app: App, sup: Supervisor) -> None:
    """Wait until every slot's current process has registered (its signal handlers are in place)."""
    wanted = {f"crash-{slot}": process.pid for slot, process in sup.slots.items()}
    deadline = time.monotonic() + 60
    while {w.name: w.pid for w in app.backend.workers() if w.name in wanted} != wanted:
        sup.check_alive()
        if time.monotonic() > deadline:
            pytest.fail(f"the worker processes did not register: {sup.tail()}")
        time.sleep(0.1)


def _all_final(app: App, handles: list[Any]) -> bool:
    backend = app.backend
    if any(s.ready or s.delayed or s.in_flight for s in backend.stats() if s.queue == crash_app.QUEUE):
        return False
    for handle in handles:
        record = backend.get_job(handle.id) if isinstance(handle, JobHandle) else backend.get_chain(handle.id)
        if record is None or not (
            record.state.finished if isinstance(handle, JobHandle) else record.finished
        ):
            return False
    return True


@pytest.mark.slow
def test_killed_workers_lose_nothing_and_duplicate_only_what_they_held(
    crash_url: str, supervisor: Supervisor, task_kind: str
) -> None:
    """SIGKILL a worker every second for 10 s: every job ends once; only held jobs run twice."""
    app = crash_app.make_app(crash_url, kind=task_kind)
    try:
        _run_and_check(app, supervisor)
    finally:
        app.close()


def _run_and_check(app: App, sup: Supervisor) -> None:
    rng = random.Random(5)
    for slot in range(1, PROCESSES + 1):
        sup.start(slot)
    _wait_registered(app, sup)

    handles: list[Any] = []
    t0 = time.monotonic()
    for wave in range(WAVES):
        _sleep_until(t0 + wave)
        handles += app.submit_many(_wave(app, wave, rng))
        _sleep_until(t0 + wave + KILL_AFTER)
        sup.check_alive()
        sup.kill_and_restart(wave % PROCESSES + 1)
    deadline = time.monotonic() + DONE_TIMEOUT
    while not _all_final(app, handles):
        sup.check_alive()
        if time.monotonic() > deadline:
            pytest.fail(f"not every job finished within {DONE_TIMEOUT:g}s of the last kill: {sup.tail()}")
        time.sleep(0.25)
    _wait_registered(app, sup)  # a SIGTERM before a restarted worker is up would kill it, not stop it
    codes = sup.stop()
    assert all(code == 0 for pid, code in codes.items() if pid not in sup.kills), (codes, sup.tail())

    job_handles = [h for h in handles if isinstance(h, JobHandle)]
    chain_handles = [h for h in handles if isinstance(h, ChainHandle)]
    assert (len(job_handles), len(chain_handles)) == (JOBS, CHAINS)
    backend = app.backend

    # every submitted job: exactly one recorded outcome, the one its task returned
    expected: dict[str, tuple[str | None, int | None]] = {}  # job id -> (chain id, step)
    for handle in job_handles:
        record = backend.get_job(handle.id)
        assert record is not None
        assert record.state is JobState.SUCCEEDED, (handle.id, record.state, record.error)
        assert record.result == record.job.args[0]
        expected[handle.id] = (None, None)
    for handle in chain_handles:
        chain_record = backend.get_chain(handle.id)
        assert chain_record is not None
        assert chain_record.state is ChainState.COMPLETED, chain_record.render()
        assert [s.state for s in chain_record.steps] == [StepState.COMPLETED] * 3
        assert chain_record.result == chain_record.steps[0].members[0].args[0] + 2
        for index, step in enumerate(chain_record.steps):
            (member,) = step.members
            expected[member.job_id] = (handle.id, index)
    assert len(expected) == JOBS + 3 * CHAINS
    assert backend.failed() == []
    assert not any(s.ready or s.delayed or s.in_flight for s in backend.stats() if s.queue == crash_app.QUEUE)

    runs, settles = read_records(sup.records)
    starts = [r for r in runs if r.kind == "S"]
    ends = {(r.job_id, r.pid): r for r in runs if r.kind == "E"}

    # only the submitted jobs ran, each step under the id its chain record gives it
    assert {r.job_id for r in starts} == set(expected)
    for r in starts:
        assert (r.chain_id, r.step) == expected[r.job_id], r

    # the backend never accepted two settlements of a job, nor anything but a completion; a live
    # worker never lost a lease, so it never had to reject a stale settlement
    answers = [s for s in settles if s.accepted is not None]
    assert {s.outcome for s in settles} <= {"Completed"}
    assert [s for s in answers if not s.accepted] == []
    completion = {s.job_id: s for s in answers}
    assert len(completion) == len(answers), "a job's completion was accepted twice"
    tried: dict[tuple[str, int], float] = {}  # (job id, pid) -> when that pid first tried to settle it
    for s in settles:
        if s.accepted is None:
            tried[(s.job_id, s.pid)] = min(s.before, tried.get((s.job_id, s.pid), s.before))

    # duplicates: only jobs a killed process held (started, no accepted settlement), run again after the
    # kill; the last run is the one whose completion the backend accepted
    runs_of: dict[str, list[RunLine]] = defaultdict(list)
    for r in sorted(starts, key=lambda r: r.mono):
        runs_of[r.job_id].append(r)
    done_by: dict[str, int] = {}
    for job_id, job_runs in runs_of.items():
        pids = [r.pid for r in job_runs]
        assert len(set(pids)) == len(pids), f"a process ran {job_id} twice: {job_runs}"
        accepted_by = completion[job_id].pid if job_id in completion else None
        for run, following in itertools.pairwise(job_runs):
            what = f"{job_id}: {job_runs}"
            assert run.pid in sup.kills, f"ran again though its worker was not killed: {what}"
            assert sup.kills[run.pid] < following.mono, f"ran again before its worker died: {what}"
            assert run.pid != accepted_by, f"ran again after its completion was accepted: {what}"
        last = job_runs[-1]
        if job_id in completion:
            assert completion[job_id].pid == last.pid, job_runs
        else:  # the backend's answer came, but the process was killed before it could write it down
            assert last.pid in sup.kills, f"no accepted completion of {job_id} recorded: {job_runs}"
        assert (job_id, last.pid) in tried, job_runs
        assert (job_id, last.pid) in ends, job_runs
        done_by[job_id] = last.pid

    # a chain step starts only after its predecessor's run ended and its completion was sent
    by_chain_step = {(c, s): job_id for job_id, (c, s) in expected.items() if c is not None}
    for r in starts:
        if r.chain_id is None or not r.step:
            continue
        previous = by_chain_step[(r.chain_id, r.step - 1)]
        assert r.mono > tried[(previous, done_by[previous])], (r, previous)
        assert r.mono > ends[(previous, done_by[previous])].mono, (r, previous)

    held = len(starts) - len(expected)  # runs lost with their killed worker
    duplicated = sum(1 for job_runs in runs_of.values() if len(job_runs) > 1)
    holders = {r.pid for job_runs in runs_of.values() for r in job_runs[:-1]}
    assert held, "no killed worker held a job: the test did not exercise recovery"
    unanswered = len(expected) - len(completion)
    print(
        f"{len(sup.kills)} kills, {len(holders)} of them holding jobs: {duplicated} jobs ran again "
        f"after their worker was killed ({held} runs lost); {unanswered} completions accepted just "
        f"before a kill; {len(starts)} runs of {len(expected)} jobs"
    )


def _sleep_until(moment: float) -> None:
    delay = moment - time.monotonic()
    if delay > 0:
        time.sleep(delay)
