"""Leases at their edges, on a real redis-server with real ``jobchain worker`` processes.

Each test runs on redis-lists and redis-streams, with the tasks of
tests/backends/lease_app.py: every start and end of a task is appended to a
file of the worker process (outside the Redis under test), with the job id,
attempt, worker name, pid and time. Scenarios:

* a worker process paused (SIGSTOP) for 3x its lease, then resumed: no job it
  had reserved but not started runs after its lease was lost; a job runs twice
  only if the paused worker was running it when it was paused;
* a poison job (``os.kill(os.getpid(), SIGKILL)``) among 1,000 normal ones,
  its worker restarted under the same name and under a new one in turn: only
  the poison job fails (``WorkerLost``), every other job completes, and no
  innocent job is in the failed queue;
* long jobs of 5x the lease, kept alive by the heartbeat: no redelivery;
* delayed jobs and retries due after 3x the lease, with a worker killed while
  they are promoted: each attempt runs once (twice only if the killed worker
  was running it).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import forkserver
import pytest

pytest.importorskip("redis", reason="jobchain-redis is not installed (pip install -e backends/redis)")
pytest.importorskip("jobchain_redis", reason="jobchain-redis is not installed")

import lease_app  # tests/backends is on sys.path

from jobchain.model import JobState

SCHEMES = ["redis-lists", "redis-streams"]
CONFIG = str(Path(__file__).resolve().parent / "lease_app.py")


def _env(runs: Path) -> dict[str, str]:
    """The worker processes' environment: this interpreter's jobchain and jobchain-redis first on the path."""
    import jobchain_redis

    import jobchain

    sources = [str(Path(m.__file__ or "").resolve().parents[1]) for m in (jobchain, jobchain_redis)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JOBCHAIN_", "LEASE_TEST_"))}
    env["PYTHONPATH"] = os.pathsep.join([*dict.fromkeys(sources), env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep
    )
    env["LEASE_TEST_RUNS"] = str(runs)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def wait_for(
    check: Callable[[], bool], timeout: float, what: str, detail: Callable[[], object] = str
) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}: {detail()}")
        time.sleep(0.05)


class Rig:
    """One test's backend URL (a prefix of its own), worker processes and run records."""

    def __init__(self, redis_url: str, scheme: str, tmp_path: Path) -> None:
        self.scheme = scheme
        query = "&orphan_idle=2" if scheme == "redis-streams" else ""
        self.url = (
            redis_url.replace("redis://", f"{scheme}://", 1) + f"?prefix=l{uuid.uuid4().hex[:10]}{query}"
        )
        self.runs = tmp_path / "runs"
        self.runs.mkdir()
        self.logs = tmp_path
        self.app = lease_app.app
        self.app.use_backend(self.url)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.started = 0

    def start(self, name: str, *, threads: int, lease: float) -> subprocess.Popen[bytes]:
        self.started += 1
        with (self.logs / f"{name}-{self.started}.log").open("wb") as out:
            proc = forkserver.popen(
                [
                    sys.executable,
                    "-m",
                    "jobchain",
                    "worker",
                    "--config",
                    CONFIG,
                    "--backend",
                    self.url,
                    "--concurrency",
                    str(threads),
                    "--lease",
                    str(lease),
                    "--grace",
                    "10",
                    "--name",
                    name,
                ],
                env=_env(self.runs),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.procs[name] = proc
        return proc

    def records(self) -> list[dict[str, Any]]:
        lines: list[dict[str, Any]] = []
        for path in self.runs.glob("runs-*.jsonl"):
            lines += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return lines

    def starts(self) -> list[dict[str, Any]]:
        return sorted((r for r in self.records() if r["kind"] == "start"), key=lambda r: r["at"])

    def stalled(self) -> set[tuple[str, str]]:
        """(worker name, job id) of each run whose outcome the backend rejected: the worker lost its lease.

        On a loaded machine a worker can stall past its lease (its monitor thread
        not scheduled for a lease): the job is then delivered again, which the
        guarantees allow, and the stalled run's outcome is rejected as stale.
        """
        found: set[tuple[str, str]] = set()
        for path in self.logs.glob("*.log"):
            for line in path.read_text(errors="replace").splitlines():
                if '"stale_delivery_rejected"' not in line:
                    continue
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                found.add((event["worker"], event["job_id"]))
        return found

    def output(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-3000:] for p in sorted(self.logs.glob("*.log")))

    def wait_finished(self, handles: list[Any], timeout: float) -> None:
        backend = self.app.backend

        def left() -> list[str]:
            out = []
            for h in handles:
                record = backend.get_job(h.id)
                if record is None or not record.state.finished:
                    out.append(h.id)
            return out

        wait_for(
            lambda: not left(), timeout, "every job to finish", lambda: (len(left()), self.output()[-2000:])
        )

    def wait_up(self, timeout: float = 30) -> None:
        """Wait until every live worker process registered (under its own pid): its signal handlers are in.

        A process just started is still importing; a SIGTERM then ends it with the
        default action. The name alone proves nothing: a killed namesake's
        registration stays fresh for the heartbeat ttl.
        """

        def missing() -> list[str]:
            up = {(w.name, w.pid) for w in self.app.workers()}
            return [n for n, p in self.procs.items() if p.poll() is None and (n, p.pid) not in up]

        wait_for(lambda: not missing(), timeout, "the workers up", lambda: (missing(), self.output()))

    def stop(self, *, up: bool = True) -> list[int | None]:
        """SIGTERM the worker processes this test started (by PID, once up); SIGKILL what is left."""
        if up:
            self.wait_up()
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.send_signal(signal.SIGTERM)
        codes: list[int | None] = []
        for proc in self.procs.values():
            try:
                codes.append(proc.wait(20))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
                codes.append(None)
        return codes

    def close(self) -> None:
        self.stop(up=False)
        backend = self.app.backend
        self.app.use_backend("memory://")
        delete = getattr(backend, "delete_everything", None)
        if delete is not None:
            delete()
        backend.close()


@pytest.fixture(params=SCHEMES)
def rig(request: pytest.FixtureRequest, redis_server_url: str, tmp_path: Path) -> Iterator[Rig]:
    rig = Rig(redis_server_url, request.param, tmp_path)
    yield rig
    rig.close()


def test_paused_worker_never_starts_a_job_whose_lease_it_lost(rig: Rig) -> None:
    """A worker stopped for 3x its lease, then resumed, starts none of the jobs it held unstarted."""
    lease, pause = 1.0, 3.0
    handles = rig.app.submit_many(lease_app.work.s(f"k{i}", 150) for i in range(60))
    rig.start("paused", threads=2, lease=lease)
    other = rig.start("other", threads=2, lease=lease)
    wait_for(lambda: sum(r["worker"] == "paused" for r in rig.starts()) >= 4, 15, "the worker to be busy")
    paused = rig.procs["paused"]
    paused.send_signal(signal.SIGSTOP)
    stopped_at = time.time()
    time.sleep(pause)
    paused.send_signal(signal.SIGCONT)
    rig.wait_finished(handles, 30)
    assert other.poll() is None, rig.output()
    assert paused.poll() is None, rig.output()
    assert rig.stop() == [0, 0], rig.output()

    starts = rig.starts()
    by_job: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in starts:
        by_job[r["job"]].append(r)
    assert {h.id for h in handles} == set(by_job)
    for h in handles:
        record = rig.app.backend.get_job(h.id)
        assert record is not None
        assert record.state is JobState.SUCCEEDED, record
    # a job runs again only after a run that lost its lease: the paused worker's at the pause, or one
    # whose worker stalled past its lease on this busy machine (its outcome rejected as stale)
    stalled = rig.stalled()
    bad = [
        rs
        for rs in by_job.values()
        for first in rs[:-1]
        if not (first["worker"] == "paused" and first["at"] < stopped_at)
        and (first["worker"], first["job"]) not in stalled
    ]
    assert not bad, f"ran again although no run of it lost its lease: {bad[:3]}"
    # nothing the paused worker started after the pause had run elsewhere first (its lease was gone),
    # and what it started after the pause and ran elsewhere too lost its lease after it started
    late = [
        r
        for r in starts
        if r["worker"] == "paused"
        and r["at"] >= stopped_at
        and len(by_job[r["job"]]) > 1
        and (
            any(o["worker"] != "paused" and o["at"] < r["at"] for o in by_job[r["job"]])
            or ("paused", r["job"]) not in stalled
        )
    ]
    assert not late, f"the paused worker started jobs whose lease it had lost: {late[:3]}"


def test_poison_job_fails_alone(rig: Rig) -> None:
    """A job that kills its worker every time fails as WorkerLost; the jobs reserved beside it complete."""
    lease = 1.0
    signatures = [lease_app.work.s(f"k{i}", 2) for i in range(1000)]
    signatures.insert(500, lease_app.poison.s("poison"))
    handles = rig.app.submit_many(signatures)
    poison = handles[500]
    rig.start("w-1", threads=4, lease=lease)
    rig.start("w-2", threads=4, lease=lease)
    deaths = 0
    deadline = time.monotonic() + 60
    backend = rig.app.backend
    while True:
        record = backend.get_job(poison.id)
        if record is not None and record.state.finished:
            break
        assert time.monotonic() < deadline, f"the poison job did not fail; {deaths} deaths\n{rig.output()}"
        for name, proc in list(rig.procs.items()):
            code = proc.poll()
            if code is None:
                continue
            assert code == -signal.SIGKILL, rig.output()
            deaths += 1
            del rig.procs[name]
            # a supervisor restarts it: under the same name (resumes its jobs) and under a new one, in turn
            rig.start(name if deaths % 2 else f"{name}-r{deaths}", threads=4, lease=lease)
        time.sleep(0.05)
    rig.wait_finished(handles, 60)
    # a worker restarted just now stops cleanly once it is up (rig.stop waits for that)
    assert rig.stop() == [0] * len(rig.procs), rig.output()

    failed = rig.app.failed.list()
    assert [(e.job.id, e.error.type) for e in failed] == [(poison.id, "WorkerLost")]
    innocents = [h for h in handles if h.id != poison.id]
    states = Counter(backend.get_job(h.id).state for h in innocents)  # type: ignore[union-attr]
    assert states == {JobState.SUCCEEDED: len(innocents)}
    ran = {r["job"] for r in rig.starts()}
    assert {h.id for h in innocents} <= ran
    poisoned = [r for r in rig.starts() if r["job"] == poison.id]
    assert len(poisoned) == deaths == 5  # unmarked first run, then max_redeliveries + 1 charged deaths


def test_long_jobs_kept_alive_by_the_heartbeat_are_never_redelivered(rig: Rig) -> None:
    """Jobs running 5x the lease keep their leases: each runs once, under one delivery."""
    lease = 1.2  # a lease a busy machine keeps (its monitor extends it every 0.4 s)
    handles = rig.app.submit_many(lease_app.work.s(f"long{i}", 5 * lease * 1000) for i in range(4))
    rig.start("w-1", threads=2, lease=lease)
    rig.start("w-2", threads=2, lease=lease)
    rig.wait_finished(handles, 30)
    assert rig.stop() == [0, 0], rig.output()
    starts = Counter(r["job"] for r in rig.starts())
    assert starts == {h.id: 1 for h in handles}
    assert all(rig.app.backend.get_job(h.id).state is JobState.SUCCEEDED for h in handles)  # type: ignore[union-attr]


def test_delayed_jobs_and_retries_run_once_per_attempt_across_a_worker_kill(rig: Rig) -> None:
    """Jobs due 3x the lease from now, promoted while a worker is killed, run once per attempt."""
    lease = 1.0
    due = 3 * lease
    delayed = rig.app.submit_many(lease_app.work.s(f"d{i}", 20).set(delay=due) for i in range(40))
    flaky = rig.app.submit_many(lease_app.flaky.s(f"f{i}") for i in range(20))  # retried 3 s later
    submitted = time.time()
    killed = rig.start("w-1", threads=4, lease=lease)
    rig.start("w-2", threads=4, lease=lease)
    time.sleep(max(0.0, submitted + due - time.time()))
    killed.send_signal(signal.SIGKILL)  # while the due jobs are promoted and run
    killed_at = time.time()
    killed.wait(5)
    rig.start("w-1", threads=4, lease=lease)  # restarted under its name: resumes what it held
    rig.wait_finished(delayed + flaky, 30)
    assert rig.stop() == [0, 0], rig.output()

    for h in delayed:
        assert rig.app.backend.get_job(h.id).state is JobState.SUCCEEDED  # type: ignore[union-attr]
    for h in flaky:
        record = rig.app.backend.get_job(h.id)
        assert record is not None
        assert (record.state, record.job.attempt) == (JobState.SUCCEEDED, 2)
    runs: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for r in rig.starts():
        runs[r["job"], r["attempt"]].append(r)
    expected = {(h.id, 1) for h in delayed} | {(h.id, a) for h in flaky for a in (1, 2)}
    assert set(runs) == expected
    # again only after a run that lost its lease: the killed process' (started before the kill), or one
    # whose worker stalled past its lease on this busy machine (its outcome rejected as stale)
    stalled = rig.stalled()
    for rs in runs.values():
        for first in rs[:-1]:
            killed_run = first["pid"] == killed.pid and first["at"] <= killed_at
            assert killed_run or (first["worker"], first["job"]) in stalled, rs
