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

``python bench/bench_floor.py [--jobs N] [--chains C] [--repeat R]``; ``--quick``
is a tiny correctness run, ``--json`` prints the results as JSON.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from baseline_queue import BaselineQueue, BaselineWorker  # noqa: E402
from redis_server import redis_server  # noqa: E402

SYSTEMS = ("floor", "redis-lists", "redis-streams")
FLOOR_PROCESSES = 8
JC_PROCESSES, JC_CONCURRENCY = 2, 4
STALL = 30.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(RuntimeError):
    """A job lost or run twice, or a worker failed."""


def backend_url(redis_url: str, scheme: str, prefix: str) -> str:
    parts = urlsplit(redis_url)
    query = [*parse_qsl(parts.query, keep_blank_values=True), ("prefix", prefix)]
    return urlunsplit((scheme, parts.netloc, parts.path, urlencode(query), ""))


# --- the tree of worker processes and its CPU time ------------------------------------------


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, user+system CPU seconds) of ``pid`` from /proc, or None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
        fields = text[text.rindex(")") + 2 :].split()
        return int(fields[1]), (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, ValueError, IndexError):  # exited meanwhile
        return None


def tree_cpu(roots: Sequence[int]) -> float:
    """CPU seconds used so far by ``roots`` and all their descendants (live ones)."""
    stats: dict[int, tuple[int, float]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None:
                stats[int(entry)] = st
    children: dict[int, list[int]] = collections.defaultdict(list)
    for pid, (ppid, _) in stats.items():
        children[ppid].append(pid)
    total, todo = 0.0, list(roots)
    while todo:
        pid = todo.pop()
        if pid in stats:
            total += stats[pid][1]
        todo.extend(children.get(pid, ()))
    return total


# --- the FIFO every task writes to ----------------------------------------------------------


class Tally:
    """Reads the FIFO in a thread: counts records per kind and id, timestamps the drain marks."""

    def __init__(self, path: str) -> None:
        self.path = path
        os.mkfifo(path)
        self.fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        self._keep = os.open(path, os.O_WRONLY)  # so the reader never sees EOF between workers
        os.set_blocking(self.fd, True)
        self.cond = threading.Condition()
        self.error = ""
        self.reset()
        self._thread = threading.Thread(target=self._run, name="tally", daemon=True)
        self._thread.start()

    def reset(self, marks: Sequence[int] = ()) -> None:
        """Forget every count; called before a system's workers start, so no record is lost."""
        with self.cond:
            self.seen: dict[str, collections.Counter[int]] = {k: collections.Counter() for k in "nabc"}
            self.total = 0
            self.last = time.monotonic()
            self.chain_done: dict[int, float] = {}
            self.marks = list(marks)
            self.roots: list[int] = []
            self.at: dict[int, tuple[float, float]] = {}  # mark -> (monotonic, worker-tree CPU)
            self.sync = False

    def track(self, roots: Sequence[int]) -> None:
        """The worker processes whose CPU time is read at each drain mark."""
        with self.cond:
            self.roots = list(roots)

    def _run(self) -> None:
        try:
            self._read()
        except BaseException as exc:
            with self.cond:
                self.error = f"the FIFO reader failed: {exc!r}"
                self.cond.notify_all()

    def _read(self) -> None:
        from floor_config import RECORD

        rest = b""
        while True:
            data = rest + os.read(self.fd, 1 << 16)
            cut = len(data) - len(data) % RECORD
            rest = data[cut:]
            now = time.monotonic()
            with self.cond:
                for off in range(0, cut, RECORD):
                    kind, num = chr(data[off]), int(data[off + 1 : off + RECORD - 1])
                    if kind == "s":
                        self.sync = True
                        continue
                    self.seen[kind][num] += 1
                    self.total += 1
                    if kind == "c":
                        self.chain_done.setdefault(num, now)
                    elif kind == "n":
                        count = len(self.seen["n"])
                        if count in self.marks and count not in self.at:
                            if not self.roots:
                                raise BenchError(f"{count} jobs ran before the workers' pids were known")
                            self.at[count] = (now, tree_cpu(self.roots))
                self.last = now
                self.cond.notify_all()

    def wait(self, predicate: Any, what: str) -> None:
        """Wait until ``predicate()`` holds; fail if no record arrived for STALL seconds."""
        with self.cond:
            while not predicate():
                if self.error:
                    raise BenchError(self.error)
                if time.monotonic() - self.last > STALL:
                    raise BenchError(f"{what}: nothing ran for {STALL:.0f}s; {self.missing()}")
                self.cond.wait(0.5)

    def flush(self) -> None:
        """Wait until everything written before now has been read (the workers have exited)."""
        with self.cond:
            self.sync = False
        os.write(self._keep, b"s%014d\n" % 0)
        self.wait(lambda: self.sync, "flush")

    def missing(self) -> str:
        return f"{self.total} records so far"

    def verify(self, system: str, jobs: int, chains: int) -> None:
        """Every no-op job and every chain step ran exactly once, nothing else ran."""
        problems = []
        for kind, expected in (("n", jobs), ("a", chains), ("b", chains), ("c", chains)):
            seen = self.seen[kind]
            lost = sorted(set(range(expected)) - set(seen))
            twice = sorted(i for i, n in seen.items() if n > 1)
            extra = sorted(i for i in seen if not 0 <= i < expected)
            name = "no-op job" if kind == "n" else f"chain step {'abc'.index(kind) + 1}"
            if lost:
                problems.append(f"{len(lost)} {name}(s) never ran (first: {lost[:5]})")
            if twice:
                problems.append(f"{len(twice)} {name}(s) ran more than once (first: {twice[:5]})")
            if extra:
                problems.append(f"{len(extra)} unexpected {name}(s) ran (first: {extra[:5]})")
        if problems:
            raise BenchError(f"{system}: " + "; ".join(problems))


# --- systems ---------------------------------------------------------------------------------


class Floor:
    """The bare list queue, run by FLOOR_PROCESSES worker processes of one consumer each."""

    name = "floor"

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

    def start(self) -> list[int]:
        self.procs = [
            subprocess.Popen(
                [sys.executable, __file__, "--floor-worker", self.redis_url, self.queue.name, f"w{n}"],
                env=self.env,
            )
            for n in range(FLOOR_PROCESSES)
        ]
        # every process has imported and connected before any takes a job (start-up left out)
        for _ in self.procs:
            if self.client.blpop([f"{self.queue.name}:ready"], 60) is None:
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
            int(self.client.llen(self.queue.processing(f"w{n}-0"))) for n in range(FLOOR_PROCESSES)
        )
        if left:
            raise BenchError(f"floor: {left} message(s) left in Redis")

    def close(self) -> None:
        self.queue.clear()
        self.client.close()


class Jobchain:
    """``jobchain worker --processes 2 --concurrency 4`` on one Redis backend; submits from this process."""

    def __init__(self, scheme: str, redis_url: str, env: dict[str, str]) -> None:
        import floor_config

        self.name = scheme
        self.env = env
        self.url = backend_url(redis_url, scheme, f"bench-floor-{secrets.token_hex(4)}")
        self.cfg = floor_config
        floor_config.app.use_backend(self.url)
        floor_config.app.backend  # noqa: B018 - connect before the clock starts
        self.proc: subprocess.Popen[bytes] | None = None

    def enqueue(self, i: int) -> None:
        self.cfg.noop_task.submit(i)

    def submit_chain(self, i: int) -> None:
        self.cfg.steps.submit(i)

    def start(self) -> list[int]:
        argv = [sys.executable, "-m", "jobchain", "worker", "-c", str(HERE / "floor_config.py")]
        argv += ["-b", self.url, "--processes", str(JC_PROCESSES), "--concurrency", str(JC_CONCURRENCY)]
        self.log = open(Path(self.env["JOBCHAIN_FLOOR_FIFO"]).with_name(f"{self.name}.log"), "ab")  # noqa: SIM115
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


class System(Protocol):
    """What run_once drives: a queue with its workers."""

    name: str

    def enqueue(self, i: int) -> None: ...
    def submit_chain(self, i: int) -> None: ...
    def start(self) -> list[int]:
        """Start the workers (ready to take jobs, or already taking them); return their root pids."""
        ...

    def go(self) -> None: ...
    def stop(self) -> None: ...


def run_once(system: System, tally: Tally, jobs: int, chains: int) -> dict[str, float]:
    tally.reset()
    t0 = time.perf_counter()
    for i in range(jobs):
        system.enqueue(i)
    enqueue = jobs / (time.perf_counter() - t0)
    lo, hi = max(1, jobs // 10), max(2, jobs - jobs // 10)
    # counts are cleared before the workers start: a record they write before start() returns
    # is counted (clearing after start lost the first jobs of a fast floor and stalled the drain)
    tally.reset(marks=(lo, hi))
    try:
        tally.track(system.start())
        system.go()
        tally.wait(lambda: len(tally.seen["n"]) >= jobs, f"{system.name} drain")
        (t_lo, cpu_lo), (t_hi, cpu_hi) = tally.at[lo], tally.at[hi]
        drain = (hi - lo) / max(t_hi - t_lo, 1e-9)
        cpu = (cpu_hi - cpu_lo) / (hi - lo)
        latencies = []
        for i in range(chains):
            start = time.monotonic()
            system.submit_chain(i)
            tally.wait(lambda i=i: i in tally.chain_done, f"{system.name} chain {i}")
            latencies.append(tally.chain_done[i] - start)
    except BaseException:
        with contextlib.suppress(Exception):
            system.stop()
        raise
    system.stop()
    tally.flush()
    tally.verify(system.name, jobs, chains)
    latencies.sort()
    return {
        "enqueue": enqueue,
        "drain": drain,
        "worker_cpu_ms": cpu * 1e3,
        "chain_p50_ms": statistics.median(latencies) * 1e3,
        "chain_p95_ms": latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))] * 1e3,
    }


# --- table -----------------------------------------------------------------------------------

METRICS = (  # key, label, unit, higher is better
    ("enqueue", "enqueue 1-by-1", "jobs/s", True),
    ("drain", "drain no-op (steady)", "jobs/s", True),
    ("worker_cpu_ms", "worker CPU/job", "ms", False),
    ("chain_p50_ms", "warm chain p50", "ms", False),
    ("chain_p95_ms", "warm chain p95", "ms", False),
)


def summarize(runs: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, dict[str, float]]]:
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name, reps in runs.items():
        out[name] = {}
        for key, *_ in METRICS:
            out[name][key] = {
                "median": statistics.median(r[key] for r in reps),
                "runs": [r[key] for r in reps],
            }
    for name in out:
        for key, *_ in METRICS:
            out[name][key]["ratio"] = out[name][key]["median"] / out["floor"][key]["median"]
    return out


def render(summary: dict[str, dict[str, dict[str, float]]]) -> str:
    rows = [["workload", "system", "median", "vs floor"]]
    for key, label, unit, _ in METRICS:
        for name in SYSTEMS:
            e = summary[name][key]
            value = f"{e['median']:,.0f} {unit}" if unit == "jobs/s" else f"{e['median']:,.2f} {unit}"
            rows.append([label, name, value, f"{e['ratio']:.2f}x"])
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = []
    for n, row in enumerate(rows):
        lines.append(
            "  ".join(
                c.rjust(w) if i >= 2 else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


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
        print(render(summary))
    print(
        f"verified: every job ran exactly once ({jobs} no-op jobs and {chains} x 3 chain steps "
        f"per system and repetition)",
        file=sys.stdout if not args.json else sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
