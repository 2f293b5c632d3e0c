"""Redis restarted in the middle of a run: real worker processes reconnect and finish it; nothing is lost.

Each test starts its own redis-server (append-only file, ``appendfsync always``)
on a free loopback port, starts two ``jobchain worker`` processes on it,
submits 500 jobs and 50 three-step chains, then ``SHUTDOWN``s Redis mid-run,
keeps it down for a few seconds and starts it again on the same port and
directory. Executions are recorded outside Redis, in a file per worker
process (see ``restart_app.py``).

A reservation whose reply is lost as Redis goes down is not lost, but waits:
on redis-lists until its lease ends (``LEASE``), on redis-streams until the
orphan sweep (``ORPHAN_IDLE``; the backend's default is 30 s, shortened here
through the config so that the test stays short).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

redis = pytest.importorskip("redis", reason="jobchain-redis is not installed (pip install -e backends/redis)")
jobchain_redis = pytest.importorskip("jobchain_redis", reason="jobchain-redis is not installed")

import restart_app  # noqa: E402
from redis_proc import (  # noqa: E402
    RedisProcess,
    RedisUnavailable,
    read_runs,
    start_worker,
    stop_processes,
    wait_for,
)

import jobchain  # noqa: E402
from jobchain.model import ChainState, JobState  # noqa: E402

APP_FILE = Path(restart_app.__file__).resolve()
JOBS, CHAINS, WORKERS, THREADS = 500, 50, 2, 4
LEASE = 8.0
ORPHAN_IDLE = 4.0
DOWN = 5.0
#: the most deliveries one worker process holds at once (running, buffered, waiting to be settled)
HELD_PER_WORKER = 2 * THREADS


@pytest.fixture
def server(tmp_path: Path, redis_unavailable: Callable[[str], None]) -> Iterator[RedisProcess]:
    """This test's own redis-server, persisted to an append-only file in tmp_path."""
    proc = RedisProcess(tmp_path / "redis")
    try:
        proc.start()
    except RedisUnavailable as exc:
        redis_unavailable(str(exc))
    yield proc
    proc.close()


def _env(runs: Path, url: str) -> dict[str, str]:
    """The environment of the worker processes: this interpreter's jobchain and jobchain-redis."""
    sources = [str(Path(m.__file__ or "").resolve().parents[1]) for m in (jobchain, jobchain_redis)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBCHAIN_")}
    env["PYTHONPATH"] = os.pathsep.join([*dict.fromkeys(sources), env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep
    )
    env["RESTART_TEST_RUNS"] = str(runs)
    env["RESTART_TEST_BACKEND"] = url
    env["RESTART_TEST_ORPHAN_IDLE"] = str(ORPHAN_IDLE)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _start_worker(index: int, url: str, runs: Path, log: Path) -> subprocess.Popen[bytes]:
    """``jobchain worker --config restart_app.py --backend URL``; for streams the config opens the URL."""
    backend = None if url.startswith("redis-streams://") else url
    return start_worker(
        APP_FILE, f"restart-{index}", backend, threads=THREADS, lease=LEASE, env=_env(runs, url), log=log
    )


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["redis-lists", "redis-streams"])
def test_workers_finish_the_run_across_a_redis_restart(
    scheme: str, server: RedisProcess, tmp_path: Path
) -> None:
    """Workers survive SHUTDOWN and restart of Redis; every acknowledged job and chain completes, once."""
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    url = server.url.replace("redis://", f"{scheme}://")
    logs = [tmp_path / f"worker-{i}.log" for i in range(WORKERS)]
    app = restart_app.app
    app.use_backend(url)
    try:
        procs = [_start_worker(i, url, runs_dir, log) for i, log in enumerate(logs)]
        try:
            names = {f"restart-{i}" for i in range(WORKERS)}
            wait_for(lambda: names <= {w.name for w in app.workers()}, 30, "the workers to register")
            # acknowledged: submit_many returned, so every one of these is stored
            jobs = app.submit_many(restart_app.job.s(n) for n in range(JOBS))
            chains = app.submit_many(restart_app.three_steps(c) for c in range(CHAINS))
            total = JOBS + 3 * CHAINS

            wait_for(lambda: len(read_runs(runs_dir)) >= total // 4, 30, "a quarter of the run")
            server.shutdown()
            at_shutdown = len(read_runs(runs_dir))
            time.sleep(DOWN)
            assert [p.poll() for p in procs] == [None] * WORKERS, "a worker exited while Redis was down"
            server.start()
            assert at_shutdown < total, "the run finished before Redis went down; make the jobs longer"
            wait_for(
                lambda: len({(r["task"], r["key"]) for r in read_runs(runs_dir)}) == total, 25, "every run"
            )

            def settled() -> bool:
                return all(
                    (record := app.backend.get_job(h.id)) is not None and record.state.finished for h in jobs
                ) and all((c := app.backend.get_chain(h.id)) is not None and c.finished for h in chains)

            wait_for(settled, 15, "every outcome to be settled")
            assert [p.poll() for p in procs] == [None] * WORKERS, "a worker exited"
        finally:
            codes = stop_processes(procs)
        output = [log.read_text(errors="replace") for log in logs]
        assert codes == [0] * WORKERS, output

        # every acknowledged job reached exactly one outcome, the right one
        for n, handle in enumerate(jobs):
            record = app.backend.get_job(handle.id)
            assert record is not None
            assert (record.state, record.result) == (JobState.SUCCEEDED, n)
        for c, handle in enumerate(chains):
            chain_record = app.backend.get_chain(handle.id)
            assert chain_record is not None
            assert chain_record.state is ChainState.COMPLETED, chain_record.render()
            assert chain_record.result == [c, 2, 3]
    finally:
        app.use_backend("memory://")

    # executions, counted outside Redis: each ran; a second run only for jobs a worker held at the fault
    runs = read_runs(runs_dir)
    counts = Counter((r["task"], r["key"]) for r in runs)
    expected = {("job", str(n)) for n in range(JOBS)} | {
        (task, str(c)) for c in range(CHAINS) for task in ("first", "second", "third")
    }
    assert set(counts) == expected
    duplicates = {key: n for key, n in counts.items() if n > 1}
    assert sum(n - 1 for n in duplicates.values()) <= WORKERS * HELD_PER_WORKER, duplicates

    # chains ran in order: no step started before its predecessor had finished
    ends: dict[tuple[str, str], float] = defaultdict(lambda: float("inf"))
    starts: dict[tuple[str, str], float] = defaultdict(lambda: float("inf"))
    for r in runs:
        key = (r["task"], r["key"])
        ends[key] = min(ends[key], r["end"])
        starts[key] = min(starts[key], r["start"])
    for cid in map(str, range(CHAINS)):
        assert ends["first", cid] <= starts["second", cid]
        assert ends["second", cid] <= starts["third", cid]

    # each worker saw the outage and logged its start and end
    for text in output:
        assert "backend_unavailable" in text, text[-2000:]
        assert "backend_recovered" in text, text[-2000:]
