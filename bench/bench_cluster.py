"""Throughput of the Redis backends on a Redis Cluster of 1 and of 3 masters, in one run.

Each system (``redis-lists``, ``redis-streams``) runs the same workload on a
1-master and a 3-master cluster started on loopback for the run (by
``tests/backends/cluster_proc.py``, stopped by PID at the end), repetitions
interleaved:

* Q queues (``--queues``, default 6), their names chosen so that on 3
  masters each master holds Q/3 of them;
* N no-op jobs (``--jobs``) spread evenly over the queues, stored with
  ``submit_many`` (one transaction per queue), then drained by P worker
  processes (``--processes``) of T threads (``--threads``), every worker on
  every queue;
* measured: the drain's jobs/s (from the workers' start to the last job
  acknowledged); the CPU each redis-server used during the drain
  (``/proc/<pid>/stat``), as a share of the drain's wall time, for the busiest
  master; and the *Redis ceiling*: jobs/s divided by that share, the rate at
  which the busiest master would be at 100 % of a core, which is where the
  cluster stops scaling if the workers are not the limit.

On a machine with few cores the worker processes, not Redis, decide the
drain rate; the ceiling shows what adding shards buys once they do not.

    python bench/bench_cluster.py [--jobs 6000] [--repeat 3] [--processes 2] [--threads 8] [--json]
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import structlog

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "backends"))  # cluster_proc: the test suite's cluster helper

from cluster_proc import ClusterProcess  # noqa: E402
from redis.cluster import key_slot  # noqa: E402

from jobchain import App  # noqa: E402

SYSTEMS = ("redis-lists", "redis-streams")
TICKS = os.sysconf("SC_CLK_TCK")


def _quiet() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def _app(url: str, queues: Sequence[str]) -> App:
    app = App(backend=url)
    for queue in queues:
        app.task(name=f"noop-{queue}", queue=queue)(_noop)
    return app


def _noop() -> None:
    return None


def _worker_process(url: str, queues: list[str], threads: int, start: Any, stop: Any) -> None:
    _quiet()
    app = _app(url, queues)
    worker = app.worker(concurrency=threads, queues=queues, poll=0.05, prefetch=threads * 2)
    start.wait()
    worker.start()
    stop.wait()
    worker.stop(timeout=10)
    app.close()


def _balanced_queues(count: int, ports_of: Any, prefix: str) -> list[str]:
    """``count`` queue names spread evenly over the masters of a 3-master cluster."""
    per: dict[int, list[str]] = {}
    want = max(1, count // 3)
    for n in range(10_000):
        name = f"q{n}"
        owner = ports_of(key_slot(f"{{{prefix}:q:{name}}}".encode()))
        if len(per.setdefault(owner, [])) < want:
            per[owner].append(name)
        if sum(len(v) for v in per.values()) >= count:
            break
    return [q for names in per.values() for q in names][:count]


@dataclass
class Run:
    system: str
    shards: int
    jobs: int
    seconds: float
    jobs_per_s: float
    busiest_shard_cpu: float  # share of one core during the drain
    all_shards_cpu: float
    ceiling_jobs_per_s: float


def _run(
    cluster: ClusterProcess,
    system: str,
    prefix: str,
    queues: list[str],
    jobs: int,
    processes: int,
    threads: int,
) -> Run:
    url = f"{system}+cluster://{cluster.hosts}/0?prefix={prefix}"
    app = _app(url, queues)
    per_queue = jobs // len(queues)
    for queue in queues:
        task = app.tasks[f"noop-{queue}"]
        app.submit_many([task.s() for _ in range(per_queue)])
    total = per_queue * len(queues)
    ctx = multiprocessing.get_context("fork")
    start, stop = ctx.Event(), ctx.Event()
    workers = [
        ctx.Process(target=_worker_process, args=(url, queues, threads, start, stop), daemon=True)
        for _ in range(processes)
    ]
    for process in workers:
        process.start()
    time.sleep(1.0)  # imports and connections done before the clock starts
    pids = [node.proc.pid for node in cluster.nodes if node.proc is not None]
    before = {pid: _cpu_seconds(pid) for pid in pids}
    began = time.perf_counter()
    start.set()
    backend = app.backend
    while True:
        stats = backend.stats()
        if sum(s.ready + s.in_flight + s.delayed for s in stats) == 0:
            break
        time.sleep(0.02)
    seconds = time.perf_counter() - began
    used = {pid: _cpu_seconds(pid) - before[pid] for pid in pids}
    stop.set()
    for process in workers:
        process.join(20)
    if backend.failed(limit=1) or len(stats) != len(queues):
        raise SystemExit(f"{system} on {len(cluster.ports)} masters: a job failed or a queue went missing")
    backend.delete_everything()  # type: ignore[attr-defined]
    app.close()
    busiest = max(used.values()) / seconds
    return Run(
        system=system,
        shards=len(cluster.ports),
        jobs=total,
        seconds=seconds,
        jobs_per_s=total / seconds,
        busiest_shard_cpu=busiest,
        all_shards_cpu=sum(used.values()) / seconds,
        ceiling_jobs_per_s=total / seconds / busiest if busiest else float("inf"),
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=6000)
    parser.add_argument("--queues", type=int, default=6)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    _quiet()
    runs: list[Run] = []
    with tempfile.TemporaryDirectory() as tmp:
        clusters = {n: ClusterProcess.start(Path(tmp) / f"c{n}", masters=n) for n in (1, 3)}
        try:
            for rep in range(args.repeat):
                for system in SYSTEMS:
                    # the same queue names on both clusters, spread evenly over the 3 masters
                    prefix = f"b{uuid.uuid4().hex[:8]}"
                    queues = _balanced_queues(args.queues, clusters[3].owner, prefix)
                    for shards in (1, 3) if rep % 2 == 0 else (3, 1):
                        run = _run(
                            clusters[shards], system, prefix, queues, args.jobs, args.processes, args.threads
                        )
                        runs.append(run)
        finally:
            for cluster in clusters.values():
                cluster.stop()
    rows = []
    for system in SYSTEMS:
        med = {
            n: {
                key: statistics.median(getattr(r, key) for r in runs if r.system == system and r.shards == n)
                for key in ("jobs_per_s", "busiest_shard_cpu", "all_shards_cpu", "ceiling_jobs_per_s")
            }
            for n in (1, 3)
        }
        rows.append((system, med))
    machine = f"{platform.node()} {os.cpu_count()} cores, Python {platform.python_version()}"
    if args.json:
        print(
            json.dumps({"machine": machine, "args": vars(args), "runs": [asdict(r) for r in runs]}, indent=2)
        )
        return
    print(
        f"# Redis Cluster, 1 vs 3 masters: {args.jobs} no-op jobs over {args.queues} queues, "
        f"{args.processes} processes x {args.threads} threads, median of {args.repeat} ({machine})\n"
    )
    print("| system | shards | drain jobs/s | busiest master CPU | all masters CPU | Redis ceiling jobs/s |")
    print("|---|---|---|---|---|---|")
    for system, med in rows:
        for n in (1, 3):
            m = med[n]
            print(
                f"| {system} | {n} | {m['jobs_per_s']:,.0f} | {m['busiest_shard_cpu']:.0%} | "
                f"{m['all_shards_cpu']:.0%} | {m['ceiling_jobs_per_s']:,.0f} |"
            )
    print()
    for system, med in rows:
        print(
            f"{system}: drain 3/1 = {med[3]['jobs_per_s'] / med[1]['jobs_per_s']:.2f}x, "
            f"Redis ceiling 3/1 = {med[3]['ceiling_jobs_per_s'] / med[1]['ceiling_jobs_per_s']:.2f}x"
        )


if __name__ == "__main__":
    main()
