"""The SQLite backend shared by real processes: concurrent reservations, SIGKILLed workers, a full restart.

Worker processes are ``python -m jobchain worker`` on one database file in a
temp directory; executions are recorded outside the database, in files the
worker processes append to (tests/backends/crash_app.py, restart_app.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import crash_app  # tests/backends is on sys.path (pytest imports these modules rootdir-less)
import forkserver
import pytest
import restart_app
import test_crash_recovery as crash
from jobchain_sqlite import SqliteBackend
from redis_proc import read_runs, start_worker, stop_processes, wait_for

import jobchain
from jobchain.model import ChainState, Job, JobState
from jobchain.testing import completed

ROOT = Path(__file__).resolve().parents[2]


def _env(**extra: str) -> dict[str, str]:
    """The environment of a child process: this interpreter's jobchain and jobchain-sqlite first."""
    import jobchain_sqlite

    sources = [str(Path(m.__file__ or "").resolve().parents[1]) for m in (jobchain, jobchain_sqlite)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBCHAIN_")}
    env["PYTHONPATH"] = os.pathsep.join([*dict.fromkeys(sources), env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep
    )
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(extra)
    return env


# --- two processes reserving at once -------------------------------------------------------------

RESERVER = """
import json, os, sys, threading, time
from jobchain_sqlite import SqliteBackend
from jobchain.model import Completed

path, go, name = sys.argv[1:4]
backend = SqliteBackend(path)
print("ready", flush=True)
while not os.path.exists(go):
    time.sleep(0.005)
taken = []

def drain(thread):
    while True:
        got = backend.reserve(["q"], limit=3, lease=300.0, worker=f"{name}-{thread}")
        if not got:
            return
        now = time.time()
        backend.settle([Completed(delivery=d, started_at=now, finished_at=now) for d in got])
        taken.extend((d.job.id, d.delivery_count) for d in got)

threads = [threading.Thread(target=drain, args=(i,)) for i in range(2)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps(taken), flush=True)
"""


def test_two_processes_reserving_at_once_never_get_the_same_job(tmp_path: Path) -> None:
    """Two processes of two threads each drain one queue together: every job is delivered once."""
    path = str(tmp_path / "jobs.db")
    backend = SqliteBackend(path)
    now = time.time()
    jobs = [Job(id=f"j{i:05d}", task="noop", queue="q", enqueued_at=now) for i in range(1500)]
    backend.enqueue(jobs)
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RESERVER, path, str(go), f"p{i}"],
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready", proc.stderr.read() if proc.stderr else ""
        go.touch()
        outputs = [proc.communicate(timeout=60) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        backend.close()
    assert [proc.returncode for proc in procs] == [0, 0], [err for _, err in outputs]
    taken = [[tuple(t) for t in json.loads(out.splitlines()[-1])] for out, _ in outputs]
    ids = [[job_id for job_id, _ in t] for t in taken]
    assert all(ids), "both processes took jobs"
    assert not set(ids[0]) & set(ids[1]), "a job was delivered to both processes"
    assert sorted(ids[0] + ids[1]) == [j.id for j in jobs], "a job was delivered twice, or not at all"
    assert {count for t in taken for _, count in t} == {1}


def test_a_settlement_from_another_process_is_seen_at_once(tmp_path: Path) -> None:
    """What one process commits, another reads next: no cache between them."""
    path = str(tmp_path / "jobs.db")
    a, b = SqliteBackend(path), SqliteBackend(path)
    try:
        a.enqueue([Job(id="x", task="noop", enqueued_at=time.time())])
        [delivery] = b.reserve(["default"], limit=1, lease=30.0, worker="w")
        assert b.settle([completed(delivery, 7, clock=b.clock)])[0].accepted
        record = a.get_job("x")
        assert record is not None
        assert (record.state, record.result) == (JobState.SUCCEEDED, 7)
    finally:
        a.close()
        b.close()


# --- SIGKILLed worker processes --------------------------------------------------------------------


class Supervisor(crash.Supervisor):
    """test_crash_recovery's supervisor, restarting a killed worker under a new name.

    A SIGKILLed worker's registration stays live for its heartbeat ttl (10 s at
    least), and a name is held by one live worker: the same name would be refused.
    """

    def start(self, slot: int) -> None:
        log = (self.logs / f"worker-{slot}-{len(self._files)}.log").open("wb")
        self._files.append(log)
        command = [
            *(sys.executable, "-m", "jobchain", "--log-level", "warning", "worker"),
            *("--config", crash.CONFIG, "--backend", self.url, "--name", f"crash-{slot}-{len(self._files)}"),
            *("--concurrency", str(crash.THREADS), "--lease", str(crash.LEASE), "--grace", "10"),
        ]
        self.slots[slot] = forkserver.popen(
            command, cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL, stdout=log, stderr=log
        )


def _wait_registered(app: jobchain.App, sup: crash.Supervisor) -> None:
    """Wait until every slot's current process has registered, whatever its name."""
    wanted = {process.pid for process in sup.slots.values()}
    wait_for(
        lambda: wanted <= {w.pid for w in app.backend.workers()}, 60, "the workers to register", sup.tail
    )


@pytest.fixture
def supervisor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[crash.Supervisor]:
    """test_crash_recovery's harness, on a SQLite file, in 4 waves of 150 jobs and 15 chains."""
    for name, value in {"JOBS": 600, "CHAINS": 60, "WAVES": 4, "PROCESSES": 3, "DONE_TIMEOUT": 60.0}.items():
        monkeypatch.setattr(crash, name, value)
    monkeypatch.setattr(crash, "_wait_registered", _wait_registered)
    records, logs = tmp_path / "records", tmp_path / "logs"
    records.mkdir()
    logs.mkdir()
    sup = Supervisor(f"sqlite://{tmp_path}/jobs.db", records, logs)
    sup.env = _env(CRASH_RECORDS=str(records))
    yield sup
    for process in sup.slots.values():
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
    for log in sup._files:
        log.close()


@pytest.mark.slow
def test_sigkilled_workers_lose_nothing(supervisor: crash.Supervisor) -> None:
    """A worker process SIGKILLed every second: every job ends once; only held jobs run twice; lost 0."""
    app = crash_app.make_app(supervisor.url)
    try:
        crash._run_and_check(app, supervisor)
    finally:
        app.close()


# --- everything stopped mid-run, then started again ------------------------------------------------

JOBS, CHAINS, WORKERS, THREADS, LEASE = 300, 30, 2, 3, 2.0


def _start(name: str, url: str, runs: Path, log: Path) -> subprocess.Popen[bytes]:
    config = Path(restart_app.__file__).resolve()
    env = _env(RESTART_TEST_RUNS=str(runs))
    return start_worker(config, name, url, threads=THREADS, lease=LEASE, env=env, log=log)


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_a_restart_mid_run_loses_nothing(stop: signal.Signals, tmp_path: Path) -> None:
    """Submit, stop every process mid-run (workers and the submitter), start again: every job completes."""
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    url = f"sqlite://{tmp_path}/jobs.db"
    app = restart_app.app
    app.use_backend(url)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs = [_start(f"before-{i}", url, runs_dir, tmp_path / f"before-{i}.log") for i in range(WORKERS)]
        names = {f"before-{i}" for i in range(WORKERS)}
        wait_for(lambda: names <= {w.name for w in app.workers()}, 30, "the workers to register")
        jobs = app.submit_many(restart_app.job.s(n) for n in range(JOBS))
        chains = app.submit_many(restart_app.three_steps(c) for c in range(CHAINS))
        total = JOBS + 3 * CHAINS
        wait_for(lambda: len(read_runs(runs_dir)) >= total // 4, 30, "a quarter of the run")
        for proc in procs:
            proc.send_signal(stop)
        codes = [proc.wait(30) for proc in procs]
        app.use_backend("memory://")  # the submitter goes too: nothing of the run is left but the file
        assert len({(r["task"], r["key"]) for r in read_runs(runs_dir)}) < total, "make the jobs longer"
        expected_codes = [0] * WORKERS if stop is signal.SIGTERM else [-signal.SIGKILL] * WORKERS
        assert codes == expected_codes

        app.use_backend(url)
        procs = [_start(f"after-{i}", url, runs_dir, tmp_path / f"after-{i}.log") for i in range(WORKERS)]

        def settled() -> bool:
            return all(
                (record := app.backend.get_job(h.id)) is not None and record.state.finished for h in jobs
            ) and all((c := app.backend.get_chain(h.id)) is not None and c.finished for h in chains)

        wait_for(settled, 40, "every job and chain to finish after the restart")
        # a worker still importing when the other finished everything dies of the SIGTERM below: wait for both
        up = {(f"after-{i}", proc.pid) for i, proc in enumerate(procs)}
        wait_for(lambda: up <= {(w.name, w.pid) for w in app.workers()}, 30, "the restarted workers up")
        for n, handle in enumerate(jobs):
            record = app.backend.get_job(handle.id)
            assert record is not None
            assert (record.state, record.result) == (JobState.SUCCEEDED, n)
        for c, handle in enumerate(chains):
            chain_record = app.backend.get_chain(handle.id)
            assert chain_record is not None
            assert chain_record.state is ChainState.COMPLETED, chain_record.render()
            assert chain_record.result == [c, 2, 3]
        assert app.backend.failed() == []
    finally:
        codes = stop_processes(procs)
        app.use_backend("memory://")
    assert codes == [0] * WORKERS

    runs = read_runs(runs_dir)
    counts = Counter((r["task"], r["key"]) for r in runs)
    assert set(counts) == {("job", str(n)) for n in range(JOBS)} | {
        (task, str(c)) for c in range(CHAINS) for task in ("first", "second", "third")
    }
    # a second run only of what a killed worker held (running or prefetched): none after a SIGTERM
    again = sum(n - 1 for n in counts.values())
    assert again <= (0 if stop is signal.SIGTERM else WORKERS * 2 * THREADS), counts
    ends: dict[tuple[str, str], float] = defaultdict(lambda: float("inf"))
    starts: dict[tuple[str, str], float] = defaultdict(lambda: float("inf"))
    for r in runs:
        key = (r["task"], r["key"])
        ends[key] = min(ends[key], r["end"])
        starts[key] = min(starts[key], r["start"])
    for cid in map(str, range(CHAINS)):
        assert ends["first", cid] <= starts["second", cid]
        assert ends["second", cid] <= starts["third", cid]
