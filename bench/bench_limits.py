"""What a limit costs: draining no-op jobs with a rate or concurrency limit vs none, per Redis backend.

For each Redis backend (redis-lists, redis-streams) and each variant, N no-op
jobs are submitted in one ``submit_many`` and drained by one in-process
Worker of T threads (``run(burst=True)``); the drain is timed from start to
the last job settled. Variants:

* ``none`` - a task without limits (the worker reads one attribute, no call);
* ``rate`` - ``rate_limit="1000000/s"``: never holds a job, so the figure is
  the cost of one ``take_tokens`` (one Lua script round trip) per job;
* ``concurrency`` - ``concurrency=1000``: never holds either, so it is one
  ``acquire_slot`` and one ``release_slot`` per job (plus an ``extend_slots``
  per held slot at each lease extension);
* ``both`` - both limits on the task.

Every job is checked to have run once. The table shows jobs/s (median of
``--repeat`` runs) and the ratio to ``none``. Run ``python bench/bench_limits.py``
(starts its own redis-server on a free loopback port) or ``--redis-url``.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import structlog
from redis_server import redis_server

from jobchain import App
from jobchain.plugins import Plugins
from jobchain.worker import Worker

SCHEMES = ("redis-lists", "redis-streams")
VARIANTS: dict[str, dict[str, Any]] = {
    "none": {},
    "rate": {"rate_limit": "1000000/s"},
    "concurrency": {"concurrency": 1000},
    "both": {"rate_limit": "1000000/s", "concurrency": 1000},
}


def drain(url: str, options: dict[str, Any], jobs: int, threads: int) -> float:
    """Seconds to drain ``jobs`` no-op jobs of a task with ``options``."""
    app = App(backend=url, plugins=Plugins())
    ran: list[int] = []

    @app.task(name="noop", **options)
    def noop(i: int) -> None:
        ran.append(i)

    noop.submit_many([(i,) for i in range(jobs)])
    worker = Worker(app, concurrency=threads, poll=0.05)
    started = time.perf_counter()
    worker.run(burst=True)
    elapsed = time.perf_counter() - started
    app.close()
    if sorted(ran) != list(range(jobs)):
        raise SystemExit(f"{url}: {len(ran)} runs of {jobs} jobs, {len(set(ran))} distinct")
    return elapsed


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=5000, help="no-op jobs per drain (default 5000)")
    parser.add_argument("--threads", type=int, default=8, help="worker threads (default 8)")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions; medians are shown (default 3)")
    parser.add_argument("--redis-url", help="use this Redis instead of starting one")
    args = parser.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

    def run(redis_url: str) -> None:
        rows = [["backend", "limit", "jobs/s", "vs none"]]
        for scheme in SCHEMES:
            base = None
            for variant, options in VARIANTS.items():
                times = []
                for _ in range(args.repeat):
                    prefix = f"bl{uuid.uuid4().hex[:8]}"
                    url = redis_url.replace("redis://", f"{scheme}://") + f"?prefix={prefix}"
                    times.append(drain(url, options, args.jobs, args.threads))
                rate = args.jobs / statistics.median(times)
                base = rate if base is None else base
                rows.append([scheme, variant, f"{rate:,.0f}", f"{rate / base:.2f}"])
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for row in rows:
            print(
                "  ".join(
                    cell.rjust(w) if i > 1 else cell.ljust(w)
                    for i, (cell, w) in enumerate(zip(row, widths, strict=True))
                )
            )

    if args.redis_url:
        run(args.redis_url)
    else:
        with redis_server() as url:
            run(url)


if __name__ == "__main__":
    main()
