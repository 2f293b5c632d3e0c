"""The fault suite: Redis killed, paused, and its client connections killed, under load; nothing is lost.

Each test starts its own redis-server (``RedisProcess``: append-only file,
``appendfsync always``, a free loopback port, signalled only by its PID), two
``python -m jobchain worker`` processes on it (``fault_harness.py`` is their
config: every run and every settlement answer is appended to a file of the
worker process, outside the Redis under test) and a client thread submitting
a job, or every fifth time a three-step chain, every 10 ms through the App's
submit buffer. A fault is injected on a schedule and healed; the test then
drains (every acknowledged submit stored, run and settled; nothing ready,
delayed or in flight) and checks (``fault_harness.check``):

* lost 0: every acknowledged submit (``submit`` returned a handle, stored or
  ``buffered``) ran and has its outcome in Redis;
* no job with two accepted outcomes, none failed;
* no duplicate job from a retried submit and no chain step enqueued twice:
  the jobs Redis stores are exactly the acknowledged jobs and chain steps, and
  each (task, key) ran under one job id only;
* a job ran twice only if a worker held it at a fault;
* chains ran in order; no worker exited, and each stops cleanly (exit code 0).

Scenarios, each on redis-lists and redis-streams:

1. ``SIGKILL`` of the redis-server mid-run, down ``DOWN`` s, restarted on the
   same port and directory: only what the append-only file holds survives, and
   with ``appendfsync always`` that is everything Redis acknowledged.
2. ``CLIENT PAUSE 3000 ALL`` just after a burst of 400 jobs (peak load).
3. ``CLIENT KILL TYPE normal SKIPME yes`` from an admin connection every
   second for 15 s: every connection of the workers and the client is cut,
   often with a reply in flight.

The soak variant of 3 (60 s of kills) runs only with ``--soak`` or
``JOBCHAIN_SOAK=1``. The figures are printed (``pytest -s``) for
docs/operations.md, "Faults and recovery".
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

redis = pytest.importorskip("redis", reason="jobchain-redis is not installed (pip install -e backends/redis)")
pytest.importorskip("jobchain_redis", reason="jobchain-redis is not installed")

import fault_harness as fh  # noqa: E402
from redis_proc import RedisProcess, RedisUnavailable  # noqa: E402

SCHEMES = ["redis-lists", "redis-streams"]
WORKERS, THREADS = 2, 4
#: short leases and orphan sweeps: a reservation whose reply a fault lost is delivered again this soon
LEASE = 5.0
ORPHAN_IDLE = 3.0
#: seconds of load before the fault; seconds Redis stays down after SIGKILL
BEFORE, DOWN = 1.5, 1.5
PAUSE_MS = 3000
KILL_EVERY, KILLS, SOAK_KILLS = 1.0, 15, 60
#: a run that ended this many seconds before a fault may still be held (its settlement on the way)
SLACK = 1.0
DRAIN_TIMEOUT = 30.0


class Rig:
    """One test's Redis, workers and recording client."""

    def __init__(self, server: RedisProcess, scheme: str, tmp_path: Path) -> None:
        self.server = server
        self.scheme = scheme
        # streams: an entry whose XREADGROUP reply a fault lost is claimed again after orphan_idle
        query = f"?orphan_idle={ORPHAN_IDLE:g}" if scheme == "redis-streams" else ""
        self.url = server.url.replace("redis://", f"{scheme}://", 1) + query
        self.runs = tmp_path / "runs"
        self.runs.mkdir()
        self.logs = tmp_path
        self.app = fh.app
        self.app.use_backend(self.url)
        self.admin: Any = server.client(socket_timeout=10, decode_responses=True)
        self.procs = fh.start_workers(WORKERS, self.url, self.runs, self.logs, threads=THREADS, lease=LEASE)
        self.submitter = fh.Submitter(self.app)
        self.faults: list[fh.Fault] = []
        self.started = time.time()

    def wait_registered(self) -> None:
        names = {f"fault-{i}" for i in range(WORKERS)}
        fh.wait_for(lambda: names <= {w.name for w in self.app.workers()}, 30, "the workers to register")

    def assert_workers_alive(self) -> None:
        codes = [p.poll() for p in self.procs]
        assert codes == [None] * WORKERS, f"a worker exited: {codes} {self.output()}"

    def output(self, tail: int = 3000) -> list[str]:
        return [(self.logs / f"worker-{i}.log").read_text(errors="replace")[-tail:] for i in range(WORKERS)]

    def dump_unrun(self, acked: list[fh.Attempt]) -> str:
        """What Redis holds about the submits that did not run: their keys, and the queue's indexes."""
        runs = {(r["task"], r["key"]) for r in fh.read_records(self.runs)[0]}
        missing = fh.expected_runs(acked) - runs
        ids = {a.handle.id for a in acked if any(key == a.key for _, key in missing)}
        lines = [f"missing {sorted(missing)[:10]} ids {sorted(ids)[:10]}"]
        for job_id in list(ids):
            chain = self.app.backend.get_chain(job_id)
            if chain is not None:
                ids |= {m.job_id for step in chain.steps for m in step.members}
        for job_id in sorted(ids)[:10]:
            for key in sorted(self.admin.scan_iter(match=f"*{job_id}*", count=1000)):
                lines.append(f"{key} = {self._dump(key)}")
        for key in sorted(self.admin.scan_iter(match="*", count=1000)):
            kind = self.admin.type(key)
            if kind in ("zset", "stream", "list", "set") and "worker" not in key:
                lines.append(f"{key} ({kind}) = {self._dump(key)}")
        return "\n".join(line[:2000] for line in lines)

    def _dump(self, key: str) -> object:
        kind = self.admin.type(key)
        if kind == "hash":
            return {k: v[:200] for k, v in self.admin.hgetall(key).items()}
        if kind == "zset":
            return self.admin.zrange(key, 0, 20, withscores=True)
        if kind == "list":
            return self.admin.lrange(key, 0, 20)
        if kind == "set":
            return sorted(self.admin.smembers(key))[:20]
        if kind == "stream":
            groups = self.admin.xinfo_groups(key)
            pending = self.admin.xpending_range(key, "jobchain", "-", "+", 20) if groups else []
            return {"len": self.admin.xlen(key), "groups": groups, "pending": pending}
        return kind

    def wait_buffer_empty(self) -> float:
        """Seconds until the client's submit buffer is empty again after the last fault."""
        assert self.app.buffer is not None
        assert self.app.buffer.wait_empty(20), "the submit buffer did not drain"
        return time.time() - max(f.end for f in self.faults)

    def finish(self, extra: dict[str, float]) -> fh.Report:
        """Stop submitting, drain, stop the workers (exit 0), check; print and return the figures."""
        if self.submitter.running:
            self.submitter.stop()
        acked = self.submitter.acknowledged
        try:
            fh.drain(self.app, acked, self.runs, DRAIN_TIMEOUT)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.dump_unrun(acked)}") from None
        self.assert_workers_alive()
        drained = time.time() - max(f.end for f in self.faults)
        codes = fh.stop_workers(self.procs)
        assert codes == [0] * WORKERS, self.output()
        stored = {k.rsplit(":", 1)[1] for k in self.admin.scan_iter(match="{jobchain}:job:*", count=1000)}
        report = fh.check(
            self.app, self.submitter, self.runs, self.faults, slack=SLACK, stored_job_ids=stored
        )
        report.figures.update(extra)
        report.figures["drained"] = drained
        report.figures["test"] = time.time() - self.started
        print(f"\n[{self.scheme}] {report.line()}")
        return report

    def close(self) -> None:
        if self.submitter.running:
            self.submitter.stop()
        fh.stop_workers(self.procs)
        self.admin.close()
        self.app.use_backend("memory://")


@pytest.fixture
def server(tmp_path: Path, redis_unavailable: Callable[[str], None]) -> Iterator[RedisProcess]:
    """This test's own redis-server: appendonly yes, appendfsync always, restartable on its port."""
    proc = RedisProcess(tmp_path / "redis", appendfsync="always")
    try:
        proc.start()
    except RedisUnavailable as exc:
        redis_unavailable(str(exc))
    yield proc
    proc.close()


@pytest.fixture(params=SCHEMES)
def rig(request: pytest.FixtureRequest, server: RedisProcess, tmp_path: Path) -> Iterator[Rig]:
    """Redis, two worker processes registered on it, and a client (not submitting yet)."""
    made = Rig(server, request.param, tmp_path)
    try:
        made.wait_registered()
        yield made
    finally:
        made.close()


@pytest.mark.slow
def test_redis_killed_with_appendfsync_always_loses_nothing_acknowledged(rig: Rig) -> None:
    """SIGKILL redis-server mid-run, restart it on its port and dir: lost 0 among acknowledged."""
    rig.submitter.start()
    time.sleep(BEFORE)
    assert fh.read_records(rig.runs)[0], "nothing ran before the fault"
    killed = time.time()
    rig.server.kill()
    time.sleep(DOWN)
    rig.assert_workers_alive()
    rig.server.start()
    rig.faults.append(fh.Fault("SIGKILL", killed, time.time()))
    flushed = rig.wait_buffer_empty()
    time.sleep(1.0)
    report = rig.finish({"down": rig.faults[0].end - killed, "buffer flushed": flushed})
    assert report.buffered, "no submit was buffered while Redis was down"
    for text in rig.output(tail=10**7):
        assert "backend_unavailable" in text, text[-3000:]
        assert "backend_recovered" in text, text[-3000:]


@pytest.mark.slow
def test_redis_paused_at_peak_load_loses_nothing_and_no_worker_dies(rig: Rig) -> None:
    """CLIENT PAUSE 3000 ALL right after a 400-job burst, with 100 submits/s: lost 0, no worker exits."""
    rig.submitter.start()
    time.sleep(BEFORE)
    rig.submitter.burst(400)
    paused = time.time()
    rig.admin.execute_command("CLIENT", "PAUSE", str(PAUSE_MS), "ALL")
    time.sleep(PAUSE_MS / 1000 + 0.2)
    rig.assert_workers_alive()
    rig.faults.append(fh.Fault("CLIENT PAUSE", paused, paused + PAUSE_MS / 1000))
    flushed = rig.wait_buffer_empty()
    time.sleep(1.0)
    rig.finish({"buffer flushed": flushed})


def _kill_clients(rig: Rig, kills: int) -> None:
    """CLIENT KILL TYPE normal SKIPME yes every KILL_EVERY seconds, ``kills`` times, under load."""
    rig.submitter.start()
    time.sleep(BEFORE)
    due = time.monotonic()
    for _ in range(kills):
        at = time.time()
        rig.admin.client_kill_filter(_type="normal", skipme=True)
        rig.faults.append(fh.Fault("CLIENT KILL", at, at))
        due += KILL_EVERY
        time.sleep(max(0.0, due - time.monotonic()))
        rig.assert_workers_alive()
    flushed = rig.wait_buffer_empty()
    time.sleep(1.0)
    rig.finish({"buffer flushed": flushed})


@pytest.mark.slow
def test_client_connections_killed_every_second_lose_nothing_and_double_nothing(rig: Rig) -> None:
    """Every connection cut once a second for 15 s: lost 0, no duplicate job from a retried submit."""
    _kill_clients(rig, KILLS)


@pytest.mark.soak
def test_soak_client_connections_killed_every_second_for_a_minute(rig: Rig) -> None:
    """The soak variant: connections cut once a second for 60 s (run with --soak or JOBCHAIN_SOAK=1)."""
    _kill_clients(rig, SOAK_KILLS)
