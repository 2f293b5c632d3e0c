"""Memory per queued job and per queued chain, for ``memory://``, ``redis-lists://`` and ``redis-streams://``.

For each backend, four scenarios run on an empty store:

* **queued jobs** - N no-op jobs (``noop(i)``) submitted one at a time, none run yet;
* **queued chains** - C three-step chains (``step1 >> step2 >> step3``) submitted one
  at a time: the chain record and the first step's job;
* **finished jobs** - the N jobs above after a worker ran them all: what stays (the
  job records with their results, which are kept until deleted);
* **finished chains** - the C chains after all three steps ran.

On Redis the figure is the growth of ``used_memory`` (``INFO memory``) from the
empty database to the end of the scenario, divided by N (or C); every key is
then read with ``MEMORY USAGE <key> SAMPLES 0`` and the keys are grouped by
their pattern (``{p}:job:<id>`` ...) to show where the bytes go, with the
encoding Redis chose (``OBJECT ENCODING``). For ``memory://`` the figure is
the growth of the Python heap as :mod:`tracemalloc` counts it.

The script starts its own throwaway ``redis-server`` on a free loopback port
(``--save '' --appendonly no``) and stops it by its PID at the end; extra
server options can be passed with ``--redis-config``, for example
``--redis-config 'hash-max-listpack-value 256'`` to see the effect of a
larger listpack limit on the job hashes.

    python bench/bench_memory.py [--jobs 10000] [--chains 1000] [--json]
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import shlex
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import redis
import structlog

sys.path.insert(0, str(Path(__file__).resolve().parent))  # redis_server, next to this file

from redis_server import redis_server

from jobchain import App, chain
from jobchain.canvas import Chain

BACKENDS = ("memory", "redis-lists", "redis-streams")
SCENARIOS = ("queued jobs", "queued chains", "finished jobs", "finished chains")


@dataclass
class KeyGroup:
    """Keys of one pattern after a scenario, with their ``MEMORY USAGE`` sum."""

    pattern: str
    type: str
    encodings: list[str]
    keys: int
    bytes: int


@dataclass
class Measurement:
    backend: str
    scenario: str
    count: int
    total_bytes: int
    keys: list[KeyGroup] = field(default_factory=list)

    @property
    def per_item(self) -> float:
        return self.total_bytes / self.count if self.count else 0.0


# --- the workload -------------------------------------------------------------------------


def make_app(url: str) -> tuple[App, Callable[[int], Any], Chain]:
    app = App(url)

    @app.task(name="noop")
    def noop(i: int) -> None:
        return None

    @app.task(name="step1")
    def step1(i: int) -> int:
        return i + 1

    @app.task(name="step2")
    def step2(i: int) -> int:
        return i * 2

    @app.task(name="step3")
    def step3(i: int) -> int:
        return i - 1

    return app, noop.submit, chain(step1, step2, step3, name="three")


def submit(noop: Callable[[int], Any], three: Chain, scenario: str, jobs: int, chains: int) -> int:
    """Submit the scenario's work one call at a time; return how many jobs or chains."""
    if "jobs" in scenario:
        for i in range(jobs):
            noop(i)
        return jobs
    for i in range(chains):
        three.submit(i)
    return chains


def run_all(app: App) -> None:
    """Run everything queued with one worker of 8 threads, and stop it."""
    worker = app.worker(concurrency=8, lease=30.0)
    worker.start()
    try:
        if not worker.drain(timeout=300):
            raise SystemExit("the worker did not finish the jobs within 300 s")
    finally:
        worker.stop()


# --- Redis --------------------------------------------------------------------------------


def key_pattern(key: str) -> str:
    """``{p}:job:01ab...`` -> ``{p}:job:<id>``; ``{p}:ready:default:17954` -> ``{p}:ready:<queue>:<band>``."""
    _, _, rest = key.partition("}:")
    parts = rest.split(":")
    kind = parts[0]
    if kind in ("job", "chain"):
        return f"{{p}}:{kind}:<id>"
    if kind in ("ready", "stream"):
        return f"{{p}}:{kind}:<queue>:<band>"
    if kind == "worker":
        return "{p}:worker:<name>"
    if kind == "proc":
        return "{p}:proc:<worker>"
    if len(parts) > 1:
        return f"{{p}}:{kind}:<queue>"
    return f"{{p}}:{kind}"


def key_groups(client: Any) -> list[KeyGroup]:
    names = list(client.scan_iter(match="*", count=1000))
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.memory_usage(name, samples=0)
        pipe.type(name)
        pipe.object("encoding", name)
    replies = pipe.execute()
    groups: dict[str, KeyGroup] = {}
    for i, name in enumerate(names):
        usage, kind, encoding = replies[3 * i : 3 * i + 3]
        pattern = key_pattern(name)
        group = groups.setdefault(
            pattern, KeyGroup(pattern=pattern, type=kind, encodings=[], keys=0, bytes=0)
        )
        group.keys += 1
        group.bytes += int(usage or 0)
        if encoding not in group.encodings:
            group.encodings.append(encoding)
    return sorted(groups.values(), key=lambda g: -g.bytes)


def used_memory(client: Any) -> int:
    return int(client.info("memory")["used_memory"])


def measure_redis(redis_url: str, scheme: str, scenario: str, jobs: int, chains: int) -> Measurement:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.flushall()
    time.sleep(0.2)  # let the server free what FLUSHALL dropped
    before = used_memory(client)
    host = redis_url.split("://", 1)[1]
    app, noop, three = make_app(f"{scheme}://{host}?prefix=bench")
    try:
        count = submit(noop, three, scenario, jobs, chains)
        if scenario.startswith("finished"):
            run_all(app)
    finally:
        app.close()
    # the App's connections are closed: their buffers are not what a queued job costs
    time.sleep(0.2)
    after = used_memory(client)
    groups = key_groups(client)
    client.close()
    return Measurement(scheme, scenario, count, after - before, groups)


# --- memory:// ----------------------------------------------------------------------------


def measure_memory(scenario: str, jobs: int, chains: int) -> Measurement:
    app, noop, three = make_app("memory://")
    # warm up: open the backend and create its structures, then forget that job
    noop(-1)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        count = submit(noop, three, scenario, jobs, chains)
        if scenario.startswith("finished"):
            run_all(app)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
        app.close()
    return Measurement("memory", scenario, count, after - before)


# --- report -------------------------------------------------------------------------------


def summary_table(results: Sequence[Measurement]) -> str:
    by = {(m.backend, m.scenario): m for m in results}
    backends = [b for b in BACKENDS if any(m.backend == b for m in results)]
    lines = [
        "| scenario | " + " | ".join(f"`{b}://`" for b in backends) + " |",
        "|---|" + "---:|" * len(backends),
    ]
    for scenario in SCENARIOS:
        cells = []
        for b in backends:
            m = by.get((b, scenario))
            cells.append("-" if m is None else f"{m.per_item:,.0f} B")
        unit = "per job" if "jobs" in scenario else "per chain"
        lines.append(f"| {scenario} ({unit}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def keys_table(m: Measurement) -> str:
    lines = [
        f"{m.backend}, {m.scenario} ({m.count:,}): used_memory grew by {m.total_bytes:,} B",
        "| key | type (encoding) | keys | MEMORY USAGE | per item |",
        "|---|---|---:|---:|---:|",
    ]
    for g in m.keys:
        lines.append(
            f"| `{g.pattern}` | {g.type} ({', '.join(g.encodings)}) | {g.keys:,} | {g.bytes:,} B"
            f" | {g.bytes / m.count:,.1f} B |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--jobs", type=int, default=10_000, help="no-op jobs per job scenario")
    parser.add_argument("--chains", type=int, default=1_000, help="three-step chains per chain scenario")
    parser.add_argument(
        "--backends", default=",".join(BACKENDS), help="comma-separated, of: " + ", ".join(BACKENDS)
    )
    parser.add_argument(
        "--redis-config",
        default="",
        help="extra redis-server options as NAME VALUE pairs, e.g. 'hash-max-listpack-value 256'",
    )
    parser.add_argument("--json", action="store_true", help="print the measurements as JSON")
    args = parser.parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = sorted(set(backends) - set(BACKENDS))
    if unknown:
        parser.error(f"unknown backends: {', '.join(unknown)}")

    # jobchain's workers log at info level; keep warnings only, on stderr
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    results: list[Measurement] = []
    if "memory" in backends:
        for scenario in SCENARIOS:
            print(f"memory: {scenario} ...", file=sys.stderr)
            results.append(measure_memory(scenario, args.jobs, args.chains))
    redis_backends = [b for b in backends if b != "memory"]
    if redis_backends:
        extra = _as_server_args(shlex.split(args.redis_config)) if args.redis_config else []
        with redis_server(extra) as url:
            version = redis.Redis.from_url(url).info("server")["redis_version"]
            print(f"redis-server {version} at {url} {' '.join(extra)}".rstrip(), file=sys.stderr)
            for scheme in redis_backends:
                for scenario in SCENARIOS:
                    print(f"{scheme}: {scenario} ...", file=sys.stderr)
                    results.append(measure_redis(url, scheme, scenario, args.jobs, args.chains))
    if args.json:
        print(json.dumps([{**asdict(m), "per_item": m.per_item} for m in results], indent=2))
        return 0
    print(f"Memory per item ({args.jobs:,} jobs, {args.chains:,} three-step chains, submitted one by one)\n")
    print(summary_table(results))
    for m in results:
        if m.keys:
            print()
            print(keys_table(m))
    return 0


def _as_server_args(words: Sequence[str]) -> list[str]:
    """``NAME VALUE`` pairs -> ``['--NAME', 'VALUE', ...]`` (``hash-max-listpack-value 256``)."""
    if len(words) % 2:
        raise SystemExit(f"--redis-config takes NAME VALUE pairs, got {' '.join(words)!r}")
    return [w if i % 2 or w.startswith("--") else f"--{w}" for i, w in enumerate(words)]


if __name__ == "__main__":
    raise SystemExit(main())
