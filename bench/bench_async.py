"""asyncio: 10,000 jobs that each ``await asyncio.sleep(0.05)``, drained by one worker process (issue 17).

Systems, each on the same throwaway redis-server, each given the same number
of concurrent jobs (``--concurrency``, 500 by default), in one worker process:

* ``floor`` - what the whole machine can do: one plain asyncio process per
  core, together running ``--concurrency`` jobs, popping messages from one
  Redis list (``RPOP`` with a count as slots free up; no ack, lease, result or
  event); the only row with more than one process;
* ``redis-lists``, ``redis-streams`` - ``jobchain worker --concurrency 1
  --async-concurrency N`` with ``bench/async_config.py`` (an ``async def``
  task): every lease, result and event kept;
* ``arq``, ``saq``, ``taskiq`` - the asyncio-first peers, each in its own
  pinned virtualenv (``peer_envs.py``), driven through its adapter
  (``bench/peers/<peer>_app.py``) and run by its own CLI: one ``arq`` process
  with ``max_jobs = N``, ``saq --workers 1`` with ``concurrency = N``,
  ``taskiq worker -w 1 --max-async-tasks N`` (taskiq's CLI keeps a supervisor
  process over its one worker process; both count in the CPU).

Per system and repetition: the jobs are submitted first through the system's
bulk path with no worker running (**enqueue**, seconds: jobchain
``submit_many``, the floor one pipeline of ``LPUSH``; the peers have no bulk
API, so their adapters keep 50 submissions in flight); then the worker starts
and drains them. **wall** runs from the first job's start to the last job's
end, both recorded by the job itself through the FIFO that the driver reads
(``fifo_record.nap``), so the worker's start-up is left out; **efficiency** =
ideal / wall, ideal = jobs x 0.05 s / concurrency; **jobs/s** = jobs / wall;
**worker CPU/job** = user + system CPU of the worker's process tree between
the same two moments, over the jobs. A job that never ends fails the run; a
job that ends twice is counted once and shown in its own column (SAQ: see
``docs/benchmarks.md``).

``python bench/bench_async.py [--jobs 10000] [--concurrency 500] [--repeat 3]``;
``--quick`` (500 jobs, one repetition) checks it works, ``--json`` prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Protocol

import redis

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _harness import BenchError, Metric, Summary, Tally, fmt, render, summarize  # noqa: E402
from bench_floor import Floor, Jobchain, machine  # noqa: E402
from bench_peers import GRACE, PeerSpec, PeerSystem, redis_version  # noqa: E402
from peer_envs import ENVS, PeerEnv, ensure  # noqa: E402
from redis_server import redis_server  # noqa: E402

JOBCHAIN = ("redis-lists", "redis-streams")
PEERS = ("arq", "saq", "taskiq")
SYSTEMS = ("floor", *JOBCHAIN, *PEERS)
JOB_MS = 50  # every job awaits asyncio.sleep(0.05)

ASYNC_METRICS: tuple[Metric, ...] = (  # key, label, unit, higher is better
    ("wall_s", "wall (first start to last end)", "s", False),
    ("efficiency", "efficiency (ideal / wall)", "%", True),
    ("rate", "jobs per second", "jobs/s", True),
    ("worker_cpu_ms", "worker CPU/job", "ms", False),
    ("enqueue_s", "enqueue (bulk path)", "s", False),
    ("twice", "jobs run twice", "jobs", False),
)


class NapSystem(Protocol):
    """What :func:`run_naps` drives: a queue with its worker, which can submit asyncio jobs."""

    name: str

    def nap_range(self, start: int, count: int, ms: int) -> float:
        """Submit jobs ``start .. start+count-1`` sleeping ``ms`` each, through the bulk path; seconds."""
        ...

    def start(self) -> list[int]: ...
    def go(self) -> None: ...
    def stop(self) -> None: ...
    def close(self) -> None: ...


def ideal_seconds(jobs: int, concurrency: int, ms: int = JOB_MS) -> float:
    """The wall time of ``jobs`` sleeps of ``ms`` with ``concurrency`` at once and no overhead."""
    return jobs * ms / 1000 / concurrency


def figures(
    jobs: int, concurrency: int, ms: int, *, wall: float, cpu: float, enqueue: float, twice: int
) -> dict[str, float]:
    """One run's figures (keys of ASYNC_METRICS) from what was measured."""
    return {
        "wall_s": wall,
        "efficiency": 100 * ideal_seconds(jobs, concurrency, ms) / wall,
        "rate": jobs / wall,
        "worker_cpu_ms": cpu / jobs * 1e3,
        "enqueue_s": enqueue,
        "twice": float(twice),
    }


def run_naps(
    system: NapSystem, tally: Tally, jobs: int, concurrency: int, ms: int = JOB_MS
) -> tuple[dict[str, float], list[int]]:
    """Submit ``jobs`` sleeping jobs, start the worker, wait until every one has ended; the figures,
    and the ids of the jobs that ended more than once."""
    tally.reset()
    enqueue = system.nap_range(0, jobs, ms)
    tally.reset(marks=(("y", 1), ("z", jobs)))
    try:
        tally.track(system.start())
        system.go()
        tally.wait(lambda: len(tally.seen["z"]) >= jobs, f"{system.name} naps")
        (t_first, cpu_first), (t_last, cpu_last) = tally.at["y", 1], tally.at["z", jobs]
    except BaseException:
        try:
            system.stop()
        except Exception as exc:  # the first failure is the one to report
            print(f"{system.name}: stopping after a failure: {exc}", file=sys.stderr)
        raise
    system.stop()
    tally.flush()
    lost, twice, extra = tally.census("z", jobs)
    if lost or extra:
        raise BenchError(
            f"{system.name}: {len(lost)} job(s) never ended (first: {lost[:5]}), "
            f"{len(extra)} unexpected (first: {extra[:5]})"
        )
    wall, cpu = t_last - t_first, cpu_last - cpu_first
    return figures(jobs, concurrency, ms, wall=wall, cpu=cpu, enqueue=enqueue, twice=len(twice)), twice


# --- systems ---------------------------------------------------------------------------------


class AsyncFloor(Floor):
    """One asyncio process per core popping from one Redis list, ``concurrency`` jobs at once in all."""

    def __init__(self, redis_url: str, env: dict[str, str], concurrency: int) -> None:
        super().__init__(redis_url, env)
        self.processes = max(1, min(os.cpu_count() or 1, concurrency))
        self.slots = math.ceil(concurrency / self.processes)

    def worker_argv(self, n: int) -> list[str]:
        return [
            sys.executable,
            __file__,
            "--floor-worker",
            self.redis_url,
            self.queue.name,
            f"w{n}",
            str(self.slots),
        ]

    def nap_range(self, start: int, count: int, ms: int) -> float:
        t0 = time.perf_counter()
        self.queue.enqueue_many(("nap", (i, ms)) for i in range(start, start + count))
        return time.perf_counter() - t0


class AsyncJobchain(Jobchain):
    """``jobchain worker --concurrency 1 --async-concurrency N`` (one process) with ``async_config``."""

    def __init__(self, scheme: str, redis_url: str, env: dict[str, str], concurrency: int) -> None:
        options = ("--concurrency", "1", "--async-concurrency", str(concurrency))
        super().__init__(scheme, redis_url, env, config="async_config", options=options)

    def nap_range(self, start: int, count: int, ms: int) -> float:
        """``submit_many``: one backend call for all the jobs."""
        t0 = time.perf_counter()
        self.cfg.nap_task.submit_many((i, ms) for i in range(start, start + count))
        return time.perf_counter() - t0


def async_peers(concurrency: int) -> dict[str, PeerSpec]:
    """arq, SAQ and taskiq in one worker process each, ``concurrency`` jobs at once."""
    environ = (("BENCH_CONCURRENCY", str(concurrency)),)

    def arq(env: PeerEnv, url: str, queue: str) -> list[list[str]]:
        return [[str(env.bin("arq")), "arq_app.WorkerSettings"]]

    def saq(env: PeerEnv, url: str, queue: str) -> list[list[str]]:
        return [[str(env.bin("saq")), "saq_app.settings", "--workers", "1", "-q"]]

    def taskiq(env: PeerEnv, url: str, queue: str) -> list[list[str]]:
        argv = [str(env.bin("taskiq")), "worker", "taskiq_app:broker", "-w", "1"]
        return [[*argv, "--max-async-tasks", str(concurrency), "--log-level", "WARNING"]]

    return {
        "arq": PeerSpec("arq", "arq", f"1 process, max_jobs = {concurrency}", arq, environ=environ),
        "saq": PeerSpec(
            "saq", "saq", f"1 process, concurrency = {concurrency}", saq, group_signal=True, environ=environ
        ),
        "taskiq": PeerSpec(
            "taskiq", "taskiq", f"1 worker process, --max-async-tasks {concurrency}", taskiq, environ=environ
        ),
    }


# --- the floor's worker process --------------------------------------------------------------


async def floor_consumer(url: str, name: str, consumer: str, slots: int) -> None:
    """Pop up to the free slots' worth of messages, run each as a task; exit on a stop message."""
    import redis.asyncio as aredis
    from baseline_queue import STOP
    from fifo_record import nap

    client = aredis.Redis.from_url(url)
    queue = f"{name}:queue"
    await client.rpush(f"{name}:ready", consumer)
    await client.blpop([f"{name}:go"], 0)
    running: set[asyncio.Task[None]] = set()
    while True:
        free = slots - len(running)
        if free <= 0:
            await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            continue
        raws = await client.rpop(queue, free)
        if not raws:
            popped = await client.brpop([queue], 1)  # nothing ready: wait (a second at a time) for one
            if popped is None:
                continue
            raws = [popped[1]]
        stops = 0
        for raw in raws:
            if raw == STOP:
                stops += 1
                continue
            message = json.loads(raw)
            task = asyncio.create_task(nap(*message["args"]))
            running.add(task)
            task.add_done_callback(running.discard)
        if stops:
            if stops > 1:  # another process's stop message: give it back
                await client.rpush(queue, *([STOP] * (stops - 1)))
            await asyncio.gather(*running)
            break
    await client.aclose()


# --- the table -------------------------------------------------------------------------------


def markdown(summary: Summary, systems: Sequence[str], layouts: dict[str, str]) -> str:
    """One row per system (the floor first, then by wall): medians, ratios to the floor in parentheses."""
    labels = {key: unit for key, _, unit, _ in ASYNC_METRICS}
    head = [
        "system (layout)",
        "wall",
        "efficiency",
        "jobs/s",
        "worker CPU/job",
        "enqueue",
        "ran twice (all runs)",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    present = [s for s in systems if s in summary]
    present.sort(key=lambda s: (s != "floor", float(summary[s]["wall_s"]["median"])))  # type: ignore[arg-type]
    for name in present:
        cells = [f"{name} ({layouts[name]})" if name in layouts else name]
        for key, *_ in ASYNC_METRICS:
            entry = summary[name].get(key)
            if entry is None:
                cells.append("-")
                continue
            if key == "twice":  # a doubled job is a fault, not noise: every repetition's count
                cells.append(f"{sum(entry['runs']):,.0f}")  # type: ignore[arg-type]
                continue
            text = fmt(float(entry["median"]), labels[key])  # type: ignore[arg-type]
            if "ratio" in entry and key in ("wall_s", "rate", "worker_cpu_ms") and name != "floor":
                text += f" ({float(entry['ratio']):.2f})"  # type: ignore[arg-type]
            cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def versus(summary: Summary, ours: str, peers: Sequence[str]) -> str:
    """How ``ours`` compares with the best peer by wall: one line."""
    present = [p for p in peers if p in summary]
    if ours not in summary or not present:
        return ""
    best = min(present, key=lambda p: float(summary[p]["wall_s"]["median"]))  # type: ignore[arg-type]
    wall = float(summary[ours]["wall_s"]["median"])  # type: ignore[arg-type]
    other = float(summary[best]["wall_s"]["median"])  # type: ignore[arg-type]
    if wall <= other:
        return f"{ours}: ahead of every peer; {other / wall:.2f}x faster than {best}, the best of them"
    return f"{ours}: behind {best} by {wall / other:.2f}x on wall ({wall:.2f} s vs {other:.2f} s)"


# --- main ------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--systems", default=",".join(SYSTEMS), help=f"comma-separated systems (default: {','.join(SYSTEMS)})"
    )
    parser.add_argument("--jobs", type=int, help="sleeping jobs per system (default 10000; --quick 500)")
    parser.add_argument(
        "--concurrency", type=int, default=500, help="jobs at once, the same for every system (default 500)"
    )
    parser.add_argument("--repeat", type=int, help="repetitions; medians are shown (default 3; --quick 1)")
    parser.add_argument("--redis-url", help="use this Redis instead of starting a throwaway one")
    parser.add_argument("--quick", action="store_true", help="500 jobs, one repetition: correctness only")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    parser.add_argument("--logdir", type=Path, help="keep the workers' and adapters' logs here")
    parser.add_argument("--floor-worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.floor_worker:
        url, name, consumer, slots = args.floor_worker
        asyncio.run(floor_consumer(url, name, consumer, int(slots)))
        return 0
    jobs = args.jobs or (500 if args.quick else 10000)
    repeat = args.repeat or (1 if args.quick else 3)
    concurrency = args.concurrency
    systems = [s for s in args.systems.split(",") if s]
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown:
        parser.error(f"unknown system(s) {', '.join(unknown)}; known: {', '.join(SYSTEMS)}")
    if jobs < 2 or concurrency < 1 or repeat < 1:
        parser.error("--jobs must be at least 2, --concurrency and --repeat at least 1")
    peers = async_peers(concurrency)
    failures: dict[str, str] = {}
    for name in systems:
        if name in peers:
            print(f"venv for {name}: ", end="", file=sys.stderr, flush=True)
            try:
                print(ensure(ENVS[peers[name].env]).path, file=sys.stderr)
            except (RuntimeError, subprocess.CalledProcessError) as exc:
                print("FAILED", file=sys.stderr)
                failures[name] = f"could not make its venv: {exc}"
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in systems}
    notes: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="bench-async-") as tmp:
        fifo = os.path.join(tmp, "runs.fifo")
        tally = Tally(fifo)
        logdir = args.logdir or Path(tmp)
        logdir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, JOBCHAIN_FLOOR_FIFO=fifo, JOBCHAIN_DISABLE_PLUGINS="")
        env["PYTHONPATH"] = os.pathsep.join([str(HERE), *sys.path[1:]])
        os.environ["JOBCHAIN_FLOOR_FIFO"] = fifo
        with redis_server() if args.redis_url is None else nullcontext(args.redis_url) as url:
            admin = redis.Redis.from_url(url)
            for rep in range(repeat):
                live = [s for s in systems if s not in failures]
                for name in live[rep % max(1, len(live)) :] + live[: rep % max(1, len(live))]:
                    t0 = time.monotonic()
                    try:
                        system = make_system(name, url, env, concurrency, peers, fifo, logdir)
                    except Exception as exc:  # a peer's adapter, or a jobchain without async tasks
                        failures[name] = f"{type(exc).__name__}: {exc}".splitlines()[0]
                        print(f"BENCHMARK FAILED: {name}: {failures[name]}", file=sys.stderr)
                        continue
                    try:
                        result, twice = run_naps(system, tally, jobs, concurrency)
                    except BenchError as exc:
                        failures[name] = str(exc)
                        print(f"BENCHMARK FAILED: {exc}", file=sys.stderr)
                        continue
                    finally:
                        system.close()
                        if args.redis_url is None:
                            admin.flushall()  # our own server: the next system starts from an empty one
                    runs[name].append(result)
                    if isinstance(system, PeerSystem) and system.killed:
                        notes[name] = f"workers killed {GRACE:.0f}s after SIGTERM (every job had ended)"
                    if twice:
                        print(f"{name}: ran twice: job(s) {twice[:10]}", file=sys.stderr)
                    print(
                        f"rep {rep + 1}/{repeat} {name} ({time.monotonic() - t0:.0f}s): "
                        + json.dumps(result),
                        file=sys.stderr,
                    )
            admin.close()
    return report(args, runs, failures, notes, peers, jobs=jobs, repeat=repeat, concurrency=concurrency)


def make_system(
    name: str,
    url: str,
    env: dict[str, str],
    concurrency: int,
    peers: dict[str, PeerSpec],
    fifo: str,
    logdir: Path,
) -> AsyncFloor | AsyncJobchain | PeerSystem:
    if name == "floor":
        return AsyncFloor(url, env, concurrency)
    if name in JOBCHAIN:
        system = AsyncJobchain(name, url, env, concurrency)
        system.logdir = logdir
        return system
    return PeerSystem(peers[name], url, fifo, logdir)


def report(
    args: argparse.Namespace,
    runs: dict[str, list[dict[str, float]]],
    failures: dict[str, str],
    notes: dict[str, str],
    peers: dict[str, PeerSpec],
    *,
    jobs: int,
    repeat: int,
    concurrency: int,
) -> int:
    runs = {k: v for k, v in runs.items() if v and k not in failures}
    summary = summarize(runs, metrics=ASYNC_METRICS)
    shown = [s for s in SYSTEMS if s in runs]
    cores = os.cpu_count() or 1
    floor_layout = (
        f"{min(cores, concurrency)} processes, {math.ceil(concurrency / min(cores, concurrency))} each"
    )
    layouts = {"floor": floor_layout}
    layouts.update(dict.fromkeys(JOBCHAIN, f"1 process, --async-concurrency {concurrency}"))
    layouts.update({name: spec.layout for name, spec in peers.items()})
    info = f"{machine()}, Redis {redis_version(args.redis_url)}"
    ideal = ideal_seconds(jobs, concurrency)
    sizes = (
        f"{jobs} jobs x asyncio.sleep({JOB_MS / 1000:g}), {concurrency} at once (ideal {ideal:.2f} s), "
        f"{repeat} repetition(s), medians"
    )
    lines = [versus(summary, ours, PEERS) for ours in JOBCHAIN]
    lines = [line for line in lines if line]
    if args.json:
        data = {
            "machine": info,
            "jobs": jobs,
            "job_ms": JOB_MS,
            "concurrency": concurrency,
            "ideal_s": ideal,
            "repeat": repeat,
            "layouts": {k: v for k, v in layouts.items() if k in shown},
            "summary": summary,
            "versus": lines,
            "failures": failures,
            "notes": notes,
        }
        print(json.dumps(data, indent=2))
    else:
        print(f"{info}; {sizes}")
        print(render(summary, shown, catalog=ASYNC_METRICS))
        print()
        print(markdown(summary, shown, layouts))
        print()
        for line in lines:
            print(line)
        print(
            "enqueue: jobchain submit_many; the floor one pipeline of LPUSH; the peers 50 submits in flight"
        )
        for name, note in notes.items():
            print(f"note: {name}: {note}")
    for name, why in failures.items():
        print(f"BENCHMARK FAILED: {name}: {why}", file=sys.stderr)
    if failures or not runs:
        return 1
    twice = {name: int(sum(summary[name]["twice"]["runs"])) for name in shown}  # type: ignore[arg-type]
    doubled = ", ".join(f"{k} {v}" for k, v in twice.items() if v) or "none"
    print(
        f"verified: every one of the {jobs} jobs ended, for every system and repetition "
        f"(counted once each; jobs run twice, all repetitions: {doubled})",
        file=sys.stdout if not args.json else sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
