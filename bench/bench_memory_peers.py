"""Redis memory per queued and per finished job and chain: jobchain (both layouts) against huey and Dramatiq.

Issue 15, step 3. Each system runs alone on a fresh throwaway ``redis-server``
(``FLUSHALL`` between systems), driven as in ``bench_peers.py`` (jobchain from
this process, a peer through its adapter in its own venv), in two rounds:

* **jobs** - N no-op jobs submitted one at a time with no worker running:
  the growth of ``used_memory`` (``INFO memory``) over the empty database,
  divided by N, is the memory per **queued job**; then the workers run them
  all (counted through the FIFO) and stop: the growth that stays, divided by
  N, is the memory per **finished job** (results, job records), measured at
  once, so well within every system's result TTL;
* **chains** - the same for C three-step chains A->B->C (jobchain chains,
  huey and Dramatiq pipelines): per **queued chain** and per **finished chain**.

What each system keeps differs by design, and the table shows it: jobchain
keeps every job's record and result (and the chain record) until its result
TTL; huey keeps a result only when a task returns something (``RedisHuey``:
results in a hash without expiry); Dramatiq keeps no results unless its
Results middleware is added (it is not here: its default).

    python bench/bench_memory_peers.py [--jobs 10000] [--chains 1000] [--peers huey,dramatiq] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import redis

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _harness import BenchError, Tally  # noqa: E402
from bench_floor import Jobchain, machine  # noqa: E402
from bench_peers import PEERS, PeerSystem  # noqa: E402
from peer_envs import ENVS, ensure  # noqa: E402
from redis_server import redis_server  # noqa: E402

COLUMNS = ("queued job", "finished job", "queued chain", "finished chain")


def used(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def measure(
    system: Jobchain | PeerSystem, tally: Tally, client: redis.Redis, jobs: int, chains: int
) -> dict[str, float]:
    """Bytes per queued and finished job and chain (see the module docstring)."""
    out: dict[str, float] = {}
    tally.reset()
    base = used(client)
    system.enqueue_range(0, jobs)
    out["queued job"] = (used(client) - base) / jobs
    tally.reset()
    tally.track(system.start())
    system.go()
    tally.wait(lambda: len(tally.seen["n"]) >= jobs, f"{system.name} jobs")
    system.stop()
    tally.flush()
    tally.verify(system.name, jobs, 0)
    out["finished job"] = (used(client) - base) / jobs
    base = used(client)
    for i in range(chains):
        system.submit_chain(i)
    out["queued chain"] = (used(client) - base) / chains
    tally.reset()
    tally.track(system.start())
    system.go()
    tally.wait(lambda: len(tally.seen["c"]) >= chains, f"{system.name} chains")
    system.stop()
    tally.flush()
    tally.verify(system.name, 0, chains)
    out["finished chain"] = (used(client) - base) / chains
    return out


def render(results: dict[str, dict[str, float]]) -> str:
    lines = [
        "| system | " + " | ".join(f"per {c}" for c in COLUMNS) + " |",
        "|" + "---|" * (len(COLUMNS) + 1),
    ]
    for name, row in results.items():
        lines.append(f"| {name} | " + " | ".join(f"{row[c]:,.0f} B" for c in COLUMNS) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--jobs", type=int, help="no-op jobs (default 10000)")
    parser.add_argument("--chains", type=int, help="three-step chains (default 1000)")
    parser.add_argument(
        "--peers", default="huey,dramatiq", help="comma-separated peers (default: huey,dramatiq)"
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes: correctness only")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    jobs = args.jobs or (200 if args.quick else 10000)
    chains = args.chains or (20 if args.quick else 1000)
    peers = [p for p in args.peers.split(",") if p]
    for name in peers:
        if name not in PEERS:
            parser.error(f"unknown peer {name!r}; known: {', '.join(PEERS)}")
        ensure(ENVS[PEERS[name].env])
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-memory-peers-") as tmp:
        fifo = os.path.join(tmp, "runs.fifo")
        tally = Tally(fifo)
        env = dict(os.environ, JOBCHAIN_FLOOR_FIFO=fifo, JOBCHAIN_DISABLE_PLUGINS="")
        env["PYTHONPATH"] = os.pathsep.join([str(HERE), *sys.path[1:]])
        os.environ["JOBCHAIN_FLOOR_FIFO"] = fifo
        with redis_server() as url:
            client = redis.Redis.from_url(url)
            for name in ("redis-lists", "redis-streams", *peers):
                client.flushall()
                system: Jobchain | PeerSystem = (
                    PeerSystem(PEERS[name], url, fifo, Path(tmp))
                    if name in PEERS
                    else Jobchain(name, url, env)
                )
                try:
                    results[name] = measure(system, tally, client, jobs, chains)
                except BenchError as exc:
                    print(f"BENCHMARK FAILED: {exc}", file=sys.stderr)
                    return 1
                finally:
                    system.close()
                print(f"{name}: " + json.dumps(results[name]), file=sys.stderr)
            version = client.info("server")["redis_version"]
            client.close()
    if args.json:
        print(
            json.dumps({"machine": machine(), "jobs": jobs, "chains": chains, "results": results}, indent=2)
        )
    else:
        print(f"{machine()}, Redis {version}; {jobs} jobs, {chains} chains; used_memory growth per item")
        print(render(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
