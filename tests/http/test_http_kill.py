"""Kill test: a gateway over Redis, 3 streaming worker processes, one SIGKILLed in the middle of its stream.

Every job reaches exactly one outcome, and the only jobs that ran twice are
jobs the killed worker held. Executions are recorded by the task itself in
one append-only file per worker process (tests/http/configs/kill_app.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

import forkserver
import httpx
import pytest
from gateway_helpers import ROOT, TOKEN, GatewayProcess, process_env, stop_process, wait_for

pytest.importorskip("jobchain_redis", reason="pip install -e backends/redis")

CONFIG = str(Path(__file__).with_name("configs") / "kill_app.py")
JOBS = 2000
AUTH = {"authorization": f"Bearer {TOKEN}"}


def executions(directory: Path) -> dict[int, list[int]]:
    """pid -> job numbers it ran, from the record files."""
    out: dict[int, list[int]] = {}
    for path in directory.glob("exec-*.log"):
        pid = int(path.stem.split("-")[1])
        out[pid] = [int(line) for line in path.read_text().split()]
    return out


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["redis-lists", "redis-streams"])
def test_killed_streaming_worker_loses_nothing(scheme: str, redis_server_url: str, tmp_path: Path) -> None:
    """SIGKILL one of 3 streaming workers mid-run: all 2,000 jobs succeed once; repeats are its jobs only."""
    records = tmp_path / "records"
    records.mkdir()
    backend_url = redis_server_url.replace("redis://", f"{scheme}://") + f"?prefix=kill{uuid.uuid4().hex[:8]}"
    gateway = GatewayProcess(
        tmp_path / "gateway.log", ["--backend", backend_url, "--token", TOKEN], process_env()
    )
    workers: list[subprocess.Popen[bytes]] = []
    try:
        with httpx.Client(base_url=gateway.url, headers=AUTH, timeout=60) as client:
            ids: list[str] = []
            for start in range(0, JOBS, 1000):
                items = [{"target": "record", "args": [n]} for n in range(start, start + 1000)]
                answer = client.post("/v1/submit", json={"items": items})
                assert answer.status_code == 201, answer.text
                ids += [item["id"] for item in answer.json()["items"]]
            worker_url = gateway.url.replace("http://", f"http://:{TOKEN}@") + "?prefetch=8"
            env = process_env(JOBCHAIN_TEST_RECORD_DIR=str(records))
            command = [
                sys.executable,
                "-m",
                "jobchain",
                "worker",
                "--config",
                CONFIG,
                "--backend",
                worker_url,
            ]
            command += ["--concurrency", "4", "--lease", "3", "--grace", "5"]
            for i in range(3):
                log = open(tmp_path / f"worker-{i}.log", "wb")  # noqa: SIM115 - closed below
                workers.append(
                    forkserver.popen(
                        [*command, "--name", f"kill-{i}"],
                        cwd=ROOT,
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,
                        stderr=log,
                    )
                )
                log.close()
            victim = workers[0]

            def victim_is_mid_run() -> bool:
                ran = executions(records)
                return len(ran.get(victim.pid, [])) >= 100

            wait_for(victim_is_mid_run, 120, "the first worker to run 100 jobs")
            os.kill(victim.pid, signal.SIGKILL)
            victim.wait(30)
            assert sum(len(v) for v in executions(records).values()) < JOBS, "killed too late to matter"

            def all_settled() -> bool:
                stats = [s for s in client.get("/v1/stats").json()["queues"] if s["queue"] == "default"]
                return bool(stats) and stats[0]["ready"] + stats[0]["in_flight"] + stats[0]["delayed"] == 0

            wait_for(all_settled, 180, "every job to be settled", interval=0.2)
            states = Counter(client.get(f"/v1/jobs/{job_id}").json()["state"] for job_id in ids)
            assert states == Counter({"succeeded": JOBS})
            assert client.get("/v1/failed").json()["entries"] == []
    finally:
        for proc in workers:
            stop_process(proc)
        gateway.stop()

    ran = executions(records)
    counts = Counter(n for jobs in ran.values() for n in jobs)
    assert set(counts) == set(range(JOBS)), "some job never ran"
    repeated = {n for n, c in counts.items() if c > 1}
    by_victim = set(ran.get(victim.pid, []))
    assert repeated <= by_victim, (
        f"jobs run twice that the killed worker never held: {sorted(repeated - by_victim)}"
    )
    assert all(counts[n] == 2 for n in repeated)
