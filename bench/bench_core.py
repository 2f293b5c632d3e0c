"""Benchmark of jobchain's core: the memory backend and the threaded worker.

Two measurements, each repeated and reported as the median:

* **no-op throughput** - N jobs that do nothing, submitted with
  ``App.submit_many``, run by a :class:`jobchain.Worker` with 8 threads. The
  clock starts when the worker starts and stops when the worker has settled
  the last job, so every record, lease, token, settle call and event hook of
  the real worker is paid for. In the same run a bare
  ``concurrent.futures.ThreadPoolExecutor(8)`` runs the same functions: that
  is the floor no job queue on threads can beat, and the figure to quote is
  the ratio between the two (target: at least 0.4).
* **sleep efficiency** - 1,000 jobs that each sleep a seeded random 10-60 ms
  on 8 threads. The ideal wall time is ``sum(sleeps) / 8``; efficiency is
  ``ideal / wall`` (target: at least 98.5%). The executor's efficiency on the
  same sleeps is shown too: it is what list scheduling of these jobs allows.

Run ``python bench/bench_core.py [--jobs N] [--repeat R]``. ``--profile`` runs
the no-op case once under pyinstrument, one profiler per worker thread, and
writes the combined text profile to ``bench/results/``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import functools
import logging
import os
import platform
import random
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import structlog

from jobchain import App, Plugins, Worker, hookimpl
from jobchain.model import Job

RESULTS = Path(__file__).resolve().parent / "results"


class EventCounter:
    """A plugin on the per-job event hooks, so that the benchmark pays for real listeners."""

    def __init__(self) -> None:
        self.started = 0
        self.succeeded = 0
        self._lock = threading.Lock()

    @hookimpl
    def jobchain_job_started(self, job: Job) -> None:
        with self._lock:
            self.started += 1

    @hookimpl
    def jobchain_job_succeeded(self, job: Job, duration: float) -> None:
        with self._lock:
            self.succeeded += 1


def noop() -> None:
    """The no-op job."""


def make_app() -> tuple[App, EventCounter]:
    """A fresh App on a private memory backend, with the installed plugins and an event counter."""
    counter = EventCounter()
    app = App("memory://", plugins=Plugins(plugins=[counter]))
    return app, counter


# --- one run of each case --------------------------------------------------------------


def run_executor(fns: Sequence[Callable[[], Any]], threads: int) -> tuple[float, float]:
    """Wall and CPU seconds a bare ThreadPoolExecutor takes to run ``fns`` (submission included)."""
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        pool.submit(noop).result()  # start a thread outside the timing
        c0, t0 = time.process_time(), time.perf_counter()
        futures = [pool.submit(fn) for fn in fns]
        for future in futures:
            future.result()
        return time.perf_counter() - t0, time.process_time() - c0


def run_worker(
    app: App, total: int, threads: int, *, worker_class: type[Worker] = Worker
) -> tuple[float, float]:
    """Wall and CPU seconds from ``Worker.start()`` until the worker has settled ``total`` jobs."""
    worker = worker_class(app, concurrency=threads, poll=0.05)
    worker.expect(total)
    c0, t0 = time.process_time(), time.perf_counter()
    worker.start()
    counters = worker.counters  # start() makes new counters
    while counters.done + counters.failed < total:
        time.sleep(0.0005)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    worker.stop()
    return wall, cpu


def check_finished(app: App, counter: EventCounter, total: int) -> None:
    """Every job succeeded, was seen by the event hooks and left nothing behind."""
    stats = app.stats()
    left = sum(s.ready + s.delayed + s.in_flight + s.failed for s in stats)
    if left or counter.started != total or counter.succeeded != total:
        raise SystemExit(
            f"benchmark run is wrong: {left} jobs left, {counter.started} started and "
            f"{counter.succeeded} succeeded events for {total} jobs"
        )


def noop_case(jobs: int, threads: int) -> dict[str, float]:
    """One paired run of the no-op case: the executor, then jobchain."""
    executor_wall, executor_cpu = run_executor([noop] * jobs, threads)
    app, counter = make_app()
    task = app.task(noop)
    t0 = time.perf_counter()
    app.submit_many([task] * jobs)
    submit = time.perf_counter() - t0
    wall, cpu = run_worker(app, jobs, threads)
    check_finished(app, counter, jobs)
    app.close()
    return {
        "executor_rate": jobs / executor_wall,
        "executor_cpu_us": executor_cpu / jobs * 1e6,
        "jobchain_rate": jobs / wall,
        "jobchain_cpu_us": cpu / jobs * 1e6,
        "ratio": executor_wall / wall,
        "submit_rate": jobs / submit,
    }


def sleep_durations(jobs: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [rng.uniform(0.010, 0.060) for _ in range(jobs)]


def sleep_case(jobs: int, threads: int, seed: int) -> dict[str, float]:
    """One paired run of the sleep case: the executor, then jobchain, on the same sleeps."""
    sleeps = sleep_durations(jobs, seed)
    ideal = sum(sleeps) / threads
    executor_wall, _ = run_executor([functools.partial(time.sleep, s) for s in sleeps], threads)
    app, counter = make_app()

    @app.task
    def sleep(seconds: float) -> None:
        time.sleep(seconds)

    app.submit_many(sleep.s(s) for s in sleeps)
    wall, _ = run_worker(app, jobs, threads)
    check_finished(app, counter, jobs)
    app.close()
    return {
        "ideal": ideal,
        "executor_wall": executor_wall,
        "executor_efficiency": ideal / executor_wall,
        "jobchain_wall": wall,
        "jobchain_efficiency": ideal / wall,
    }


# --- profile ---------------------------------------------------------------------------


def profile_noop(jobs: int, threads: int) -> tuple[float, str]:
    """Run the no-op case under pyinstrument, one profiler per worker thread; return wall and text."""
    from pyinstrument import Profiler
    from pyinstrument.session import Session

    sessions: list[Session] = []
    lock = threading.Lock()

    def profiled(target: Callable[..., None]) -> Callable[..., None]:
        def run(*args: Any) -> None:
            profiler = Profiler(interval=0.0002)
            profiler.start()
            try:
                target(*args)
            finally:
                session = profiler.stop()
                with lock:
                    sessions.append(session)

        return run

    class ProfiledWorker(Worker):
        def _thread_main(self, slot: Any) -> None:
            profiled(super()._thread_main)(slot)

    app, counter = make_app()
    task = app.task(noop)
    app.submit_many([task] * jobs)
    wall, _ = run_worker(app, jobs, threads, worker_class=ProfiledWorker)
    check_finished(app, counter, jobs)
    app.close()

    combined = sessions[0]
    for session in sessions[1:]:
        combined = Session.combine(combined, session)
    profiler = Profiler()
    profiler._last_session = combined  # render the combined session with the profiler's own output
    text = (
        "--- call tree ---\n"
        + profiler.output_text(unicode=False, color=False)
        + "\n--- functions by own time ---\n"
        + profiler.output_text(unicode=False, color=False, flat=True)
    )
    return wall, text


def write_profiles(jobs: int, threads: int) -> Path:
    """Profile the no-op case on one thread (where a job's CPU time goes) and on ``threads``."""
    parts = []
    for count, meaning in (
        (1, "one worker thread: wall time is CPU time, so this is where a job's cost goes"),
        (threads, "wall time per thread, so waiting for the GIL or a lock shows where it happens"),
    ):
        wall, text = profile_noop(jobs, count)
        parts.append(
            f"=== {jobs} no-op jobs on {count} thread(s): {wall:.3f}s under the profiler "
            f"({jobs / wall:,.0f} jobs/s) ===\n{meaning}\n\n{text}"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"noop-profile-{time.strftime('%Y%m%d-%H%M%S')}.txt"
    path.write_text(f"machine: {machine()}\n\n" + "\n\n".join(parts))
    return path


# --- report ----------------------------------------------------------------------------


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


def table(rows: list[tuple[str, str, str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = []
    for index, row in enumerate(rows):
        lines.append(f"{row[0]:<{widths[0]}}  {row[1]:>{widths[1]}}  {row[2]:<{widths[2]}}".rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def median(runs: list[dict[str, float]], key: str) -> float:
    return statistics.median(run[key] for run in runs)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=20_000, help="no-op jobs per run (default 20000)")
    parser.add_argument("--sleep-jobs", type=int, default=1_000, help="sleeping jobs per run (default 1000)")
    parser.add_argument("--threads", type=int, default=8, help="worker threads (default 8)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each case; the median is shown")
    parser.add_argument("--seed", type=int, default=7, help="seed of the sleep durations (default 7)")
    parser.add_argument("--skip-sleep", action="store_true", help="run the no-op case only")
    parser.add_argument("--profile", action="store_true", help="profile the no-op case and exit")
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.sleep_jobs < 1 or args.threads < 1 or args.repeat < 1:
        parser.error("--jobs, --sleep-jobs, --threads and --repeat must be >= 1")

    # the library's own info lines ("worker_started" ...) would go to stdout, between the figures
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

    print(f"machine: {machine()}", flush=True)
    if args.profile:
        path = write_profiles(args.jobs, args.threads)
        print(f"profile written to {path}")
        return 0

    noop_runs: list[dict[str, float]] = []
    sleep_runs: list[dict[str, float]] = []
    for index in range(args.repeat):
        noop_runs.append(noop_case(args.jobs, args.threads))
        print(
            f"  run {index + 1}/{args.repeat} no-op: executor {noop_runs[-1]['executor_rate']:,.0f}/s, "
            f"jobchain {noop_runs[-1]['jobchain_rate']:,.0f}/s, ratio {noop_runs[-1]['ratio']:.2f}",
            file=sys.stderr,
        )
        if not args.skip_sleep:
            sleep_runs.append(sleep_case(args.sleep_jobs, args.threads, args.seed))
            print(
                f"  run {index + 1}/{args.repeat} sleep: efficiency "
                f"{sleep_runs[-1]['jobchain_efficiency']:.2%} "
                f"(executor {sleep_runs[-1]['executor_efficiency']:.2%})",
                file=sys.stderr,
            )

    ratio = median(noop_runs, "ratio")
    rows = [
        ("measure", "median", "note"),
        (
            f"executor no-op ({args.threads} threads)",
            f"{median(noop_runs, 'executor_rate'):,.0f} jobs/s",
            f"bare ThreadPoolExecutor({args.threads}), {args.jobs} calls",
        ),
        (
            f"jobchain no-op ({args.threads} threads)",
            f"{median(noop_runs, 'jobchain_rate'):,.0f} jobs/s",
            "memory backend, Worker, records, leases and events kept",
        ),
        (
            "no-op ratio jobchain / executor",
            f"{ratio:.2f}x",
            f"target >= 0.40 ({'met' if ratio >= 0.4 else 'MISSED'})",
        ),
        (
            "CPU per no-op job, executor",
            f"{median(noop_runs, 'executor_cpu_us'):.1f} us",
            "process CPU time / jobs (all threads)",
        ),
        (
            "CPU per no-op job, jobchain",
            f"{median(noop_runs, 'jobchain_cpu_us'):.1f} us",
            "process CPU time / jobs (all threads, monitor included)",
        ),
        ("jobchain submit_many", f"{median(noop_runs, 'submit_rate'):,.0f} jobs/s", "not in the timings"),
    ]
    if sleep_runs:
        efficiency = median(sleep_runs, "jobchain_efficiency")
        rows += [
            (
                f"sleep ideal wall ({args.sleep_jobs} jobs)",
                f"{median(sleep_runs, 'ideal'):.3f} s",
                f"sum of 10-60 ms sleeps / {args.threads}, seed {args.seed}",
            ),
            ("executor sleep efficiency", f"{median(sleep_runs, 'executor_efficiency'):.2%}", "ideal / wall"),
            (
                "jobchain sleep efficiency",
                f"{efficiency:.2%}",
                f"ideal / wall; target >= 98.50% ({'met' if efficiency >= 0.985 else 'MISSED'})",
            ),
        ]
    sys.stderr.flush()
    print(f"median of {args.repeat} runs\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
