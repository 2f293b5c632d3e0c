"""Benchmark of the HTTP gateway (jobchain-http), next to the same backend used directly.

Three measurements, all in one run:

* **no-op throughput** - N jobs that do nothing, drained by one
  :class:`jobchain.Worker` (8 threads, reserving 64 at a time): straight on
  the backend ("direct"), then through a ``jobchain http serve`` process in
  front of that backend, once with streamed delivery and once with long
  polling. The clock runs from the worker's start to the last job settled.
  Target: streamed >= 0.5x direct.
* **line transfer** - a file of L lines through ``push`` and then ``pull``
  (lines per second each way, and MB/s).
* **long-poll wake-up latency** - a worker thread waits in a long poll on an
  empty queue; the time from the start of a submit to the moment the waiting
  reserve returns the job, repeated R times (p50, p95). Target: p50 <= 5 ms.

``--backend memory://`` (default) puts the gateway's memory store in the
gateway process; "direct" is then a memory backend inside the benchmark's own
process, which pays no network at all. ``--backend redis-lists://HOST:PORT/0``
(or redis-streams) compares like with like: the worker reaches Redis directly,
or reaches the gateway, which reaches Redis.

Run ``python bench/bench_http.py [--jobs N] [--lines L] [--wakeups R] [--backend URL]``.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import structlog
from jobchain_http import HttpBackend
from jobchain_http.transfer import pull, push

from jobchain import App, Plugins
from jobchain.model import Completed

ROOT = Path(__file__).resolve().parents[1]
TOKEN = f"bench-{uuid.uuid4().hex}"
JOBCHAIN = [sys.executable, "-m", "jobchain", "--log-level", "warning"]


@contextmanager
def gateway(backend_url: str, log: Path) -> Iterator[str]:
    """A ``jobchain http serve`` process on a free loopback port; stopped by its PID at the end."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBCHAIN_")}
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [*JOBCHAIN, "http", "serve", "--bind", "127.0.0.1:0", "--token", TOKEN, "--backend", backend_url],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            found = re.search(r"serving .* on (http://127\.0\.0\.1:\d+)", log.read_text(errors="replace"))
            if found:
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the gateway did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.05)
        yield found.group(1)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(15)


def drain(app: App, jobs: int) -> float:
    """Submit ``jobs`` no-op jobs, then time one worker draining them; returns jobs per second."""

    @app.task(name=f"noop_{uuid.uuid4().hex[:6]}")
    def noop() -> None:
        return None

    for start in range(0, jobs, 1000):
        noop.submit_many([() for _ in range(min(1000, jobs - start))])
    worker = app.worker(concurrency=8, prefetch=64, poll=0.5, progress_interval=3600)
    t0 = time.perf_counter()
    worker.start()
    try:
        if not worker.drain(600, interval=0.002):
            raise SystemExit("the worker did not drain its queue")
        elapsed = time.perf_counter() - t0
    finally:
        worker.stop(30)
    done = worker.counters.done
    if done != jobs:
        raise SystemExit(f"expected {jobs} jobs done, got {done}")
    return jobs / elapsed


def wakeups(url: str, rounds: int) -> list[float]:
    """Latency (s) from the start of a submit to the return of a long poll waiting for it."""
    waiter = HttpBackend(url, token=TOKEN, delivery="poll")
    producer = HttpBackend(url, token=TOKEN)
    app = App(producer, plugins=Plugins(entry_points=False))

    @app.task(queue="wake")
    def ping() -> None:
        return None

    out: list[float] = []
    try:
        for _ in range(rounds):
            out.append(_wake_once(waiter, lambda: ping.submit()))
    finally:
        waiter.close()
        producer.close()
    return out


def _wake_once(waiter: HttpBackend, submit: Callable[[], object]) -> float:
    got: list[float] = []
    ready = threading.Event()

    def wait() -> None:
        ready.set()
        deliveries = waiter.reserve(["wake"], limit=1, lease=30, worker="waiter", wait=10)
        got.append(time.perf_counter())
        now = time.time()
        waiter.settle([Completed(delivery=d, started_at=now, finished_at=now) for d in deliveries])

    thread = threading.Thread(target=wait)
    thread.start()
    ready.wait()
    time.sleep(0.02)  # let the long poll reach the gateway and block there
    t0 = time.perf_counter()
    submit()
    thread.join(30)
    return got[0] - t0


def transfer(url: str, lines: int, workdir: Path) -> tuple[float, float, int]:
    """Lines per second through push, then through pull, and the file's size in bytes."""
    source, target = workdir / "in.txt", workdir / "out.txt"
    text = "".join(f"{i} naïve café 日本語 🚀 line\n" if i % 7 else "\n" for i in range(lines))
    data = text.encode()
    source.write_bytes(data)
    backend = HttpBackend(url, token=TOKEN, delivery="poll")
    queue = f"bench{uuid.uuid4().hex[:6]}"
    try:
        t0 = time.perf_counter()
        with open(source, "rb") as fh:
            push(backend, queue, fh)
        push_rate = lines / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        pull(backend, queue, target, wait=0.2)
        pull_rate = lines / (time.perf_counter() - t0)
    finally:
        backend.close()
    if target.read_bytes() != data:
        raise SystemExit("the pulled file differs from the pushed one")
    return push_rate, pull_rate, len(data)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=5000, help="no-op jobs per throughput run (default 5000)")
    parser.add_argument("--lines", type=int, default=100_000, help="lines in the transferred file")
    parser.add_argument("--wakeups", type=int, default=100, help="long-poll wake-ups to time")
    parser.add_argument("--backend", default="memory://", help="the backend behind the gateway")
    parser.add_argument("--prefetch", type=int, default=128, help="deliveries out on one stream")
    args = parser.parse_args(argv)

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    direct_url = args.backend
    if direct_url.startswith("redis"):
        sep = "&" if "?" in direct_url else "?"
        direct_url += f"{sep}prefix=bench{uuid.uuid4().hex[:6]}"
    rows: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        direct = App(direct_url, plugins=Plugins())
        rows.append((f"direct ({args.backend.split('://')[0]}://)", drain(direct, args.jobs)))
        direct.close()
        with gateway(direct_url, workdir / "gateway.log") as url:
            for mode in ("stream", "poll"):
                backend = HttpBackend(url, token=TOKEN, delivery=mode, prefetch=args.prefetch)
                app = App(backend, plugins=Plugins(entry_points=False))
                rows.append(
                    (f"gateway, {'streamed' if mode == 'stream' else 'long poll'}", drain(app, args.jobs))
                )
                app.close()
            push_rate, pull_rate, size = transfer(url, args.lines, workdir)
            latencies = sorted(wakeups(url, args.wakeups))

    base = rows[0][1]
    print(
        f"jobchain-http benchmark · {platform.python_implementation()} {platform.python_version()} · "
        f"{os.cpu_count()} CPUs · {socket.gethostname()}"
    )
    print(f"\nno-op throughput, {args.jobs} jobs, 1 worker x 8 threads, prefetch {args.prefetch}")
    print(f"{'path':<28}{'jobs/s':>10}{'vs direct':>11}")
    for name, rate in rows:
        print(f"{name:<28}{rate:>10.0f}{rate / base:>10.2f}x")
    mb = size / 1e6
    print(f"\nline transfer, {args.lines} lines ({mb:.1f} MB, unicode, every 7th empty)")
    print(f"{'push':<28}{push_rate:>10.0f} lines/s {push_rate * size / args.lines / 1e6:>6.1f} MB/s")
    print(f"{'pull':<28}{pull_rate:>10.0f} lines/s {pull_rate * size / args.lines / 1e6:>6.1f} MB/s")
    p50 = statistics.median(latencies) * 1000
    p95 = latencies[int(len(latencies) * 0.95) - 1] * 1000
    print(f"\nlong-poll wake-up (submit -> waiting reserve returns), {len(latencies)} rounds")
    print(f"{'p50':<28}{p50:>10.2f} ms   (target <= 5 ms)")
    print(f"{'p95':<28}{p95:>10.2f} ms")
    streamed = rows[1][1] / base
    print(f"\nstreamed / direct = {streamed:.2f}x (target >= 0.5x)")


if __name__ == "__main__":
    main()
