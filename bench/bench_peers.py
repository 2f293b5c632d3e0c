"""jobchain against its Python peers and the all-cores floor, one Redis server, one invocation (issue 15).

Systems (the order rotates between repetitions):

* ``floor`` - the bare reliable list queue in 8 worker processes (see
  ``bench_floor.py``);
* ``redis-lists``, ``redis-streams`` - ``jobchain worker --processes 2
  --concurrency 4``;
* the peers - huey, Dramatiq, RQ, taskiq, arq, SAQ and Celery, each in a
  virtualenv of its own that this benchmark makes (``peer_envs.py``: pinned
  versions, hiredis everywhere), each in its documented layout for 8-way
  concurrency on 2 cores (the adapters' docstrings in ``bench/peers/`` say
  which and why). A peer is driven through its adapter
  (``bench/peers/<peer>_app.py``), a line protocol over a pipe run by the
  peer's own Python; its workers are the peer's own CLI.

Workloads (see ``_harness.run_once``): enqueue 1-by-1, bulk enqueue (jobchain
``submit_many``; the floor one pipeline of ``LPUSH``; a peer's bulk API where
it has one), drain of all those no-op jobs (steady rate between the 10% and
90% marks) with the worker CPU per job, warm A->B->C chains p50/p95, 1,000
jobs sleeping 10-60 ms on 8-way concurrency (efficiency = ideal / actual),
cold chains (each after 1.5 s idle) p50. Every execution is counted through a
FIFO outside every system; a lost or doubled job fails the run.

``python bench/bench_peers.py [--peers huey,rq] [--repeat 3] [--plot docs/img/peers.png]``;
``--quick`` is a tiny correctness run, ``--json`` prints the results as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import redis

HERE = Path(__file__).resolve().parent
PEERS_DIR = HERE / "peers"
sys.path.insert(0, str(HERE))

from _harness import (  # noqa: E402
    METRICS,
    BenchError,
    Summary,
    Tally,
    fmt,
    render,
    run_once,
    sleep_plan,
    summarize,
)
from bench_floor import Floor, Jobchain, machine  # noqa: E402
from peer_envs import ENVS, PeerEnv, ensure  # noqa: E402
from redis_server import redis_server  # noqa: E402

JOBCHAIN = ("floor", "redis-lists", "redis-streams")
GRACE = 20.0  # seconds a peer's workers get to exit after SIGTERM, once every job has run


@dataclass(frozen=True)
class PeerSpec:
    """One peer: its venv, its adapter, and the command lines of its worker processes."""

    name: str
    env: str  # key of peer_envs.ENVS
    layout: str  # for the table's notes
    workers: Callable[[PeerEnv, str, str], list[list[str]]]  # (env, redis url, queue) -> argv per root
    #: SIGTERM the root's whole process group (SAQ's main process waits for its extra worker
    #: processes to exit but does not pass the signal on: a Ctrl-C in a terminal reaches them all)
    group_signal: bool = False
    #: settings for the adapter and the workers, e.g. ``(("BENCH_CONCURRENCY", "500"),)``
    environ: tuple[tuple[str, str], ...] = ()

    @property
    def adapter(self) -> Path:
        return PEERS_DIR / f"{self.env}_app.py"


def _rq_workers(env: PeerEnv, url: str, queue: str) -> list[list[str]]:
    argv = [str(env.bin("rq")), "worker", "-u", url, "-w", "rq.worker.SimpleWorker", "-q", queue]
    return [[*argv, "-n", f"{queue}-{n}"] for n in range(8)]


PEERS: dict[str, PeerSpec] = {
    spec.name: spec
    for spec in (
        PeerSpec(
            "huey",
            "huey",
            "8 process workers",
            lambda env, url, q: [
                [str(env.bin("huey_consumer")), "huey_app.huey", "-w8", "-kprocess", "-n", "-q"]
            ],
        ),
        PeerSpec(
            "dramatiq",
            "dramatiq",
            "2 processes x 4 threads",
            lambda env, url, q: [[str(env.bin("dramatiq")), "dramatiq_app", "-p", "2", "-t", "4"]],
        ),
        PeerSpec("rq", "rq", "8 SimpleWorker processes", _rq_workers),
        PeerSpec(
            "taskiq",
            "taskiq",
            "2 processes x 4 async tasks (streams broker)",
            lambda env, url, q: [
                [
                    str(env.bin("taskiq")),
                    "worker",
                    "taskiq_app:broker",
                    "-w",
                    "2",
                    "--max-async-tasks",
                    "4",
                    "--log-level",
                    "WARNING",
                ]
            ],
        ),
        PeerSpec(
            "arq",
            "arq",
            "2 processes x max_jobs 4",
            lambda env, url, q: [[str(env.bin("arq")), "arq_app.WorkerSettings"] for _ in range(2)],
        ),
        PeerSpec(
            "saq",
            "saq",
            "2 processes x concurrency 4",
            lambda env, url, q: [[str(env.bin("saq")), "saq_app.settings", "--workers", "2", "-q"]],
            group_signal=True,
        ),
        PeerSpec(
            "celery",
            "celery",
            "prefork pool of 8",
            lambda env, url, q: [
                [
                    str(env.bin("celery")),
                    "-A",
                    "celery_app",
                    "worker",
                    "-P",
                    "prefork",
                    "-c",
                    "8",
                    "-Q",
                    q,
                    "--without-gossip",
                    "--without-mingle",
                    "--without-heartbeat",
                    "-l",
                    "WARNING",
                ]
            ],
        ),
    )
}


class PeerSystem:
    """A peer: its adapter process submits, its own CLI's worker processes run the jobs."""

    def __init__(self, spec: PeerSpec, redis_url: str, fifo: str, logdir: Path) -> None:
        self.name = spec.name
        self.spec = spec
        self.venv = ENVS[spec.env]
        self.redis_url = redis_url
        self.queue = f"bench-{spec.name}-{secrets.token_hex(4)}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
        self.env.update(
            BENCH_REDIS_URL=redis_url,
            BENCH_QUEUE=self.queue,
            JOBCHAIN_FLOOR_FIFO=fifo,
            PYTHONPATH=os.pathsep.join([str(PEERS_DIR), str(HERE)]),
            PYTHONDONTWRITEBYTECODE="1",
        )
        self.env.update(spec.environ)
        self.log = open(logdir / f"{spec.name}.log", "ab")  # noqa: SIM115
        self.procs: list[subprocess.Popen[bytes]] = []
        self.killed = False  # a worker did not exit within GRACE of its SIGTERM
        self.client = subprocess.Popen(
            [str(self.venv.python), str(spec.adapter)],
            cwd=PEERS_DIR,
            env=self.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            bufsize=1,
        )
        ready = self._read()
        if not ready.startswith("ready "):
            raise BenchError(f"{self.name}: the adapter did not start: {ready!r}; {self.tail()}")
        self.bulk_mode = ready[len("ready ") :]

    def tail(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")[-1500:]

    def _read(self) -> str:
        assert self.client.stdout is not None
        return self.client.stdout.readline().strip()

    def ask(self, line: str) -> str:
        assert self.client.stdin is not None
        try:
            self.client.stdin.write(line + "\n")
            self.client.stdin.flush()
        except BrokenPipeError:
            raise BenchError(f"{self.name}: the adapter exited; {self.tail()}") from None
        answer = self._read()
        if not answer.startswith("ok"):
            raise BenchError(f"{self.name}: {line.split()[0]} failed: {answer or 'no answer'}; {self.tail()}")
        return answer[3:]

    def enqueue_range(self, start: int, count: int) -> float:
        return float(self.ask(f"enqueue {start} {count}"))

    def bulk_range(self, start: int, count: int) -> float:
        return float(self.ask(f"bulk {start} {count}"))

    def submit_chain(self, i: int) -> None:
        self.ask(f"chain {i}")

    def submit_sleeps(self, start: int, ms: Sequence[int]) -> None:
        self.ask(f"sleeps {start} {','.join(map(str, ms))}")

    def nap_range(self, start: int, count: int, ms: int) -> float:
        """Submit asyncio jobs ``start .. start+count-1`` of ``ms`` each (bulk path); the seconds."""
        return float(self.ask(f"naps {start} {count} {ms}"))

    def start(self) -> list[int]:
        for argv in self.spec.workers(self.venv, self.redis_url, self.queue):
            self.procs.append(
                subprocess.Popen(
                    argv,
                    cwd=PEERS_DIR,
                    env=self.env,
                    stdout=self.log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        return [p.pid for p in self.procs]

    def go(self) -> None:
        """Nothing to release: the workers take jobs once started (start-up is outside the marks)."""

    def stop(self) -> None:
        """SIGTERM, then SIGKILL to the process group of a root still running after GRACE seconds.

        Every job has been counted when this runs, so a kill loses nothing; it is reported in the
        notes (taskiq 0.13's worker with the streams broker never exits on SIGTERM or SIGINT: it
        goes on fetching after "Stopping prefetching messages").
        """
        for proc in self.procs:
            if proc.poll() is None:
                if self.spec.group_signal:
                    os.killpg(proc.pid, signal.SIGTERM)
                else:
                    proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + GRACE
        for proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.killed = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # its own session: leftover pool children too
            proc.wait(10)
        self.procs = []

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()
        if self.client.poll() is None:
            with contextlib.suppress(OSError):
                assert self.client.stdin is not None
                self.client.stdin.write("quit\n")
                self.client.stdin.close()
            try:
                self.client.wait(15)
            except subprocess.TimeoutExpired:
                self.client.kill()
                self.client.wait(5)
        if self.client.stdout is not None:
            self.client.stdout.close()
        self.log.close()


# --- the table -------------------------------------------------------------------------------

#: the columns of the summary table, in order (metric keys of _harness.METRICS)
COLUMNS = (
    "enqueue",
    "bulk",
    "drain",
    "worker_cpu_ms",
    "chain_p50_ms",
    "chain_p95_ms",
    "cold_p50_ms",
    "sleep_eff",
)


def markdown(summary: Summary, systems: Sequence[str], layouts: dict[str, str]) -> str:
    """One row per system, one column per workload: ``median (ratio to the floor)``, sorted by drain."""
    labels = {key: (label, unit) for key, label, unit, _ in METRICS}
    head = ["system (8-way)", *(labels[k][0] for k in COLUMNS)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    present = [s for s in systems if s in summary]
    present.sort(key=lambda s: (s != "floor", -float(summary[s].get("drain", {}).get("median", 0.0))))  # type: ignore[arg-type]
    for name in present:
        cells = [f"{name} ({layouts[name]})" if name in layouts else name]
        for key in COLUMNS:
            entry = summary[name].get(key)
            if entry is None:
                cells.append("-")
                continue
            text = fmt(float(entry["median"]), labels[key][1])  # type: ignore[arg-type]
            if "ratio" in entry and key != "sleep_eff":
                text += f" ({float(entry['ratio']):.2f})"  # type: ignore[arg-type]
            cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(summary: Summary, systems: Sequence[str], path: Path, title: str) -> None:
    """Bars of each system's ratio to the floor for the main figures, saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("drain", "drain, no-op (x floor, higher is better)"),
        ("enqueue", "enqueue 1-by-1 (x floor, higher is better)"),
        ("bulk", "bulk enqueue (x floor, higher is better)"),
        ("worker_cpu_ms", "worker CPU per job (x floor, lower is better)"),
        ("chain_p50_ms", "warm chain p50 (x floor, lower is better)"),
        ("cold_p50_ms", "cold chain p50 (x floor, lower is better)"),
    ]
    names = [s for s in systems if s in summary]
    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    for ax, (key, label) in zip(axes.flat, panels, strict=True):
        values = [float(summary[s][key]["ratio"]) if key in summary[s] else 0.0 for s in names]  # type: ignore[arg-type]
        colors = [
            "#888888" if s == "floor" else "#d62728" if s.startswith("redis-") else "#1f77b4" for s in names
        ]
        ax.barh(names, values, color=colors)
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.invert_yaxis()
        ax.set_title(label, fontsize=10)
        for y, v in enumerate(values):
            ax.text(v, y, f" {v:.2f}", va="center", fontsize=8)
        top = max([*values, 1.0])
        if key.endswith("_ms") and top > 8:  # one slow peer would squash the rest: a log axis
            ax.set_xscale("log")
            ax.set_xlim(0.5, top * 3)
        else:
            ax.set_xlim(0, top * 1.2)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


# --- main ------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--peers", default=",".join(PEERS), help=f"comma-separated peers (default: {','.join(PEERS)})"
    )
    parser.add_argument("--no-jobchain", action="store_true", help="leave out redis-lists and redis-streams")
    parser.add_argument("--jobs", type=int, help="no-op jobs enqueued one by one (default 5000)")
    parser.add_argument(
        "--bulk", type=int, help="no-op jobs enqueued in bulk, then drained too (default 20000)"
    )
    parser.add_argument("--chains", type=int, help="warm three-step chains (default 100)")
    parser.add_argument("--cold", type=int, help="cold chains, each after --idle seconds idle (default 5)")
    parser.add_argument(
        "--idle", type=float, default=1.5, help="idle seconds before a cold chain (default 1.5)"
    )
    parser.add_argument("--sleeps", type=int, help="jobs sleeping 10-60 ms (default 1000)")
    parser.add_argument("--repeat", type=int, help="repetitions; medians are shown (default 3)")
    parser.add_argument("--redis-url", help="use this Redis instead of starting a throwaway one")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repetition: correctness only")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    parser.add_argument("--plot", type=Path, help="save a PNG of the ratios to the floor here")
    parser.add_argument("--logdir", type=Path, help="keep the workers' and adapters' logs here")
    args = parser.parse_args(argv)
    q = args.quick
    jobs = args.jobs or (100 if q else 5000)
    bulk = args.bulk if args.bulk is not None else (200 if q else 20000)
    chains = args.chains or (5 if q else 100)
    cold = args.cold if args.cold is not None else (1 if q else 5)
    sleeps = sleep_plan(args.sleeps if args.sleeps is not None else (40 if q else 1000))
    repeat = args.repeat or (1 if q else 3)
    peers = [p for p in args.peers.split(",") if p]
    unknown = [p for p in peers if p not in PEERS]
    if unknown:
        parser.error(f"unknown peer(s) {unknown}; known: {', '.join(PEERS)}")
    systems = ["floor", *([] if args.no_jobchain else JOBCHAIN[1:]), *peers]
    failures: dict[str, str] = {}
    notes: dict[str, str] = {}
    for name in peers:
        print(f"venv for {name}: ", end="", file=sys.stderr, flush=True)
        try:
            print(ensure(ENVS[PEERS[name].env]).path, file=sys.stderr)
        except (RuntimeError, subprocess.CalledProcessError) as exc:
            print("FAILED", file=sys.stderr)
            failures[name] = f"could not make its venv: {exc}"
    systems = [s for s in systems if s not in failures]
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in systems}
    bulk_modes: dict[str, str] = {
        "floor": "one pipeline of LPUSH x 1,000",
        "redis-lists": "submit_many",
        "redis-streams": "submit_many",
    }
    with tempfile.TemporaryDirectory(prefix="bench-peers-") as tmp:
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
                order = live[rep % len(live) :] + live[: rep % len(live)]
                for name in order:
                    t0 = time.monotonic()
                    try:
                        if name == "floor":
                            system: Floor | Jobchain | PeerSystem = Floor(url, env)
                        elif name in JOBCHAIN:
                            system = Jobchain(name, url, env)
                        else:
                            system = PeerSystem(PEERS[name], url, fifo, logdir)
                            bulk_modes[name] = system.bulk_mode
                            peer = system
                    except BenchError as exc:
                        failures[name] = str(exc)
                        print(f"BENCHMARK FAILED: {exc}", file=sys.stderr)
                        continue
                    try:
                        result = run_once(
                            system, tally, jobs, chains, bulk=bulk, cold=cold, sleeps=sleeps, idle=args.idle
                        )
                    except BenchError as exc:
                        failures[name] = str(exc)
                        print(f"BENCHMARK FAILED: {exc}", file=sys.stderr)
                        continue
                    finally:
                        system.close()
                        if args.redis_url is None:
                            admin.flushall()  # our own server: the next system starts from an empty one
                    runs[name].append(result)
                    if name in PEERS and peer.killed:
                        notes[name] = f"workers killed {GRACE:.0f}s after SIGTERM (every job had run)"
                    took = time.monotonic() - t0
                    print(
                        f"rep {rep + 1}/{repeat} {name} ({took:.0f}s): " + json.dumps(result), file=sys.stderr
                    )
            admin.close()
    runs = {k: v for k, v in runs.items() if v and k not in failures}
    if "floor" not in runs:
        print("BENCHMARK FAILED: the floor did not run", file=sys.stderr)
        return 1
    summary = summarize(runs)
    shown = [s for s in systems if s in runs]
    layouts = {"floor": "8 processes", "redis-lists": "2 processes x 4", "redis-streams": "2 processes x 4"}
    layouts.update({name: PEERS[name].layout for name in peers})
    info = f"{machine()}, Redis {redis_version(args.redis_url)}"
    sizes = (
        f"{jobs} + {bulk} bulk no-op jobs, {chains} warm + {cold} cold chains, {len(sleeps)} sleeps, "
        f"{repeat} repetition(s), medians"
    )
    if args.plot:
        plot(summary, shown, args.plot, f"ratios to the all-cores floor; {sizes}")
    if args.json:
        data = {
            "machine": info,
            "jobs": jobs,
            "bulk": bulk,
            "chains": chains,
            "cold": cold,
            "sleeps": len(sleeps),
            "repeat": repeat,
            "layouts": layouts,
            "bulk_modes": bulk_modes,
            "summary": summary,
            "failures": failures,
            "notes": notes,
        }
        print(json.dumps(data, indent=2))
    else:
        print(f"{info}; {sizes}")
        print(render(summary, shown))
        print()
        print(markdown(summary, shown, layouts))
        print()
        print("bulk enqueue: " + "; ".join(f"{k}: {v}" for k, v in bulk_modes.items() if k in runs))
        for name, note in notes.items():
            print(f"note: {name}: {note}")
    if failures:
        for name, why in failures.items():
            print(f"BENCHMARK FAILED: {name}: {why}", file=sys.stderr)
        return 1
    print(
        f"verified: every job ran exactly once ({jobs + bulk} no-op jobs, {chains + cold} x 3 chain steps "
        f"and {len(sleeps)} sleeping jobs per system and repetition)",
        file=sys.stdout if not args.json else sys.stderr,
    )
    return 0


def redis_version(url: str | None) -> str:
    if url is None:
        out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout
        return next((w[2:] for w in out.split() if w.startswith("v=")), "?")
    client = redis.Redis.from_url(url)
    try:
        return str(client.info("server")["redis_version"])
    finally:
        client.close()


if __name__ == "__main__":
    raise SystemExit(main())
