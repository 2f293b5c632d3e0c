"""What one job costs Redis and a worker, on one server and on Redis Clusters of 1 and 3 masters.

The figures behind ``docs/scaling.md``. For each Redis deployment (a plain
``redis-server``, a 1-master and a 3-master Cluster, all started on loopback
for the run and stopped by PID) and each layout (``redis-lists``,
``redis-streams``):

* **submit**: N no-op jobs submitted one by one over Q queues (``--queues``,
  named so that the 3-master Cluster holds one per master);
* **drain**: the same N jobs drained by P worker processes (``--processes``)
  of T threads (``--threads``), every worker on every queue, worker defaults
  otherwise (adaptive prefetch, ``poll=1.0``);
* **idle**: fresh workers with nothing to do, for ``--idle`` seconds, once on
  every queue and once on one queue (a Cluster's workers on queues of several
  hash tags wait on one tag at a time, and poll more); the servers' own idle
  CPU, measured with no client, is subtracted;
* **chain**: C chains ``A -> B -> C`` of no-op steps submitted, then drained by
  fresh workers (a warm chain step: the step's settlement and the hand-off of
  the next one).

Measured on the server side, as deltas over each phase summed over the nodes:
``INFO commandstats`` (commands per job, ``EXEC`` per job, the top commands;
``INFO`` itself is left out), ``used_cpu_sys + used_cpu_user`` (Redis CPU
per job), ``used_memory`` after the submits (bytes per queued job) and
``connected_clients`` while the workers run (connections per worker
process). On the client side: the CPU of the worker processes
(``/proc/<pid>/stat``) per job, and **round trips**, counted as the packed
sends of redis-py's connections (a pipeline or transaction is one send, a
blocking read is one).

    python bench/bench_scaling.py [--jobs 4000] [--chains 500] [--idle 5] [--repeat 1] [--json]
    python bench/bench_scaling.py --render saved.json   # the tables of an earlier --json run
    python bench/bench_scaling.py --quick               # tiny sizes: a smoke run of every row

The last lines check the scaling model of ``docs/scaling.md``: Redis CPU per
job fitted as a cost per round trip plus a cost per command on the one-master
runs, predicted for the 3-master Cluster from its counts.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import redis
import redis.connection
from redis.cluster import key_slot

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_cluster import SYSTEMS, ClusterProcess, _balanced_queues, _cpu_seconds, _quiet  # noqa: E402
from redis_server import redis_server  # noqa: E402

from jobchain import App  # noqa: E402
from jobchain.canvas import chain  # noqa: E402

DEPLOYMENTS = ("standalone", "cluster-1", "cluster-3")
#: left out of the command counts: the bench's own probes
PROBES = frozenset({"info"})
STALL = 60.0

_CTX = multiprocessing.get_context("fork")
#: tasks run and packed sends of every counted redis connection, one slot per process (0: this one).
#: No lock is shared between processes: a worker killed while counting must not stall the others.
SLOTS = 64
RUNS = _CTX.Array("q", SLOTS, lock=False)
SENDS = _CTX.Array("q", SLOTS, lock=False)
_counting = threading.Lock()
_slot = 0
_send = redis.connection.AbstractConnection.send_packed_command


def _count(counter: Any) -> None:
    with _counting:
        counter[_slot] += 1


def _counted_send(self: Any, command: Any, check_health: bool = True) -> None:
    if not getattr(self, "uncounted", False):
        _count(SENDS)
    _send(self, command, check_health)


redis.connection.AbstractConnection.send_packed_command = _counted_send  # type: ignore[method-assign]


def _total(counter: Any) -> int:
    return sum(counter)


class _ProbeConnection(redis.connection.Connection):
    """The bench's own INFO connections: not counted as round trips."""

    uncounted = True


def _noop(*args: Any) -> None:
    _count(RUNS)


@dataclass
class Deployment:
    name: str
    hosts: list[tuple[str, int]]  # every master
    url: Callable[[str, str], str]  # (system, prefix) -> backend URL
    owner: Callable[[int], int] | None = None  # a Cluster's: hash slot -> port of its master
    probes: list[redis.Redis] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.probes = [
            redis.Redis(
                connection_pool=redis.ConnectionPool(
                    host=h, port=p, connection_class=_ProbeConnection, decode_responses=True
                )
            )
            for h, p in self.hosts
        ]

    def info(self) -> list[dict[str, Any]]:
        return [
            probe.execute_command("INFO", "commandstats", "cpu", "clients", "memory") for probe in self.probes
        ]

    def clients(self) -> int:
        return sum(int(probe.info("clients")["connected_clients"]) for probe in self.probes)

    def close(self) -> None:
        for probe in self.probes:
            probe.close()


@dataclass
class Snapshot:
    calls: list[Counter[str]]
    cpu: list[float]
    memory: int
    clients: int
    sends: int
    runs: int
    at: float

    @classmethod
    def take(cls, deployment: Deployment) -> Snapshot:
        infos = deployment.info()
        calls = [
            Counter(
                {k[len("cmdstat_") :]: int(v["calls"]) for k, v in info.items() if k.startswith("cmdstat_")}
            )
            for info in infos
        ]
        return cls(
            calls=calls,
            cpu=[float(i["used_cpu_sys"]) + float(i["used_cpu_user"]) for i in infos],
            memory=sum(int(i["used_memory"]) for i in infos),
            clients=sum(int(i["connected_clients"]) for i in infos),
            sends=_total(SENDS),
            runs=_total(RUNS),
            at=time.perf_counter(),
        )


def _calls(a: Snapshot, b: Snapshot) -> Counter[str]:
    """Commands the servers ran between two snapshots, by name (the probes' INFO left out)."""
    calls: Counter[str] = Counter()
    for before, after in zip(a.calls, b.calls, strict=True):
        calls.update(after)
        calls.subtract(before)
    for name in PROBES:
        calls.pop(name, None)
    return +calls


@dataclass
class Phase:
    """What the servers did between two snapshots, divided by ``per`` (jobs, steps, or 1 for idle)."""

    per: int
    seconds: float
    commands: float
    execs: float
    round_trips: float
    redis_us: float
    busiest_shard_share: float  # of the Redis CPU of the phase
    top: list[tuple[str, float]]
    nodes: list[float]  # commands on each master, in the deployment's order

    @classmethod
    def between(cls, a: Snapshot, b: Snapshot, per: int, less: Counter[str] | None = None) -> Phase:
        calls = _calls(a, b)
        if less:
            calls.subtract(less)
        cpu = [y - x for x, y in zip(a.cpu, b.cpu, strict=True)]
        nodes = []
        for before, after in zip(a.calls, b.calls, strict=True):
            moved = after.copy()
            moved.subtract(before)
            nodes.append((sum(moved.values()) - moved["info"]) / per)
        return cls(
            per=per,
            seconds=b.at - a.at,
            commands=sum(calls.values()) / per,
            execs=calls["exec"] / per,
            round_trips=(b.sends - a.sends) / per,
            redis_us=sum(cpu) * 1e6 / per,
            busiest_shard_share=max(cpu) / sum(cpu) if sum(cpu) > 0 else 0.0,
            top=[(name, n / per) for name, n in calls.most_common(5) if n > 0],
            nodes=nodes,
        )

    def per_second(self) -> Phase:
        """The phase's figures per second of it (an idle phase)."""
        rate = self.per / self.seconds
        return replace(
            self,
            commands=self.commands * rate,
            execs=self.execs * rate,
            round_trips=self.round_trips * rate,
            redis_us=self.redis_us * rate,
            top=[(name, n * rate) for name, n in self.top],
            nodes=[n * rate for n in self.nodes],
        )


@dataclass
class Result:
    deployment: str
    system: str
    shards: int
    submit: Phase
    drain: Phase
    idle: Phase  # per second, all worker processes together, each on every queue
    idle_one_queue: Phase  # per second, all worker processes together, each on one queue
    chain_submit: Phase
    chain_step: Phase
    drain_jobs_per_s: float
    worker_us_per_job: float
    worker_us_per_step: float
    bytes_per_queued_job: float
    connections_per_process: float
    idle_worker_cpu_share: float  # of one core, per worker process on every queue
    app_node: int | None  # the master holding the application's tag {prefix} (a Cluster's)
    redis_idle_us: float  # Redis CPU per second of all the masters with no client doing anything


@contextmanager
def _workers(url: str, queues: list[str], processes: int, threads: int, warmup: float) -> Iterator[Any]:
    """P forked worker processes, started (and their CPU read) when the yielded ``go`` is called."""
    start, stop = _CTX.Event(), _CTX.Event()
    procs = [
        _CTX.Process(target=_worker_main, args=(slot, url, queues, threads, start, stop), daemon=True)
        for slot in range(1, processes + 1)
    ]
    for proc in procs:
        proc.start()
    time.sleep(warmup)  # imports done, nothing connected yet: the workers wait for ``start``

    def cpu() -> float:
        return sum(_cpu_seconds(p.pid) for p in procs if p.pid is not None)

    try:
        yield start, cpu
    finally:
        stop.set()
        for proc in procs:
            proc.join(30)
            if proc.is_alive():
                print(f"a worker process did not stop within 30 s: killed (PID {proc.pid})", file=sys.stderr)
                proc.kill()


def _worker_main(slot: int, url: str, queues: list[str], threads: int, start: Any, stop: Any) -> None:
    global _counting, _slot
    _counting, _slot = threading.Lock(), slot
    _quiet()
    app = _app(url, queues)
    start.wait()
    worker = app.worker(concurrency=threads, queues=queues)
    worker.start()
    stop.wait()
    worker.stop(timeout=10)
    app.close()


def _app(url: str, queues: Sequence[str]) -> App:
    app = App(backend=url)
    for queue in queues:
        for step in ("a", "b", "c"):
            app.task(name=f"{step}-{queue}", queue=queue)(_noop)
    return app


def _until(check: Callable[[], bool], what: str, tick: Callable[[], None] = lambda: None) -> None:
    deadline = time.monotonic() + STALL
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"BENCHMARK FAILED: stalled waiting for {what}")
        tick()
        time.sleep(0.005)


def _settled(app: App) -> bool:
    return sum(s.ready + s.in_flight + s.delayed for s in app.backend.stats()) == 0


def _drain(
    deployment: Deployment, app: App, url: str, queues: list[str], count: int, args: argparse.Namespace
) -> tuple[Phase, float, float]:
    """Run ``count`` queued tasks with fresh workers: (drain phase, worker CPU seconds, connections per
    worker process at their peak)."""
    probe = Snapshot.take(deployment)
    app.backend.stats()
    one_stats = _calls(probe, Snapshot.take(deployment))  # subtracted once per poll of the drain's end
    baseline_clients = deployment.clients()
    with _workers(url, queues, args.processes, args.threads, args.warmup) as (start, cpu):
        first_runs = _total(RUNS)
        peak = [0]

        def sample() -> None:
            peak[0] = max(peak[0], deployment.clients())

        cpu0, a = cpu(), Snapshot.take(deployment)
        start.set()
        _until(lambda: _total(RUNS) - first_runs >= count, f"{count} runs", sample)
        polls = 0
        while True:
            polls += 1
            if _settled(app):
                break
            time.sleep(0.005)
        b, cpu1 = Snapshot.take(deployment), cpu()
        sample()
    if _total(RUNS) - first_runs != count:
        raise SystemExit(f"BENCHMARK FAILED: {_total(RUNS) - first_runs} runs for {count} jobs")
    less = Counter({k: v * polls for k, v in one_stats.items()})
    connections = (peak[0] - baseline_clients) / args.processes
    return Phase.between(a, b, count, less), cpu1 - cpu0, connections


def _idle(
    deployment: Deployment, url: str, queues: list[str], args: argparse.Namespace
) -> tuple[Phase, float]:
    """Workers with nothing to do: (commands and Redis CPU per second, worker CPU share per process)."""
    with _workers(url, queues, args.processes, args.threads, args.warmup) as (start, cpu):
        start.set()
        time.sleep(args.warmup)  # started, registered, blocked in their first wait
        a, cpu0 = Snapshot.take(deployment), cpu()
        time.sleep(args.idle)
        b, cpu1 = Snapshot.take(deployment), cpu()
    idle = Phase.between(a, b, 1)
    return idle.per_second(), (cpu1 - cpu0) / idle.seconds / args.processes


def _measure(
    deployment: Deployment, system: str, queues: list[str], prefix: str, args: argparse.Namespace
) -> Result:
    url = deployment.url(system, prefix)
    a = Snapshot.take(deployment)
    time.sleep(args.idle)  # the servers' own background work: subtracted from the idle workers' figures
    quiet = Phase.between(a, Snapshot.take(deployment), 1).per_second()
    app = _app(url, queues)
    try:
        tasks = [app.tasks[f"a-{q}"] for q in queues]
        app.backend.stats()  # connected before the clock starts
        a = Snapshot.take(deployment)
        for i in range(args.jobs):
            tasks[i % len(tasks)].submit()
        b = Snapshot.take(deployment)
        submit = Phase.between(a, b, args.jobs)
        queued_bytes = (b.memory - a.memory) / args.jobs
        drain, worker_cpu, connections = _drain(deployment, app, url, queues, args.jobs, args)
        idle, idle_cpu = _idle(deployment, url, queues, args)
        idle_one, _ = _idle(deployment, url, queues[:1], args)
        chains = [chain(*(app.tasks[f"{s}-{q}"] for s in "abc")) for q in queues]
        c = Snapshot.take(deployment)
        for i in range(args.chains):
            chains[i % len(chains)].submit()
        d = Snapshot.take(deployment)
        chain_submit = Phase.between(c, d, args.chains)
        steps = 3 * args.chains
        chain_step, step_cpu, _ = _drain(deployment, app, url, queues, steps, args)
        if app.backend.failed(limit=1):
            raise SystemExit(f"BENCHMARK FAILED: a job failed on {system} / {deployment.name}")
        return Result(
            deployment=deployment.name,
            system=system,
            shards=len(deployment.hosts),
            submit=submit,
            drain=drain,
            idle=idle,
            idle_one_queue=idle_one,
            chain_submit=chain_submit,
            chain_step=chain_step,
            drain_jobs_per_s=args.jobs / drain.seconds,
            worker_us_per_job=worker_cpu * 1e6 / args.jobs,
            worker_us_per_step=step_cpu * 1e6 / steps,
            bytes_per_queued_job=queued_bytes,
            connections_per_process=connections,
            idle_worker_cpu_share=idle_cpu,
            redis_idle_us=quiet.redis_us,
            app_node=(
                [p for _, p in deployment.hosts].index(deployment.owner(key_slot(prefix.encode())))
                if deployment.owner
                else None
            ),
        )
    finally:
        app.backend.delete_everything()  # type: ignore[attr-defined]
        app.close()


def _deployments(stack: ExitStack, tmp: Path) -> dict[str, Deployment]:
    """A plain server and Clusters of 1 and 3 masters, stopped (by PID) when ``stack`` closes."""
    url = stack.enter_context(redis_server())
    host, port = url.split("//")[1].split("/")[0].split(":")
    found = {
        "standalone": Deployment(
            "standalone",
            [(host, int(port))],
            lambda system, prefix: f"{system}://{host}:{port}/0?prefix={prefix}",
        )
    }
    with ThreadPoolExecutor(2) as pool:  # each start waits 2 s for its masters to accept writes
        starting = {n: pool.submit(ClusterProcess.start, tmp / f"c{n}", masters=n) for n in (1, 3)}
    for future in starting.values():
        if future.exception() is None:
            stack.callback(future.result().stop)
    for n, future in starting.items():
        cluster = future.result()  # the first that did not start (after every started one is stopped)
        found[f"cluster-{n}"] = Deployment(
            f"cluster-{n}",
            [("127.0.0.1", p) for p in cluster.ports],
            lambda system, prefix, hosts=cluster.hosts: f"{system}+cluster://{hosts}/0?prefix={prefix}",
            owner=cluster.owner,
        )
    for deployment in found.values():
        stack.callback(deployment.close)
    return found


def _median(results: list[Result]) -> dict[str, Any]:
    """The median of every number of the runs of one deployment and system (top commands of the first)."""
    rows = [asdict(r) for r in results]

    def med(values: list[Any]) -> Any:
        if isinstance(values[0], dict):
            return {k: med([v[k] for v in values]) for k in values[0]}
        if isinstance(values[0], int | float) and not isinstance(values[0], bool):
            return statistics.median(values)
        return values[0]

    row: dict[str, Any] = med(rows)
    row["app_node"] = rows[0]["app_node"]  # the first run's, like its per-master lists (prefixes differ)
    return row


def _top(top: list[Any]) -> str:
    return ", ".join(f"{name.upper()} {n:.2f}" for name, n in top)


def report(rows: list[dict[str, Any]], args: argparse.Namespace, machine: str) -> None:
    print(
        f"# Per-job cost on Redis: {args.jobs} no-op jobs and {args.chains} chains A->B->C over "
        f"{args.queues} queues, {args.processes} worker processes x {args.threads} threads, "
        f"median of {args.repeat} ({machine})\n"
    )
    print(
        "| deployment | system | submit cmds | submit EXEC | submit round trips | submit Redis us "
        "| drained cmds | drained EXEC | drained round trips | drained Redis us | worker us/job "
        "| chain step cmds | step round trips | step Redis us | worker us/step | bytes/queued job |"
    )
    print("|---" * 16 + "|")
    for r in rows:
        s, d, c = r["submit"], r["drain"], r["chain_step"]
        print(
            f"| {r['deployment']} | {r['system']} | {s['commands']:.2f} | {s['execs']:.2f} "
            f"| {s['round_trips']:.2f} | {s['redis_us']:.1f} | {d['commands']:.2f} | {d['execs']:.2f} "
            f"| {d['round_trips']:.2f} | {d['redis_us']:.1f} | {r['worker_us_per_job']:.0f} "
            f"| {c['commands']:.2f} | {c['round_trips']:.2f} | {c['redis_us']:.1f} "
            f"| {r['worker_us_per_step']:.0f} | {r['bytes_per_queued_job']:.0f} |"
        )
    print(
        "\n| deployment | system | drain jobs/s | busiest master share | connections/process "
        "| idle cmds/s/process | idle round trips/s/process | idle Redis us/s/process | idle worker CPU "
        "| idle cmds/s/process, 1 queue | idle Redis us/s/process, 1 queue |"
    )
    print("|---" * 11 + "|")  # idle Redis CPU: less the servers' own with no client (redis_idle_us)
    for r in rows:
        i, one, p, base = r["idle"], r["idle_one_queue"], args.processes, r["redis_idle_us"]
        print(
            f"| {r['deployment']} | {r['system']} | {r['drain_jobs_per_s']:,.0f} "
            f"| {r['drain']['busiest_shard_share']:.0%} | {r['connections_per_process']:.1f} "
            f"| {i['commands'] / p:.1f} | {i['round_trips'] / p:.1f} | {(i['redis_us'] - base) / p:.0f} "
            f"| {r['idle_worker_cpu_share']:.2%} | {one['commands'] / p:.1f} "
            f"| {(one['redis_us'] - base) / p:.0f} |"
        )
    print("\ncommands per master (drained job | idle per second, all processes; * holds the {prefix} tag):")
    for r in rows:
        if r["app_node"] is not None and r["shards"] > 1:

            def masters(values: list[float], r: dict[str, Any] = r) -> str:
                return " ".join(f"{v:.2f}{'*' if n == r['app_node'] else ''}" for n, v in enumerate(values))

            print(
                f"  {r['deployment']} {r['system']}: {masters(r['drain']['nodes'])} "
                f"| {masters(r['idle']['nodes'])}"
            )
    print("\ntop commands per job (submit | drained | chain step | idle per second, all processes):")
    for r in rows:
        print(
            f"  {r['deployment']} {r['system']}: {_top(r['submit']['top'])} | {_top(r['drain']['top'])} "
            f"| {_top(r['chain_step']['top'])} | {_top(r['idle']['top'])}"
        )
    print("\nmodel inputs (jobs/s at 100% of one core):")
    for r in rows:
        redis_us = r["submit"]["redis_us"] + r["drain"]["redis_us"]
        print(
            f"  {r['deployment']} {r['system']}: one Redis core, submit+drain "
            f"{1e6 / redis_us if redis_us else float('inf'):,.0f}/s; one worker core "
            f"{1e6 / r['worker_us_per_job'] if r['worker_us_per_job'] else float('inf'):,.0f}/s"
        )


PHASES = ("submit", "drain", "chain_step")


def fit(rows: list[dict[str, Any]]) -> tuple[float, float]:
    """Least squares of Redis us = a * round trips + b * commands over the phases of ``rows``: (a, b)."""
    points = [(r[p]["round_trips"], r[p]["commands"], r[p]["redis_us"]) for r in rows for p in PHASES]
    sxx = sum(x * x for x, _, _ in points)
    sxy = sum(x * y for x, y, _ in points)
    syy = sum(y * y for _, y, _ in points)
    sxz = sum(x * z for x, _, z in points)
    syz = sum(y * z for _, y, z in points)
    det = sxx * syy - sxy * sxy
    return (sxz * syy - syz * sxy) / det, (syz * sxx - sxz * sxy) / det


def model_check(rows: list[dict[str, Any]]) -> None:
    """Redis CPU per job on 3 masters predicted from the one-master runs and the 3-master counts."""
    print("\nmodel check: Redis us = a x round trips + b x commands, fitted on standalone and cluster-1")
    for system in SYSTEMS:
        ones = [r for r in rows if r["system"] == system and r["shards"] == 1]
        three = next(r for r in rows if r["system"] == system and r["deployment"] == "cluster-3")
        a, b = fit(ones)
        cells = []
        for phase in PHASES:
            m = three[phase]
            cells.append(f"{phase} {a * m['round_trips'] + b * m['commands']:.0f} vs {m['redis_us']:.0f}")
        nodes = three["drain"]["nodes"]
        share = max(nodes) / sum(nodes) if sum(nodes) else 0.0
        print(
            f"  {system}: a = {a:.1f} us, b = {b:.1f} us; cluster-3 predicted vs measured us/job: "
            f"{', '.join(cells)}; busiest master's share of a drained job's commands {share:.0%} "
            f"(of its Redis CPU: {three['drain']['busiest_shard_share']:.0%})"
        )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=4000)
    parser.add_argument("--chains", type=int, default=500)
    parser.add_argument("--queues", type=int, default=3)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--idle", type=float, default=5.0, help="seconds of idle workers measured")
    parser.add_argument(
        "--warmup",
        type=float,
        default=1.0,
        help="seconds for forked workers to start, and drained workers to go idle",
    )
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--render", metavar="JSON", help="print the tables of an earlier --json output")
    args = parser.parse_args(argv)
    if args.processes >= SLOTS:
        parser.error(f"--processes must be below {SLOTS}")
    if args.render:
        saved = json.loads(Path(args.render).read_text())
        report(saved["medians"], argparse.Namespace(**saved["args"]), saved["machine"])
        model_check(saved["medians"])
        return
    if args.quick:
        args.jobs, args.chains, args.idle, args.warmup, args.repeat = 60, 10, 0.4, 0.25, 1
    _quiet()
    results: list[Result] = []
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        deployments = _deployments(stack, Path(tmp))
        owner = deployments["cluster-3"].owner
        assert owner is not None
        for rep in range(args.repeat):
            for system in SYSTEMS:
                prefix = f"s{uuid.uuid4().hex[:8]}"
                queues = _balanced_queues(args.queues, owner, prefix)
                order = DEPLOYMENTS if rep % 2 == 0 else DEPLOYMENTS[::-1]
                for name in order:
                    results.append(_measure(deployments[name], system, queues, prefix, args))
    rows = [
        _median([r for r in results if r.deployment == name and r.system == system])
        for name in DEPLOYMENTS
        for system in SYSTEMS
    ]
    machine = f"{platform.node()} {os.cpu_count()} cores, Python {platform.python_version()}"
    if args.json:
        print(json.dumps({"machine": machine, "args": vars(args), "medians": rows}, indent=2))
        return
    report(rows, args, machine)
    model_check(rows)


if __name__ == "__main__":
    main()
