"""Benchmark of the Redis backends against a bare redis-py queue, on one Redis server, in one run.

Four systems run the same workloads with the same worker layout (``--processes``
P processes x ``--threads`` T threads each), one after the other in every
repetition (their order rotates between repetitions):

* ``baseline`` - :mod:`baseline_queue` (next to this file): ``LPUSH`` to
  enqueue, ``BLMOVE`` -> run -> ``LREM`` per job, a chain step pushes the next
  before it acks. No leases, results, retries or events: the floor;
* ``memory`` - jobchain's embedded backend (it cannot be shared between
  processes, so it always runs one process with P x T threads);
* ``redis-lists`` and ``redis-streams`` - jobchain's Redis backends, each job
  with its lease, delivery token, stored result and events.

Workloads, each timed on its own:

* **enqueue 1-by-1** - N no-op jobs submitted one call at a time (``Task.submit``);
* **bulk enqueue** - N no-op jobs in one ``App.submit_many`` call;
* **drain** - those N jobs run by the P x T workers: from the moment the
  workers are told to start until the last job is acknowledged (settled);
  also the workers' CPU time per job (``os.times`` of the worker processes)
  and the Redis server's;
* **chains** - C three-step chains submitted one at a time to idle workers;
  latency from just before ``submit`` to the last step acknowledged (p50, p95);
* **sleep** - S jobs sleeping a seeded random 10-60 ms; efficiency is
  ``sum(sleeps) / (P x T)`` over the wall time.

Every phase of a Redis system starts with ``CONFIG RESETSTAT``; Redis commands
per job come from ``INFO commandstats``, round trips per job from
``total_reads_processed`` (read events on client sockets: about one per
request or pipeline; a very large pipeline counts several). The benchmark
counts every execution outside Redis (in the worker processes) and fails
loudly unless every job ran and was acknowledged exactly once and nothing is
left in the queues.

Run ``python bench/bench_redis.py`` (starts its own throwaway redis-server on a
free loopback port) or ``--redis-url redis://host:port/db`` (a server of your
own; its statistics are reset, and keys are written under unique prefixes and
deleted after). ``--quick`` is a small smoke run, ``--json`` prints the results
as JSON; every run also writes them to ``bench/results/``.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import multiprocessing.connection
import os
import platform
import queue
import secrets
import statistics
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis
import structlog

sys.path.insert(0, str(Path(__file__).resolve().parent))

from baseline_queue import BaselineQueue, BaselineWorker
from redis_server import redis_server

from jobchain import App, Plugins, Worker, chain, hookimpl
from jobchain.canvas import Chain
from jobchain.model import ChainRecord, ChainState, Job

RESULTS = Path(__file__).resolve().parent / "results"
SYSTEMS = ("baseline", "memory", "redis-lists", "redis-streams")
WORKLOADS = ("enqueue", "bulk", "drain", "chains", "sleep")
#: systems whose figures are held to the targets; redis-lists gets 15% of slack
TARGETED = ("redis-lists", "redis-streams")
LISTS_SLACK = 0.15
#: a phase fails when no job finished for this long
STALL = 30.0


class BenchError(RuntimeError):
    """The run is wrong (a job lost, run twice, left behind) or a worker failed."""


def backend_url(redis_url: str, scheme: str, prefix: str) -> str:
    """``redis://h:p/db?x`` -> ``<scheme>://h:p/db?x&prefix=<prefix>``."""
    parts = urlsplit(redis_url)
    tls = parts.scheme == "rediss"
    query = [*parse_qsl(parts.query, keep_blank_values=True), ("prefix", prefix)]
    scheme = scheme.replace("redis", "rediss", 1) if tls else scheme
    return urlunsplit((scheme, parts.netloc, parts.path, urlencode(query), ""))


@dataclass
class RedisUsage:
    """What the Redis server did during one phase."""

    calls: int = 0
    reads: int = 0
    cpu: float = 0.0
    usec: int = 0
    commands: dict[str, int] = field(default_factory=dict)


class Meter:
    """``CONFIG RESETSTAT`` at the start of a phase; commands, read events and CPU at its end."""

    IGNORED = ("info", "config|resetstat", "config")

    def __init__(self, url: str) -> None:
        self.client: Any = redis.Redis.from_url(url, decode_responses=True)
        self._reads = 0
        self._cpu = 0.0

    def _snapshot(self) -> tuple[dict[str, Any], int, float]:
        pipe = self.client.pipeline(transaction=False)
        pipe.info("commandstats")
        pipe.info("stats")
        pipe.info("cpu")
        commandstats, stats, cpu = pipe.execute()
        return commandstats, int(stats["total_reads_processed"]), cpu["used_cpu_sys"] + cpu["used_cpu_user"]

    def start(self) -> None:
        self.client.config_resetstat()
        _, self._reads, self._cpu = self._snapshot()

    def stop(self) -> RedisUsage:
        commandstats, reads, cpu = self._snapshot()
        commands: dict[str, int] = {}
        usec = 0
        for key, value in commandstats.items():
            name = key.removeprefix("cmdstat_")
            if name in self.IGNORED:
                continue
            commands[name] = int(value["calls"])
            usec += int(value["usec"])
        commands = dict(sorted(commands.items(), key=lambda kv: -kv[1]))
        # the snapshot itself is one read event
        return RedisUsage(
            calls=sum(commands.values()),
            reads=max(0, reads - self._reads - 1),
            cpu=cpu - self._cpu,
            usec=usec,
            commands=commands,
        )

    def close(self) -> None:
        self.client.close()


# --- what the workers run --------------------------------------------------------------------


@dataclass
class Recorder:
    """Executions, counted outside the system under test (list.append is atomic under the GIL)."""

    ran: list[int] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)


def task_functions(rec: Recorder) -> dict[str, Callable[..., Any]]:
    """The benchmark's tasks, recording every execution into ``rec``."""

    def noop(i: int) -> None:
        rec.ran.append(i)

    def nap(i: int, seconds: float) -> None:
        time.sleep(seconds)
        rec.ran.append(i)

    def step1(i: int) -> int:
        rec.steps.append(3 * i)
        return i

    def step2(i: int) -> int:
        rec.steps.append(3 * i + 1)
        return i

    def step3(i: int) -> int:
        rec.steps.append(3 * i + 2)
        return i

    return {"noop": noop, "nap": nap, "step1": step1, "step2": step2, "step3": step3}


class Notify(Protocol):
    def put(self, item: Any) -> None: ...

    def get(self, block: bool = True, timeout: float | None = None) -> Any: ...


class Events:
    """Event listeners, so that jobchain pays for real ones; chain completions go to ``notify``."""

    def __init__(self, notify: Notify | None) -> None:
        self.notify = notify
        self.started = 0
        self.succeeded = 0
        self._lock = threading.Lock()

    @hookimpl
    def jobchain_job_started(self, job: Job) -> None:
        with self._lock:
            self.started += 1

    @hookimpl
    def jobchain_job_succeeded(self, job: Job) -> None:
        with self._lock:
            self.succeeded += 1

    @hookimpl
    def jobchain_chain_completed(self, chain: ChainRecord) -> None:
        if self.notify is not None:
            self.notify.put((chain.id, time.monotonic()))


def make_app(url: str, rec: Recorder, events: Events | None = None) -> tuple[App, Chain]:
    """An App on ``url`` with the benchmark's tasks and the three-step chain."""
    app = App(url, plugins=Plugins(plugins=[events] if events is not None else []))
    fns = task_functions(rec)
    tasks = {name: app.task(name=name)(fn) for name, fn in fns.items()}
    return app, chain(tasks["step1"], tasks["step2"], tasks["step3"], name="bench")


# --- workers: in processes (Redis, baseline) or in this process (memory) ---------------------


@dataclass
class Layout:
    processes: int
    threads: int
    prefetch: int | None

    @property
    def workers(self) -> int:
        return self.processes * self.threads

    def __str__(self) -> str:
        return f"{self.processes} process(es) x {self.threads} thread(s)"


@dataclass
class Shared:
    """Signals and counters shared by the bench and its workers (across processes, or threads)."""

    go: Any
    stop: Any
    counts: Any  # settled jobs per slot (a slot is a process, or a baseline thread)
    last: Any  # time.monotonic() of each slot's last settled job
    notify: Notify


@dataclass
class Report:
    """What one worker process (or the in-process memory worker) did."""

    ran: list[int]
    steps: list[int]
    cpu: float
    done: int
    failed: int
    rejected: int
    started: int
    succeeded: int


@dataclass
class WorkerSpec:
    system: str
    url: str  # a jobchain backend URL, or the baseline's redis:// URL
    baseline_name: str = ""
    app: App | None = None  # memory: the App every thread shares
    recorder: Recorder | None = None  # memory: shared with the App's tasks


class Runner(Protocol):
    def start(self) -> None: ...

    def stop(self) -> Report: ...


class JobchainRunner:
    """A :class:`jobchain.Worker` that publishes its settled count after every settle."""

    def __init__(self, spec: WorkerSpec, layout: Layout, index: int, shared: Shared) -> None:
        self.events = Events(shared.notify)
        self.local = spec.app is not None
        if spec.app is not None:
            assert spec.recorder is not None
            self.app, self.rec = spec.app, spec.recorder
            self.app.plugins.register(self.events)
        else:
            self.rec = Recorder()
            self.app, _ = make_app(spec.url, self.rec, self.events)
        slot = index * layout.threads
        counts, last = shared.counts, shared.last
        if not hasattr(Worker, "_after_settle"):
            raise BenchError("jobchain.Worker._after_settle is gone: update CountingWorker in bench_redis.py")

        class CountingWorker(Worker):
            def _after_settle(self, batch: list[Any], results: list[Any]) -> None:
                super()._after_settle(batch, results)
                c = self.counters
                counts[slot] = c.done + c.failed
                last[slot] = time.monotonic()

        threads = layout.workers if spec.app is not None else layout.threads
        self.worker = CountingWorker(self.app, concurrency=threads, prefetch=layout.prefetch)
        self.app.backend  # noqa: B018 - connect before the clock starts

    def start(self) -> None:
        self.worker.start()

    def stop(self) -> Report:
        self.worker.stop()
        c = self.worker.counters
        report = Report(
            ran=list(self.rec.ran),
            steps=list(self.rec.steps),
            cpu=0.0,
            done=c.done,
            failed=c.failed,
            rejected=c.rejected,
            started=self.events.started,
            succeeded=self.events.succeeded,
        )
        if self.local:
            self.app.plugins.unregister(self.events)
        else:
            self.app.close()
        return report


class BaselineRunner:
    """The bare redis-py worker: ``threads`` consumers, each with its own processing list."""

    def __init__(self, spec: WorkerSpec, layout: Layout, index: int, shared: Shared) -> None:
        self.rec = Recorder()
        self.client = redis.Redis.from_url(spec.url)
        self.queue = BaselineQueue(self.client, spec.baseline_name)
        base = index * layout.threads
        counts, last, notify = shared.counts, shared.last, shared.notify
        self.threads = layout.threads
        done = [0] * layout.threads

        def on_done(message: dict[str, Any], thread: int) -> None:
            done[thread] += 1
            counts[base + thread] = done[thread]
            now = time.monotonic()
            last[base + thread] = now
            if "chain" in message and "next" not in message:
                notify.put((message["chain"], now))

        self.worker = BaselineWorker(
            self.queue,
            task_functions(self.rec),
            threads=layout.threads,
            name=f"{os.getpid()}-{index}",
            on_done=on_done,
        )
        self.client.ping()

    def start(self) -> None:
        self.worker.start()

    def stop(self) -> Report:
        self.queue.stop_workers(self.threads)
        clean = self.worker.stop()
        if self.worker.errors:
            raise BenchError(f"baseline worker failed: {self.worker.errors[0]!r}")
        if not clean:
            raise BenchError("baseline worker threads did not stop")
        done = sum(self.worker.processed)
        self.client.close()
        return Report(
            ran=list(self.rec.ran),
            steps=list(self.rec.steps),
            cpu=0.0,
            done=done,
            failed=0,
            rejected=0,
            started=done,
            succeeded=done,
        )


def worker_main(spec: WorkerSpec, layout: Layout, index: int, shared: Shared, conn: Any) -> None:
    """One worker process (or the memory worker's thread): ready -> go -> stop -> report."""
    try:
        runner: Runner = (
            BaselineRunner(spec, layout, index, shared)
            if spec.system == "baseline"
            else JobchainRunner(spec, layout, index, shared)
        )
        conn.send(("ready", None))
        shared.go.wait()
        t0 = os.times()
        runner.start()
        shared.stop.wait()
        t1 = os.times()
        report = runner.stop()
        report.cpu = (t1.user - t0.user) + (t1.system - t0.system)
        conn.send(("report", report))
    except BaseException:
        conn.send(("error", traceback.format_exc()))


class Pool:
    """The workers of one phase: forked processes, or for ``memory://`` one thread in this process."""

    def __init__(self, spec: WorkerSpec, layout: Layout) -> None:
        self.spec = spec
        self.layout = layout
        self.local = spec.app is not None
        slots = layout.workers
        if self.local:
            self.shared = Shared(
                go=threading.Event(),
                stop=threading.Event(),
                counts=[0] * slots,
                last=[0.0] * slots,
                notify=queue.Queue(),
            )
        else:
            ctx = multiprocessing.get_context("fork")
            self.shared = Shared(
                go=ctx.Event(),
                stop=ctx.Event(),
                counts=ctx.Array("q", slots, lock=False),
                last=ctx.Array("d", slots, lock=False),
                notify=ctx.Queue(),
            )
        self._conns: list[Any] = []
        self._procs: list[Any] = []
        self.t_go = 0.0

    def start(self) -> None:
        """Start the workers and wait until each is connected and waiting for ``go``."""
        count = 1 if self.local else self.layout.processes
        mine: Any
        theirs: Any
        for index in range(count):
            if self.local:
                mine, theirs = _LocalPipe.pair()
                proc: Any = threading.Thread(
                    target=worker_main, args=(self.spec, self.layout, index, self.shared, theirs), daemon=True
                )
            else:
                ctx = multiprocessing.get_context("fork")
                mine, theirs = ctx.Pipe()
                proc = ctx.Process(
                    target=worker_main, args=(self.spec, self.layout, index, self.shared, theirs), daemon=True
                )
            proc.start()
            self._conns.append(mine)
            self._procs.append(proc)
        for conn in self._conns:
            self._expect(conn, "ready")

    def _expect(self, conn: Any, kind: str, timeout: float = 60.0) -> Any:
        if not conn.poll(timeout):
            raise BenchError(f"a worker did not answer ({kind}) within {timeout:.0f}s")
        got, value = conn.recv()
        if got == "error":
            raise BenchError(f"a {self.spec.system} worker failed:\n{value}")
        if got != kind:
            raise BenchError(f"a worker said {got!r}, expected {kind!r}")
        return value

    def go(self) -> float:
        self.t_go = time.monotonic()
        self.shared.go.set()
        return self.t_go

    def settled(self) -> int:
        return int(sum(self.shared.counts[:]))

    def wait_settled(self, total: int) -> float:
        """Block until ``total`` jobs are settled; return the monotonic time of the last one."""
        progress, seen = time.monotonic(), -1
        while True:
            done = self.settled()
            if done >= total:
                return float(max(self.shared.last[:]))
            now = time.monotonic()
            if done != seen:
                progress, seen = now, done
            elif now - progress > STALL:
                raise BenchError(f"{self.spec.system}: stalled at {done}/{total} settled jobs")
            self._check_alive()
            time.sleep(0.002)

    def _check_alive(self) -> None:
        for conn in self._conns:
            if conn.poll():
                got, value = conn.recv()
                raise BenchError(f"a {self.spec.system} worker stopped early ({got}):\n{value}")

    def finish(self) -> list[Report]:
        """Stop the workers; return their reports (CPU measured from go to the stop request)."""
        self.shared.stop.set()
        reports = [self._expect(conn, "report") for conn in self._conns]
        for proc in self._procs:
            proc.join(30)
            if proc.is_alive():
                raise BenchError(f"a {self.spec.system} worker did not exit")
        return reports


class _LocalPipe:
    """The in-process stand-in of a multiprocessing Pipe (memory://)."""

    def __init__(self, inbox: queue.Queue[Any], outbox: queue.Queue[Any]) -> None:
        self._in, self._out = inbox, outbox

    @classmethod
    def pair(cls) -> tuple[_LocalPipe, _LocalPipe]:
        a: queue.Queue[Any] = queue.Queue()
        b: queue.Queue[Any] = queue.Queue()
        return cls(a, b), cls(b, a)

    def send(self, item: Any) -> None:
        self._out.put(item)

    def poll(self, timeout: float = 0.0) -> bool:
        if not self._in.empty():
            return True
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._in.empty():
                return True
            time.sleep(0.005)
        return not self._in.empty()

    def recv(self) -> Any:
        return self._in.get()


# --- one system ------------------------------------------------------------------------------


@dataclass
class Sizes:
    jobs: int
    enqueue_jobs: int
    chains: int
    sleep_jobs: int
    seed: int


def sleep_durations(jobs: int, seed: int) -> list[float]:
    import random

    rng = random.Random(seed)
    return [rng.uniform(0.010, 0.060) for _ in range(jobs)]


def check_once(name: str, seen: Sequence[int], total: int) -> None:
    """Every index in ``range(total)`` appears exactly once in ``seen``."""
    counts = bytearray(total)
    for i in seen:
        if not 0 <= i < total:
            raise BenchError(f"{name}: unexpected execution {i}")
        if counts[i] == 255:
            raise BenchError(f"{name}: job {i} ran more than 255 times")
        counts[i] += 1
    missing = counts.count(0)
    twice = total - missing - counts.count(1)
    if missing or twice:
        raise BenchError(f"{name}: {missing} of {total} jobs never ran, {twice} ran more than once")


def no_more_completions(pool: Pool, name: str) -> None:
    """No chain reported its completion a second time."""
    try:
        extra = pool.shared.notify.get(timeout=0.05)
    except queue.Empty:
        return
    raise BenchError(f"{name} chains: a chain completed twice: {extra}")


def check_reports(name: str, reports: Sequence[Report], total: int, *, jobchain: bool) -> None:
    done = sum(r.done for r in reports)
    failed = sum(r.failed for r in reports)
    rejected = sum(r.rejected for r in reports)
    if done != total or failed or rejected:
        raise BenchError(f"{name}: {done} acknowledged, {failed} failed, {rejected} rejected of {total} jobs")
    if jobchain:
        started = sum(r.started for r in reports)
        succeeded = sum(r.succeeded for r in reports)
        if started != total or succeeded != total:
            raise BenchError(f"{name}: {started} started and {succeeded} succeeded events for {total} jobs")


class System:
    """One system under test; each phase returns a dict of figures."""

    name = ""

    def __init__(self, redis_url: str | None, layout: Layout, sizes: Sizes) -> None:
        self.redis_url = redis_url
        self.layout = layout
        self.sizes = sizes

    def meter(self) -> Meter | None:
        return Meter(self.redis_url) if self.redis_url is not None and self.name != "memory" else None

    @contextmanager
    def measured(self, out: dict[str, Any], jobs: int) -> Iterator[None]:
        """CONFIG RESETSTAT before the block; Redis figures per job after it, into ``out``."""
        meter = self.meter()
        if meter is not None:
            meter.start()
        yield
        if meter is not None:
            usage = meter.stop()
            meter.close()
            out["redis_calls_per_job"] = usage.calls / jobs
            out["redis_reads_per_job"] = usage.reads / jobs
            out["redis_cpu_us_per_job"] = usage.cpu / jobs * 1e6
            out["redis_usec_per_job"] = usage.usec / jobs
            out["redis_commands"] = usage.commands

    def run(self, workloads: Sequence[str]) -> dict[str, dict[str, Any]]:
        raise NotImplementedError


def pool_cpu(reports: Sequence[Report]) -> float:
    return sum(r.cpu for r in reports)


class JobchainSystem(System):
    """memory, redis-lists or redis-streams."""

    def __init__(self, name: str, redis_url: str | None, layout: Layout, sizes: Sizes) -> None:
        super().__init__(redis_url, layout, sizes)
        self.name = name

    def _url(self) -> str:
        if self.name == "memory":
            return "memory://"
        assert self.redis_url is not None
        return backend_url(self.redis_url, self.name, f"jcbench-{secrets.token_hex(4)}")

    def _fresh(self) -> tuple[App, Chain, str]:
        url = self._url()
        app, steps = make_app(url, Recorder())
        app.backend  # noqa: B018 - connect outside the timings
        return app, steps, url

    def _pool(self, app: App, url: str) -> Pool:
        if self.name == "memory":
            rec = Recorder()
            # the memory backend lives in this process: the worker threads share the App
            shared_app, _ = make_app("memory://", rec)
            shared_app.use_backend(app.backend)
            return Pool(WorkerSpec(self.name, url, app=shared_app, recorder=rec), self.layout)
        return Pool(WorkerSpec(self.name, url), self.layout)

    def _wipe(self, app: App) -> None:
        backend = app.backend
        delete = getattr(backend, "delete_everything", None)
        if delete is not None:
            delete()
        app.close()

    def _check_empty(self, app: App, what: str) -> None:
        left = [s for s in app.stats() if s.ready or s.delayed or s.in_flight or s.failed]
        if left:
            raise BenchError(f"{self.name} {what}: jobs left behind: {left}")

    def _check_ready(self, app: App, total: int, what: str) -> None:
        ready = sum(s.ready for s in app.stats())
        if ready != total:
            raise BenchError(f"{self.name} {what}: {ready} jobs ready, {total} submitted")

    def run(self, workloads: Sequence[str]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        n = self.sizes.jobs
        if "enqueue" in workloads:
            app, _, _ = self._fresh()
            noop = app.tasks["noop"]
            count = self.sizes.enqueue_jobs
            fig: dict[str, Any] = {}
            with self.measured(fig, count):
                t0 = time.perf_counter()
                for i in range(count):
                    noop.submit(i)
                wall = time.perf_counter() - t0
            fig["rate"] = count / wall
            self._check_ready(app, count, "enqueue")
            self._wipe(app)
            out["enqueue"] = fig
        if "bulk" in workloads or "drain" in workloads:
            app, _, url = self._fresh()
            noop = app.tasks["noop"]
            fig = {}
            with self.measured(fig, n):
                t0 = time.perf_counter()
                app.submit_many(noop.s(i) for i in range(n))
                wall = time.perf_counter() - t0
            fig["rate"] = n / wall
            self._check_ready(app, n, "bulk enqueue")
            if "bulk" in workloads:
                out["bulk"] = fig
            if "drain" in workloads:
                out["drain"] = self._drain(app, url, n)
            self._wipe(app)
        if "chains" in workloads:
            out["chains"] = self._chains()
        if "sleep" in workloads:
            out["sleep"] = self._sleep()
        return out

    def _drain(self, app: App, url: str, n: int) -> dict[str, Any]:
        pool = self._pool(app, url)
        pool.start()
        fig: dict[str, Any] = {}
        with self.measured(fig, n):
            t_go = pool.go()
            t_done = pool.wait_settled(n)
        reports = pool.finish()
        fig["rate"] = n / (t_done - t_go)
        # memory: the worker ran in this process, so this is the process's CPU (the wait loop included)
        fig["worker_cpu_us_per_job"] = pool_cpu(reports) / n * 1e6
        check_once(f"{self.name} drain", [i for r in reports for i in r.ran], n)
        check_reports(f"{self.name} drain", reports, n, jobchain=True)
        self._check_empty(app, "drain")
        return fig

    def _chains(self) -> dict[str, Any]:
        app, steps, url = self._fresh()
        count = self.sizes.chains
        pool = self._pool(app, url)
        pool.start()
        pool.go()
        time.sleep(0.3)  # the workers start and block in their reads: idle
        latencies: list[float] = []
        fig: dict[str, Any] = {}
        ids: list[str] = []
        with self.measured(fig, 3 * count):
            for i in range(count):
                t0 = time.monotonic()
                handle = steps.submit(i)
                ids.append(handle.id)
                got, t1 = pool.shared.notify.get(timeout=STALL)
                if got != handle.id:
                    raise BenchError(f"{self.name} chains: chain {got} completed, waiting for {handle.id}")
                latencies.append(t1 - t0)
                time.sleep(0.003)
        reports = pool.finish()
        no_more_completions(pool, self.name)
        check_once(f"{self.name} chain steps", [i for r in reports for i in r.steps], 3 * count)
        check_reports(f"{self.name} chains", reports, 3 * count, jobchain=True)
        self._check_empty(app, "chains")
        for chain_id in ids:
            record = app.backend.get_chain(chain_id)
            if record is None or record.state is not ChainState.COMPLETED:
                raise BenchError(f"{self.name} chains: chain {chain_id} is {record and record.state}")
        self._wipe(app)
        fig.update(latency_stats(latencies))
        return fig

    def _sleep(self) -> dict[str, Any]:
        app, _, url = self._fresh()
        sleeps = sleep_durations(self.sizes.sleep_jobs, self.sizes.seed)
        nap = app.tasks["nap"]
        app.submit_many(nap.s(i, s) for i, s in enumerate(sleeps))
        pool = self._pool(app, url)
        pool.start()
        fig: dict[str, Any] = {}
        with self.measured(fig, len(sleeps)):
            t_go = pool.go()
            t_done = pool.wait_settled(len(sleeps))
        reports = pool.finish()
        check_once(f"{self.name} sleep", [i for r in reports for i in r.ran], len(sleeps))
        check_reports(f"{self.name} sleep", reports, len(sleeps), jobchain=True)
        self._check_empty(app, "sleep")
        self._wipe(app)
        ideal = sum(sleeps) / self.layout.workers
        fig["wall"] = t_done - t_go
        fig["ideal"] = ideal
        fig["efficiency"] = ideal / (t_done - t_go)
        return fig


class BaselineSystem(System):
    name = "baseline"

    def _queue(self) -> BaselineQueue:
        assert self.redis_url is not None
        return BaselineQueue(redis.Redis.from_url(self.redis_url), f"bench-baseline-{secrets.token_hex(4)}")

    def _pool(self, q: BaselineQueue) -> Pool:
        assert self.redis_url is not None
        return Pool(WorkerSpec(self.name, self.redis_url, baseline_name=q.name), self.layout)

    def _check_empty(self, q: BaselineQueue, what: str) -> None:
        left = list(q.client.scan_iter(match=f"{q.name}:*", count=1000))
        if left:
            sizes = {k.decode(): q.client.llen(k) for k in left[:5]}
            raise BenchError(f"baseline {what}: messages left behind: {sizes}")

    def run(self, workloads: Sequence[str]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        n = self.sizes.jobs
        if "enqueue" in workloads:
            q = self._queue()
            count = self.sizes.enqueue_jobs
            fig: dict[str, Any] = {}
            with self.measured(fig, count):
                t0 = time.perf_counter()
                for i in range(count):
                    q.enqueue("noop", i)
                wall = time.perf_counter() - t0
            fig["rate"] = count / wall
            if q.depth() != count:
                raise BenchError(f"baseline enqueue: {q.depth()} queued, {count} submitted")
            q.clear()
            q.client.close()
            out["enqueue"] = fig
        if "bulk" in workloads or "drain" in workloads:
            q = self._queue()
            fig = {}
            with self.measured(fig, n):
                t0 = time.perf_counter()
                q.enqueue_many(("noop", (i,)) for i in range(n))
                wall = time.perf_counter() - t0
            fig["rate"] = n / wall
            if q.depth() != n:
                raise BenchError(f"baseline bulk enqueue: {q.depth()} queued, {n} submitted")
            if "bulk" in workloads:
                out["bulk"] = fig
            if "drain" in workloads:
                pool = self._pool(q)
                pool.start()
                fig = {}
                with self.measured(fig, n):
                    t_go = pool.go()
                    t_done = pool.wait_settled(n)
                reports = pool.finish()
                fig["rate"] = n / (t_done - t_go)
                fig["worker_cpu_us_per_job"] = pool_cpu(reports) / n * 1e6
                check_once("baseline drain", [i for r in reports for i in r.ran], n)
                check_reports("baseline drain", reports, n, jobchain=False)
                self._check_empty(q, "drain")
                out["drain"] = fig
            q.clear()
            q.client.close()
        if "chains" in workloads:
            out["chains"] = self._chains()
        if "sleep" in workloads:
            out["sleep"] = self._sleep()
        return out

    def _chains(self) -> dict[str, Any]:
        q = self._queue()
        count = self.sizes.chains
        pool = self._pool(q)
        pool.start()
        pool.go()
        time.sleep(0.3)
        latencies: list[float] = []
        fig: dict[str, Any] = {}
        with self.measured(fig, 3 * count):
            for i in range(count):
                t0 = time.monotonic()
                q.enqueue("step1", i, next_steps=("step2", "step3"), chain=str(i))
                got, t1 = pool.shared.notify.get(timeout=STALL)
                if got != str(i):
                    raise BenchError(f"baseline chains: chain {got} completed, waiting for {i}")
                latencies.append(t1 - t0)
                time.sleep(0.003)
        reports = pool.finish()
        no_more_completions(pool, "baseline")
        check_once("baseline chain steps", [i for r in reports for i in r.steps], 3 * count)
        check_reports("baseline chains", reports, 3 * count, jobchain=False)
        self._check_empty(q, "chains")
        q.client.close()
        fig.update(latency_stats(latencies))
        return fig

    def _sleep(self) -> dict[str, Any]:
        q = self._queue()
        sleeps = sleep_durations(self.sizes.sleep_jobs, self.sizes.seed)
        q.enqueue_many(("nap", (i, s)) for i, s in enumerate(sleeps))
        pool = self._pool(q)
        pool.start()
        fig: dict[str, Any] = {}
        with self.measured(fig, len(sleeps)):
            t_go = pool.go()
            t_done = pool.wait_settled(len(sleeps))
        reports = pool.finish()
        check_once("baseline sleep", [i for r in reports for i in r.ran], len(sleeps))
        check_reports("baseline sleep", reports, len(sleeps), jobchain=False)
        self._check_empty(q, "sleep")
        q.client.close()
        ideal = sum(sleeps) / self.layout.workers
        fig["wall"] = t_done - t_go
        fig["ideal"] = ideal
        fig["efficiency"] = ideal / (t_done - t_go)
        return fig


def latency_stats(latencies: Sequence[float]) -> dict[str, Any]:
    ordered = sorted(latencies)
    p95 = ordered[min(len(ordered) - 1, max(0, round(0.95 * len(ordered)) - 1))]
    return {"p50_ms": statistics.median(ordered) * 1e3, "p95_ms": p95 * 1e3, "max_ms": ordered[-1] * 1e3}


# --- figures, targets, table -----------------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    """One row group of the table: a figure of one workload, and its target for redis-streams."""

    key: str
    label: str
    workload: str
    field: str
    unit: str
    higher_is_better: bool
    #: "ratio" (to the baseline of the same repetition), "absolute", or "" (no target)
    target_kind: str = ""
    target: float = 0.0
    per_job_from: str = ""  # which workload's Redis counters go in this row


METRICS = (
    Metric("enqueue", "enqueue 1-by-1", "enqueue", "rate", "jobs/s", True, "ratio", 0.9),
    Metric("bulk", "bulk enqueue", "bulk", "rate", "jobs/s", True, "absolute", 100_000),
    Metric("drain", "drain no-op", "drain", "rate", "jobs/s", True, "ratio", 1.5),
    Metric("worker_cpu", "worker CPU/job", "drain", "worker_cpu_us_per_job", "us", False, "ratio", 1.0),
    Metric("redis_cpu", "redis CPU/job", "drain", "redis_cpu_us_per_job", "us", False),
    Metric("chain_p50", "chain p50", "chains", "p50_ms", "ms", False, "ratio", 1.5),
    Metric("chain_p95", "chain p95", "chains", "p95_ms", "ms", False, "ratio", 1.5),
    Metric("sleep", "sleep efficiency", "sleep", "efficiency", "%", True, "absolute", 0.985),
)


def target_for(metric: Metric, system: str) -> float | None:
    """The target of ``system`` (None when not held to one); redis-lists gets 15% of slack."""
    if not metric.target_kind or system not in TARGETED:
        return None
    if system == "redis-lists" and metric.key != "sleep":
        return metric.target * (1 - LISTS_SLACK if metric.higher_is_better else 1 + LISTS_SLACK)
    return metric.target


def summarize(
    runs: list[dict[str, dict[str, dict[str, Any]]]], systems: Sequence[str]
) -> dict[str, dict[str, dict[str, Any]]]:
    """Medians over repetitions of each figure and of its per-repetition ratio to the baseline."""
    summary: dict[str, dict[str, dict[str, Any]]] = {}
    for system in systems:
        summary[system] = {}
        for metric in METRICS:
            values = [
                r[system][metric.workload][metric.field]
                for r in runs
                if metric.field in r[system].get(metric.workload, {})
            ]
            if not values:
                continue
            entry: dict[str, Any] = {"median": statistics.median(values), "runs": values}
            ratios = [
                r[system][metric.workload][metric.field] / r["baseline"][metric.workload][metric.field]
                for r in runs
                if "baseline" in r
                and metric.field in r[system].get(metric.workload, {})
                and r["baseline"].get(metric.workload, {}).get(metric.field)
            ]
            if ratios and system != "baseline":
                entry["ratio"] = statistics.median(ratios)
                entry["ratio_runs"] = ratios
            for extra in ("redis_calls_per_job", "redis_reads_per_job"):
                got = [r[system][metric.workload][extra] for r in runs if extra in r[system][metric.workload]]
                if got:
                    entry[extra] = statistics.median(got)
            target = target_for(metric, system)
            if target is not None:
                figure = entry.get("ratio") if metric.target_kind == "ratio" else entry["median"]
                entry["target"] = target
                if figure is not None:
                    met = figure >= target if metric.higher_is_better else figure <= target
                    entry["met"] = met
            summary[system][metric.key] = entry
    return summary


def fmt_value(metric: Metric, value: float) -> str:
    if metric.unit == "%":
        return f"{value:.2%}"
    if metric.unit == "jobs/s":
        return f"{value:,.0f} jobs/s"
    if metric.unit == "us":
        return f"{value:,.1f} us"
    return f"{value:,.2f} {metric.unit}"


def fmt_target(metric: Metric, target: float) -> str:
    sign = ">=" if metric.higher_is_better else "<="
    if metric.target_kind == "ratio":
        return f"{sign} {target:.2f}x"
    return f"{sign} {fmt_value(metric, target)}"


def table_rows(summary: dict[str, dict[str, dict[str, Any]]], systems: Sequence[str]) -> list[list[str]]:
    rows = [["workload", "system", "median", "vs baseline", "cmds/job", "trips/job", "target", "met"]]
    for metric in METRICS:
        for system in systems:
            entry = summary.get(system, {}).get(metric.key)
            if entry is None:
                continue
            ratio = entry.get("ratio")
            per_job = metric.key not in ("worker_cpu", "redis_cpu", "chain_p95")
            calls = entry.get("redis_calls_per_job") if per_job else None
            reads = entry.get("redis_reads_per_job") if per_job else None
            target = entry.get("target")
            met = entry.get("met")
            rows.append(
                [
                    metric.label,
                    system,
                    fmt_value(metric, entry["median"]),
                    "1.00x" if system == "baseline" else ("" if ratio is None else f"{ratio:.2f}x"),
                    "" if calls is None else f"{calls:.1f}",
                    "" if reads is None else f"{reads:.2f}",
                    "" if target is None else fmt_target(metric, target),
                    "" if met is None else ("met" if met else "MISSED"),
                ]
            )
    return rows


def render(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    right = {2, 3, 4, 5}
    lines = []
    for index, row in enumerate(rows):
        cells = [
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}, {platform.system()}"


def client_parser() -> str:
    """Which reply parser redis-py uses here: hiredis (C) or its pure-Python one."""
    from redis.utils import HIREDIS_AVAILABLE

    return f"redis-py {redis.__version__}, {'hiredis' if HIREDIS_AVAILABLE else 'pure-Python'} parser"


def redis_version(url: str) -> str:
    client = redis.Redis.from_url(url)
    try:
        return str(client.info("server")["redis_version"])
    finally:
        client.close()


# --- main ------------------------------------------------------------------------------------


def make_system(name: str, redis_url: str, layout: Layout, sizes: Sizes) -> System:
    if name == "baseline":
        return BaselineSystem(redis_url, layout, sizes)
    return JobchainSystem(name, redis_url, layout, sizes)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, help="no-op jobs for bulk enqueue and drain (default 20000)")
    parser.add_argument("--enqueue-jobs", type=int, help="jobs enqueued one by one (default: --jobs)")
    parser.add_argument("--chains", type=int, help="three-step chains (default 200)")
    parser.add_argument("--sleep-jobs", type=int, help="sleeping jobs (default 1000)")
    parser.add_argument("--repeat", type=int, help="repetitions; medians are shown (default 3)")
    parser.add_argument("--processes", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--threads", type=int, help="threads per worker process (default 8 / --processes)")
    parser.add_argument("--prefetch", type=int, help="jobchain Worker prefetch (default: the Worker's own)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the sleep durations (default 7)")
    parser.add_argument("--redis-url", help="use this Redis (its stats are reset) instead of starting one")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma-separated subset of {SYSTEMS}")
    parser.add_argument(
        "--workloads", default=",".join(WORKLOADS), help=f"comma-separated subset of {WORKLOADS}"
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, one repetition: a smoke run")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    parser.add_argument(
        "--save",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="write the results to bench/results/redis-<time>.json (default: yes)",
    )
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {"jobs": 300 if quick else 20_000, "chains": 20 if quick else 200,
                "sleep_jobs": 64 if quick else 1_000, "repeat": 1 if quick else 3}  # fmt: skip
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.enqueue_jobs is None:
        args.enqueue_jobs = args.jobs
    if args.threads is None:
        args.threads = max(1, 8 // args.processes)
    for name in ("jobs", "enqueue_jobs", "chains", "sleep_jobs", "repeat", "processes", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    args.systems = [s for s in args.systems.split(",") if s]
    args.workloads = [w for w in args.workloads.split(",") if w]
    if unknown := [s for s in args.systems if s not in SYSTEMS]:
        parser.error(f"unknown systems {unknown}; choose from {SYSTEMS}")
    if unknown := [w for w in args.workloads if w not in WORKLOADS]:
        parser.error(f"unknown workloads {unknown}; choose from {WORKLOADS}")
    return args


def progress_note(workload: str, figures: dict[str, Any]) -> str:
    if "rate" in figures:
        return f"{workload} {figures['rate']:,.0f}/s"
    if "p50_ms" in figures:
        return f"chain p50 {figures['p50_ms']:.2f} ms"
    return f"sleep {figures['efficiency']:.2%}"


def run(args: argparse.Namespace, redis_url: str) -> dict[str, Any]:
    layout = Layout(args.processes, args.threads, args.prefetch)
    sizes = Sizes(args.jobs, args.enqueue_jobs, args.chains, args.sleep_jobs, args.seed)
    systems: list[str] = args.systems
    runs: list[dict[str, dict[str, dict[str, Any]]]] = []
    started = time.monotonic()
    for rep in range(args.repeat):
        order = systems[rep % len(systems) :] + systems[: rep % len(systems)]
        results: dict[str, dict[str, dict[str, Any]]] = {}
        for name in order:
            t0 = time.monotonic()
            results[name] = make_system(name, redis_url, layout, sizes).run(args.workloads)
            brief = ", ".join(progress_note(w, v) for w, v in results[name].items())
            print(
                f"  run {rep + 1}/{args.repeat} {name:<13} {time.monotonic() - t0:5.1f}s  {brief}",
                file=sys.stderr,
                flush=True,
            )
        runs.append(results)
    summary = summarize(runs, systems)
    return {
        "machine": machine(),
        "redis_version": redis_version(redis_url),
        "client": client_parser(),
        "command": " ".join(["python", "bench/bench_redis.py", *sys.argv[1:]]),
        "layout": {"processes": layout.processes, "threads": layout.threads, "prefetch": layout.prefetch},
        "sizes": asdict(sizes),
        "repeat": args.repeat,
        "seconds": time.monotonic() - started,
        "verified": True,
        "summary": summary,
        "runs": runs,
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # the library's own info lines ("worker_started" ...) would go to stdout, between the figures
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    layout = Layout(args.processes, args.threads, args.prefetch)
    if not args.json:
        print(f"machine: {machine()}", flush=True)
        print(
            f"layout: {layout} = {layout.workers} workers (memory: 1 process x {layout.workers} threads)",
            flush=True,
        )
    try:
        if args.redis_url:
            data = run(args, args.redis_url)
        else:
            with redis_server() as url:
                data = run(args, url)
    except BenchError as exc:
        print(f"BENCHMARK FAILED: {exc}", file=sys.stderr)
        return 1
    path: Path | None = None
    if args.save:
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / f"redis-{time.strftime('%Y%m%d-%H%M%S')}.json"
        path.write_text(json.dumps(data, indent=2))
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    sizes = data["sizes"]
    print(
        f"redis-server {data['redis_version']}, {data['client']}\n"
        f"medians of {args.repeat} run(s); {sizes['jobs']} no-op jobs "
        f"({sizes['enqueue_jobs']} one by one), {sizes['chains']} chains, "
        f"{sizes['sleep_jobs']} sleeping jobs\n"
    )
    print(render(table_rows(data["summary"], args.systems)))
    saved = ""
    if path is not None:
        saved = f"; results in {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}"
    print(
        "\nverified: every job ran and was acknowledged exactly once, nothing left in any queue "
        f"({data['seconds']:.0f}s{saved})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
