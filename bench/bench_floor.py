"""jobchain against the all-cores floor: a bare reliable list queue in 8 worker processes (issue 15, item 1).

Three systems, one Redis server, one invocation (their order rotates between
repetitions):

* ``floor`` - :mod:`baseline_queue` run in 8 worker *processes* (one consumer
  each, so no GIL is shared): ``LPUSH`` to enqueue, ``BLMOVE`` -> run ->
  ``LREM`` per job; no leases, results, retries or events;
* ``redis-lists`` and ``redis-streams`` - ``jobchain worker --processes 2
  --concurrency 4`` (a subprocess) with ``bench/floor_config.py``: a no-op
  task and a three-step chain, every lease, result, chain record and event kept.

Workloads, per system and repetition:

* **enqueue 1-by-1** - N no-op jobs submitted one call at a time from one
  client (the floor: one ``LPUSH`` each), before the workers start;
* **drain** - those N jobs run by the freshly started workers (the floor's 8
  processes wait at a barrier until all have imported and connected); the
  steady rate is taken between the 10% and the 90% mark (so start-up is left out);
* **worker CPU/job** - user+system CPU of every worker process (for jobchain
  the supervisor and its children) read from ``/proc/<pid>/stat`` at the same
  two marks, divided by the jobs between them;
* **chain p50 / p95** - C chains A->B->C submitted one at a time to the warm
  workers; latency from just before the submit to the last step's record.

Every execution is counted outside the system under test: each task writes a
16-byte record to a FIFO that this process reads (``floor_config.record``). A
job that never runs (nothing new for 30 s), or runs twice, fails the run.

The tally, the run and the table live in ``_harness.py``, shared with
``bench_peers.py`` (which adds the peers, bulk enqueue, cold chains and
sleeping jobs to these workloads).

``python bench/bench_floor.py [--jobs N] [--chains C] [--repeat R]``; ``--quick``
is a tiny correctness run, ``--json`` prints the results as JSON.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _harness import STALL, BenchError, LocalSystem, Tally, run_once, summarize, tree_cpu  # noqa: E402
from _harness import render as render_table  # noqa: E402
from baseline_queue import BaselineQueue, BaselineWorker  # noqa: E402
from redis_server import redis_server  # noqa: E402

SYSTEMS = ("floor", "redis-lists", "redis-streams")
FLOOR_PROCESSES = 8
JC_PROCESSES, JC_CONCURRENCY = 2, 4
__all__ = ["STALL", "BenchError", "Floor", "Jobchain", "Tally", "run_once", "summarize", "tree_cpu"]
#: the workloads this benchmark shows (bench_peers.py adds bulk, cold chains and sleeps)
FLOOR_METRICS = ("enqueue", "drain", "worker_cpu_ms", "chain_p50_ms", "chain_p95_ms")


def backend_url(redis_url: str, scheme: str, prefix: str) -> str:
    parts = urlsplit(redis_url)
    query = [*parse_qsl(parts.query, keep_blank_values=True), ("prefix", prefix)]
    return urlunsplit((scheme, parts.netloc, parts.path, urlencode(query), ""))


# --- systems ---------------------------------------------------------------------------------


class Floor(LocalSystem):
    """The bare list queue, run by FLOOR_PROCESSES worker processes of one consumer each."""

    name = "floor"
    processes = FLOOR_PROCESSES

    def __init__(self, redis_url: str, env: dict[str, str]) -> None:
        self.redis_url = redis_url
        self.env = env
        self.client = redis.Redis.from_url(redis_url)
        self.queue = BaselineQueue(self.client, f"bench-floor-{secrets.token_hex(4)}")
        self.procs: list[subprocess.Popen[bytes]] = []

    def enqueue(self, i: int) -> None:
        self.queue.enqueue("noop", i)

    def submit_chain(self, i: int) -> None:
        self.queue.enqueue("step1", i, next_steps=("step2", "step3"), chain=str(i))

    def bulk_range(self, start: int, count: int) -> float:
        """One pipeline of ``LPUSH`` commands of 1,000 messages each."""
        t0 = time.perf_counter()
        self.queue.enqueue_many(("noop", (i,)) for i in range(start, start + count))
        return time.perf_counter() - t0

    def submit_sleeps(self, start: int, ms: Sequence[int]) -> None:
        for k, m in enumerate(ms):
            self.queue.enqueue("sleep", start + k, m)

    def worker_argv(self, n: int) -> list[str]:
        """The command line of worker process ``n`` (it waits for :meth:`go` once connected)."""
        return [sys.executable, __file__, "--floor-worker", self.redis_url, self.queue.name, f"w{n}"]

    def start(self) -> list[int]:
        self.procs = [subprocess.Popen(self.worker_argv(n), env=self.env) for n in range(self.processes)]
        # every process has imported and connected before any takes a job (start-up left out)
        # (one second at a time: a longer BLPOP can outlive the client's socket timeout on a busy machine)
        deadline, ready = time.monotonic() + 60, 0
        while ready < len(self.procs):
            if self.client.blpop([f"{self.queue.name}:ready"], 1) is not None:
                ready += 1
            elif time.monotonic() > deadline:
                raise BenchError("floor: a worker process did not start within 60s")
        return [p.pid for p in self.procs]

    def go(self) -> None:
        """Let the started processes take jobs."""
        self.client.lpush(f"{self.queue.name}:go", *([b"go"] * len(self.procs)))

    def stop(self) -> None:
        self.queue.stop_workers(len(self.procs))
        for proc in self.procs:
            if proc.wait(60) != 0:
                raise BenchError(f"floor worker {proc.pid} exited with {proc.returncode}")
        left = self.queue.depth() + sum(
            int(self.client.llen(self.queue.processing(f"w{n}-0"))) for n in range(self.processes)
        )
        if left:
            raise BenchError(f"floor: {left} message(s) left in Redis")

    def close(self) -> None:
        self.queue.clear()
        self.client.close()


class Jobchain(LocalSystem):
    """``jobchain worker --processes 2 --concurrency 4`` on one Redis backend; submits from this process.

    ``config`` names the module in ``bench/`` that declares the tasks (``floor_config`` has
    ``noop_task``, ``steps`` and ``sleep_task``), ``options`` the worker's layout.
    """

    def __init__(
        self,
        scheme: str,
        redis_url: str,
        env: dict[str, str],
        *,
        config: str = "floor_config",
        options: Sequence[str] = ("--processes", str(JC_PROCESSES), "--concurrency", str(JC_CONCURRENCY)),
    ) -> None:
        self.name = scheme
        self.env = env
        self.url = backend_url(redis_url, scheme, f"bench-floor-{secrets.token_hex(4)}")
        self.cfg = importlib.import_module(config)
        self.options = list(options)
        self.cfg.app.use_backend(self.url)
        self.cfg.app.backend  # noqa: B018 - connect before the clock starts
        self.proc: subprocess.Popen[bytes] | None = None
        self.logdir: Path | None = None  # where the worker's log goes (default: beside the FIFO)

    def enqueue(self, i: int) -> None:
        self.cfg.noop_task.submit(i)

    def submit_chain(self, i: int) -> None:
        self.cfg.steps.submit(i)

    def bulk_range(self, start: int, count: int) -> float:
        """``submit_many``: one backend call for all the jobs."""
        t0 = time.perf_counter()
        self.cfg.noop_task.submit_many((i,) for i in range(start, start + count))
        return time.perf_counter() - t0

    def submit_sleeps(self, start: int, ms: Sequence[int]) -> None:
        self.cfg.sleep_task.submit_many((start + k, m) for k, m in enumerate(ms))

    def start(self) -> list[int]:
        argv = [sys.executable, "-m", "jobchain", "worker", "-c", str(HERE / f"{self.cfg.__name__}.py")]
        argv += ["-b", self.url, *self.options]
        logdir = self.logdir or Path(self.env["JOBCHAIN_FLOOR_FIFO"]).parent
        self.log = open(logdir / f"{self.name}.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(argv, env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        return [self.proc.pid]

    def go(self) -> None:
        """Nothing to release: the worker takes jobs once started (its start-up is outside the marks)."""

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise BenchError(f"{self.name}: jobchain worker did not stop within 60s") from None
        self.log.close()
        if code != 0:
            tail = Path(self.log.name).read_text(errors="replace")[-2000:]
            raise BenchError(f"{self.name}: jobchain worker exited with {code}:\n{tail}")

    def close(self) -> None:
        self.cfg.app.close()


def floor_worker(url: str, name: str, consumer: str) -> None:
    """One floor worker process: one consumer that blocks until it takes a stop message."""
    from floor_config import FLOOR_TASKS

    client = redis.Redis.from_url(url)
    client.rpush(f"{name}:ready", consumer)
    client.blpop([f"{name}:go"], 0)
    worker = BaselineWorker(BaselineQueue(client, name), FLOOR_TASKS, threads=1, name=consumer, block=1.0)
    # the consumer loop on this process's main thread, until it takes a stop message: BLMOVE waits
    # 1 s at a time on the server (a BLMOVE of 0 would outlive redis-py's 5 s socket timeout, and a
    # message moved as the client gives up would sit in the processing list: a lost job)
    worker._loop(0)


def machine() -> str:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    from redis.utils import HIREDIS_AVAILABLE

    parser = "hiredis" if HIREDIS_AVAILABLE else "pure-Python parser"
    python = sys.version.split()[0]
    return f"{os.cpu_count()} CPUs ({cpu}), Python {python}, redis-py {redis.__version__} {parser}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--jobs",
        type=int,
        help="no-op jobs enqueued one by one, then drained (default 5000)",
    )
    parser.add_argument("--chains", type=int, help="warm three-step chains (default 100)")
    parser.add_argument("--repeat", type=int, help="repetitions; medians are shown (default 3)")
    parser.add_argument("--redis-url", help="use this Redis instead of starting a throwaway one")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repetition: correctness only")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    parser.add_argument("--floor-worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.floor_worker:
        floor_worker(*args.floor_worker)
        return 0
    jobs = args.jobs or (200 if args.quick else 5000)
    chains = args.chains or (10 if args.quick else 100)
    repeat = args.repeat or (1 if args.quick else 3)
    with tempfile.TemporaryDirectory(prefix="bench-floor-") as tmp:
        fifo = os.path.join(tmp, "runs.fifo")
        tally = Tally(fifo)
        env = dict(os.environ, JOBCHAIN_FLOOR_FIFO=fifo, JOBCHAIN_DISABLE_PLUGINS="")
        env["PYTHONPATH"] = os.pathsep.join([str(HERE), *sys.path[1:]])
        os.environ["JOBCHAIN_FLOOR_FIFO"] = fifo
        with redis_server() if args.redis_url is None else nullcontext(args.redis_url) as url:
            runs: dict[str, list[dict[str, float]]] = {name: [] for name in SYSTEMS}
            for rep in range(repeat):
                order = SYSTEMS[rep % len(SYSTEMS) :] + SYSTEMS[: rep % len(SYSTEMS)]
                for name in order:
                    system: Floor | Jobchain = (
                        Floor(url, env) if name == "floor" else Jobchain(name, url, env)
                    )
                    try:
                        result = run_once(system, tally, jobs, chains)
                    except BenchError as exc:
                        print(f"BENCHMARK FAILED: {exc}", file=sys.stderr)
                        return 1
                    finally:
                        system.close()
                    runs[name].append(result)
                    print(f"rep {rep + 1}/{repeat} {name}: " + json.dumps(result), file=sys.stderr)
    summary = summarize(runs)
    data = {"machine": machine(), "jobs": jobs, "chains": chains, "repeat": repeat, "summary": summary}
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(f"{machine()}; {jobs} jobs, {chains} chains, {repeat} repetition(s), medians")
        print(
            f"floor: {FLOOR_PROCESSES} processes; jobchain: --processes {JC_PROCESSES} "
            f"--concurrency {JC_CONCURRENCY}"
        )
        print(render_table(summary, SYSTEMS, FLOOR_METRICS))
    print(
        f"verified: every job ran exactly once ({jobs} no-op jobs and {chains} x 3 chain steps "
        f"per system and repetition)",
        file=sys.stdout if not args.json else sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
