"""Throughput of the ``sqlite://`` backend (jobchain-sqlite) next to ``memory://``, in one run.

For each backend, on an empty store (a fresh file in a temp directory for SQLite):

* **enqueue 1-by-1** - N no-op jobs, one ``App.submit`` each (one transaction each);
* **enqueue bulk** - N no-op jobs in one ``App.submit_many``;
* **drain, P processes** - N queued no-op jobs run by P worker processes of
  ``--threads`` threads each (``jobchain.Worker``), from the moment they start
  until every job has succeeded. ``memory://`` lives in one process, so it is
  drained by a worker in this process (P = 1 only);
* **sleep efficiency** - S jobs sleeping a seeded random 10-60 ms on 8 threads in
  this process: ``sum(sleeps) / 8 / wall`` (1.0 is perfect).

    python bench/bench_sqlite.py [--jobs 2000] [--sleeps 400] [--threads 4]
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import platform
import random
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import structlog

from jobchain import App, Worker


def quiet() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))


def noop() -> None:
    return None


def sleep(seconds: float) -> None:
    time.sleep(seconds)


def make_app(url: str) -> App:
    app = App(url)
    app.task(noop, name="noop")
    app.task(sleep, name="sleep")
    return app


def child(url: str, threads: int, go: Any, stop: Any) -> None:
    """A worker process: runs jobs from ``go`` until ``stop`` is set."""
    quiet()
    app = make_app(url)
    worker = Worker(app, concurrency=threads, poll=0.05, name=f"bench-{os.getpid()}")
    go.wait()
    worker.start()
    stop.wait()
    worker.stop()
    app.close()


def succeeded(path: str) -> int:
    with sqlite3.connect(path) as conn:
        (count,) = conn.execute("SELECT count(*) FROM jobs WHERE state = 'succeeded'").fetchone()
    conn.close()
    return int(count)


def drain_processes(url: str, path: str, jobs: int, processes: int, threads: int) -> float:
    app = make_app(url)
    app.submit_many([app.tasks["noop"].s() for _ in range(jobs)])
    app.close()
    mp = multiprocessing.get_context("spawn")
    go, stop = mp.Event(), mp.Event()
    procs = [mp.Process(target=child, args=(url, threads, go, stop)) for _ in range(processes)]
    for proc in procs:
        proc.start()
    time.sleep(1.5)  # let the children import jobchain and open the file
    t0 = time.perf_counter()
    go.set()
    while succeeded(path) < jobs:
        time.sleep(0.005)
    wall = time.perf_counter() - t0
    stop.set()
    for proc in procs:
        proc.join(30)
    return jobs / wall


def drain_here(app: App, jobs: int, threads: int) -> float:
    app.submit_many([app.tasks["noop"].s() for _ in range(jobs)])
    worker = Worker(app, concurrency=threads, poll=0.05)
    worker.expect(jobs)
    t0 = time.perf_counter()
    worker.start()
    counters = worker.counters
    while counters.done + counters.failed < jobs:
        time.sleep(0.0005)
    wall = time.perf_counter() - t0
    worker.stop()
    return jobs / wall


def sleep_efficiency(app: App, count: int, threads: int = 8) -> float:
    rng = random.Random(7)
    sleeps = [rng.uniform(0.010, 0.060) for _ in range(count)]
    app.submit_many([app.tasks["sleep"].s(s) for s in sleeps])
    worker = Worker(app, concurrency=threads, poll=0.05)
    worker.expect(count)
    t0 = time.perf_counter()
    worker.start()
    counters = worker.counters
    while counters.done + counters.failed < count:
        time.sleep(0.0005)
    wall = time.perf_counter() - t0
    worker.stop()
    return sum(sleeps) / threads / wall


def rate(fn: Any, jobs: int) -> float:
    t0 = time.perf_counter()
    fn()
    return jobs / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--sleeps", type=int, default=400)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()
    quiet()
    rows: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:

        def fresh(name: str) -> tuple[str, str]:
            path = str(Path(tmp) / f"{name}.db")
            return f"sqlite://{path}", path

        for label, url_of in (("memory://", lambda n: ("memory://", "")), ("sqlite://", fresh)):
            url, _ = url_of("one")
            app = make_app(url)
            one = rate(lambda app=app: [app.tasks["noop"].submit() for _ in range(args.jobs)], args.jobs)
            app.close()
            url, _ = url_of("bulk")
            app = make_app(url)
            bulk = rate(lambda app=app: app.submit_many([app.tasks["noop"].s()] * args.jobs), args.jobs)
            app.close()
            if label == "memory://":
                app = make_app(url)
                drains = [f"{drain_here(app, args.jobs, args.threads):,.0f}", "n/a (one process)"]
                app.close()
            else:
                drains = []
                for processes in (1, 2):
                    url, path = url_of(f"drain{processes}")
                    drains.append(f"{drain_processes(url, path, args.jobs, processes, args.threads):,.0f}")
            url, _ = url_of("sleep")
            app = make_app(url)
            efficiency = sleep_efficiency(app, args.sleeps)
            app.close()
            rows += [
                (label, "enqueue 1-by-1 (jobs/s)", f"{one:,.0f}"),
                (label, "enqueue bulk (jobs/s)", f"{bulk:,.0f}"),
                (label, f"drain, 1 process x {args.threads} threads (jobs/s)", drains[0]),
                (label, f"drain, 2 processes x {args.threads} threads (jobs/s)", drains[1]),
                (label, "sleep efficiency, 8 threads", f"{efficiency:.1%}"),
            ]
    print(f"python {platform.python_version()}, sqlite {sqlite3.sqlite_version}, {os.cpu_count()} cores")
    print(f"--jobs {args.jobs} --sleeps {args.sleeps} --threads {args.threads}\n")
    print("| backend | measurement | result |\n|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    sys.exit(main())
