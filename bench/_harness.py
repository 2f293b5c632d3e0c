"""What ``bench_floor.py`` and ``bench_peers.py`` share: the FIFO tally, worker-tree CPU, one run, the table.

A system under test (:class:`System`) is a queue with its workers: the floor,
jobchain, or a peer driven through its adapter. :func:`run_once` puts it
through the workloads in order, counting every execution through the FIFO
that its tasks write to (:mod:`fifo_record`), outside the system:

1. **enqueue 1-by-1** of N no-op jobs (workers stopped), then, if asked,
   **bulk enqueue** of B more through the system's bulk API;
2. **drain**: the workers start and run all N + B jobs; the steady rate and
   the **worker CPU/job** are taken between the 10% and the 90% mark;
3. **warm chains** A->B->C, one at a time: p50 and p95 from just before the
   submit to the last step's record;
4. **sleeping jobs** (10-60 ms each, all submitted at once): efficiency is
   the ideal time (sum of sleeps / concurrency) over the actual time from
   the first submit to the last record;
5. **cold chains**: each submitted after ``idle`` seconds with nothing to
   do (the workers have gone back to waiting): p50.

A job that never runs (no record for ``STALL`` seconds) or runs twice fails
the run with :class:`BenchError`.
"""

from __future__ import annotations

import collections
import contextlib
import os
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Protocol

from fifo_record import KINDS, RECORD

STALL = 30.0
CONCURRENCY = 8  # the 8-way concurrency every system runs with
CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(RuntimeError):
    """A job lost or run twice, or a worker failed."""


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

    def reset(self, marks: Sequence[tuple[str, int]] = ()) -> None:
        """Forget every count; called before a system's workers start, so no record is lost.

        A mark ``(kind, count)`` notes the time and the worker-tree CPU when ``count`` distinct
        ids of ``kind`` have been recorded (in :attr:`at`, under the mark).
        """
        with self.cond:
            self.seen: dict[str, collections.Counter[int]] = {k: collections.Counter() for k in KINDS}
            self.total = 0
            self.last = time.monotonic()
            self.last_of: dict[str, float] = {}  # kind -> when its latest record was read
            self.chain_done: dict[int, float] = {}
            self.marks = set(marks)
            self.mark_kinds = {kind for kind, _ in self.marks}
            self.roots: list[int] = []
            self.at: dict[tuple[str, int], tuple[float, float]] = {}  # mark -> (monotonic, worker-tree CPU)
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
                    if kind not in self.seen:
                        raise BenchError(f"a record of unknown kind {kind!r}")
                    self.seen[kind][num] += 1
                    self.total += 1
                    self.last_of[kind] = now
                    if kind == "c":
                        self.chain_done.setdefault(num, now)
                    if kind in self.mark_kinds:
                        mark = (kind, len(self.seen[kind]))
                        if mark in self.marks and mark not in self.at:
                            if not self.roots:
                                raise BenchError(f"{mark[1]} {kind!r} records before the workers' pids")
                            self.at[mark] = (now, tree_cpu(self.roots))
                self.last = now
                self.cond.notify_all()

    def wait(self, predicate: Callable[[], bool], what: str) -> None:
        """Wait until ``predicate()`` holds; fail if no record arrived for STALL seconds."""
        with self.cond:
            while not predicate():
                if self.error:
                    raise BenchError(self.error)
                if time.monotonic() - self.last > STALL:
                    raise BenchError(f"{what}: nothing ran for {STALL:.0f}s; {self.missing()}")
                self.cond.wait(0.5)

    def quiet(self, seconds: float) -> None:
        """Sleep ``seconds`` without a stall failing (the idle time before a cold chain)."""
        time.sleep(seconds)
        with self.cond:
            self.last = time.monotonic()

    def flush(self) -> None:
        """Wait until everything written before now has been read (the workers have exited)."""
        with self.cond:
            self.sync = False
        os.write(self._keep, b"s%014d\n" % 0)
        self.wait(lambda: self.sync, "flush")

    def missing(self) -> str:
        counts = ", ".join(f"{k}={len(v)}" for k, v in self.seen.items() if v)
        return f"{self.total} records so far ({counts or 'none'})"

    def census(self, kind: str, expected: int) -> tuple[list[int], list[int], list[int]]:
        """Of ids ``0 .. expected-1`` of ``kind``: those never recorded, those recorded more than
        once, and the recorded ids outside the range."""
        seen = self.seen[kind]
        lost = sorted(set(range(expected)) - set(seen))
        twice = sorted(i for i, n in seen.items() if n > 1)
        extra = sorted(i for i in seen if not 0 <= i < expected)
        return lost, twice, extra

    def verify(self, system: str, jobs: int, chains: int, sleeps: int = 0) -> None:
        """Every no-op job, chain step and sleeping job ran exactly once, nothing else ran."""
        problems = []
        expect = (("n", jobs), ("a", chains), ("b", chains), ("c", chains), ("z", sleeps))
        for kind, expected in expect:
            lost, twice, extra = self.census(kind, expected)
            name = {"n": "no-op job", "z": "sleeping job"}.get(kind) or f"chain step {'abc'.index(kind) + 1}"
            if lost:
                problems.append(f"{len(lost)} {name}(s) never ran (first: {lost[:5]})")
            if twice:
                problems.append(f"{len(twice)} {name}(s) ran more than once (first: {twice[:5]})")
            if extra:
                problems.append(f"{len(extra)} unexpected {name}(s) ran (first: {extra[:5]})")
        if problems:
            raise BenchError(f"{system}: " + "; ".join(problems))


# --- systems ---------------------------------------------------------------------------------


class System(Protocol):
    """What run_once drives: a queue with its workers."""

    name: str

    def enqueue_range(self, start: int, count: int) -> float:
        """Submit no-op jobs ``start .. start+count-1`` one call each; return the seconds it took."""
        ...

    def bulk_range(self, start: int, count: int) -> float:
        """Submit no-op jobs ``start .. start+count-1`` through the bulk API; return the seconds."""
        ...

    def submit_chain(self, i: int) -> None: ...
    def submit_sleeps(self, start: int, ms: Sequence[int]) -> None:
        """Submit sleeping jobs ``start + k``, each sleeping ``ms[k]`` milliseconds."""
        ...

    def start(self) -> list[int]:
        """Start the workers (ready to take jobs, or already taking them); return their root pids."""
        ...

    def go(self) -> None: ...
    def stop(self) -> None: ...


class LocalSystem:
    """A system submitted to from this process: one ``enqueue(i)`` call per job, timed here."""

    name = "local"

    def enqueue(self, i: int) -> None:
        raise NotImplementedError

    def enqueue_range(self, start: int, count: int) -> float:
        enqueue = self.enqueue
        t0 = time.perf_counter()
        for i in range(start, start + count):
            enqueue(i)
        return time.perf_counter() - t0

    def bulk_range(self, start: int, count: int) -> float:
        return self.enqueue_range(start, count)

    def submit_sleeps(self, start: int, ms: Sequence[int]) -> None:
        raise NotImplementedError


def sleep_plan(count: int, seed: int = 15) -> list[int]:
    """``count`` sleeps of 10-60 ms, the same for every system and repetition."""
    import random

    rng = random.Random(seed)
    return [rng.randint(10, 60) for _ in range(count)]


def run_once(
    system: System,
    tally: Tally,
    jobs: int,
    chains: int,
    *,
    bulk: int = 0,
    cold: int = 0,
    sleeps: Sequence[int] = (),
    idle: float = 1.5,
) -> dict[str, float]:
    """One repetition of every workload on ``system``; the figures by metric key (see METRICS)."""
    tally.reset()
    enqueue = jobs / max(system.enqueue_range(0, jobs), 1e-9)
    result = {"enqueue": enqueue}
    if bulk:
        result["bulk"] = bulk / max(system.bulk_range(jobs, bulk), 1e-9)
    total = jobs + bulk
    lo, hi = max(1, total // 10), max(2, total - total // 10)
    # counts are cleared before the workers start: a record they write before start() returns
    # is counted (clearing after start lost the first jobs of a fast floor and stalled the drain)
    tally.reset(marks=(("n", lo), ("n", hi)))
    try:
        tally.track(system.start())
        system.go()
        tally.wait(lambda: len(tally.seen["n"]) >= total, f"{system.name} drain")
        (t_lo, cpu_lo), (t_hi, cpu_hi) = tally.at["n", lo], tally.at["n", hi]
        result["drain"] = (hi - lo) / max(t_hi - t_lo, 1e-9)
        result["worker_cpu_ms"] = (cpu_hi - cpu_lo) / (hi - lo) * 1e3
        latencies = []
        for i in range(chains):
            start = time.monotonic()
            system.submit_chain(i)
            tally.wait(partial(tally.chain_done.__contains__, i), f"{system.name} chain {i}")
            latencies.append(tally.chain_done[i] - start)
        latencies.sort()
        result["chain_p50_ms"] = statistics.median(latencies) * 1e3
        result["chain_p95_ms"] = latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))] * 1e3
        if sleeps:
            start = time.monotonic()
            system.submit_sleeps(0, sleeps)
            tally.wait(lambda: len(tally.seen["z"]) >= len(sleeps), f"{system.name} sleeps")
            ideal = sum(sleeps) / 1000 / CONCURRENCY
            result["sleep_eff"] = 100 * ideal / (tally.last_of["z"] - start)
        colds = []
        for i in range(chains, chains + cold):
            tally.quiet(idle)
            start = time.monotonic()
            system.submit_chain(i)
            tally.wait(partial(tally.chain_done.__contains__, i), f"{system.name} cold chain {i}")
            colds.append(tally.chain_done[i] - start)
        if colds:
            result["cold_p50_ms"] = statistics.median(colds) * 1e3
    except BaseException:
        with contextlib.suppress(Exception):
            system.stop()
        raise
    system.stop()
    tally.flush()
    tally.verify(system.name, total, chains + cold, len(sleeps))
    return result


# --- table -----------------------------------------------------------------------------------

METRICS = (  # key, label, unit, higher is better
    ("enqueue", "enqueue 1-by-1", "jobs/s", True),
    ("bulk", "bulk enqueue", "jobs/s", True),
    ("drain", "drain no-op (steady)", "jobs/s", True),
    ("worker_cpu_ms", "worker CPU/job", "ms", False),
    ("chain_p50_ms", "warm chain p50", "ms", False),
    ("chain_p95_ms", "warm chain p95", "ms", False),
    ("cold_p50_ms", "cold chain p50", "ms", False),
    ("sleep_eff", "sleeps 10-60 ms", "%", True),
)

Metric = tuple[str, str, str, bool]
Summary = dict[str, dict[str, dict[str, float | list[float]]]]


def summarize(
    runs: dict[str, list[dict[str, float]]], floor: str = "floor", metrics: Sequence[Metric] = METRICS
) -> Summary:
    """Per system and metric: the median of the repetitions, every run, and the ratio to the floor."""
    out: Summary = {}
    for name, reps in runs.items():
        out[name] = {}
        for key, *_ in metrics:
            values = [r[key] for r in reps if key in r]
            if values:
                out[name][key] = {"median": statistics.median(values), "runs": values}
    base = out.get(floor, {})
    for entries in out.values():
        for key, entry in entries.items():
            # a floor figure of 0 (a CPU time below the clock's tick in a tiny --quick run) has no ratio
            if key in base and float(base[key]["median"]) != 0:  # type: ignore[arg-type]
                entry["ratio"] = float(entry["median"]) / float(base[key]["median"])  # type: ignore[arg-type]
    return out


def fmt(value: float, unit: str) -> str:
    if unit == "jobs/s":
        return f"{value:,.0f} {unit}"
    if unit == "%":
        return f"{value:.1f}%"
    if unit == "jobs":
        return f"{value:,.0f}"
    return f"{value:,.2f} {unit}"


def render(
    summary: Summary,
    systems: Sequence[str],
    metrics: Sequence[str] | None = None,
    catalog: Sequence[Metric] = METRICS,
) -> str:
    """One row per workload (of ``catalog``, or only ``metrics``) and system: the median, its ratio to
    the floor."""
    rows = [["workload", "system", "median", "vs floor"]]
    for key, label, unit, _ in catalog:
        if metrics is not None and key not in metrics:
            continue
        for name in systems:
            entry = summary.get(name, {}).get(key)
            if entry is None:
                continue
            ratio = f"{entry['ratio']:.2f}x" if "ratio" in entry else "-"
            rows.append([label, name, fmt(float(entry["median"]), unit), ratio])  # type: ignore[arg-type]
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
