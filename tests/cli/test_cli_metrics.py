"""``jobchain worker --metrics-port``: a real worker process on SQLite, scraped over HTTP.

The figures are read with prometheus_client's own parser and compared with
what the test made the worker run: outcomes by task, histogram counts, jobs
in flight, the worker's up gauge, chains, queue depths and the failed queue.
With ``--processes 2`` the parent serves the sum of both children, including
the counts of a child that ended to abort a cancelled job and was replaced.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from jobchain.testing import wait_until

pytest.importorskip("prometheus_client", reason="the metrics extra (prometheus_client) is not installed")
from prometheus_client.parser import text_string_to_metric_families

from tests.cli.conftest import CONFIGS, ROOT, Result

CONFIG = CONFIGS / "metered.py"

needs_sqlite = pytest.mark.skipif(
    importlib.util.find_spec("jobchain_sqlite") is None, reason="jobchain-sqlite is not installed"
)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class Worker:
    """A ``jobchain worker`` subprocess whose stderr is read line by line on a thread."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "jobchain", "worker", *args],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)

    def grep(self, text: str) -> list[str]:
        return [line for line in list(self.lines) if text in line]

    def metrics_url(self) -> str:
        def found() -> str | None:
            if self.process.poll() is not None:
                raise AssertionError("the worker exited:\n" + "".join(self.lines))
            lines = self.grep("metrics at ")
            return lines[0].split("metrics at ", 1)[1].strip() if lines else None

        url: str = wait_until(found, 20.0, "the metrics endpoint")
        return url

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(60)
        self.close()
        return code

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)
        self._reader.join(10)
        assert self.process.stderr is not None
        self.process.stderr.close()


@pytest.fixture
def env(installed_cli_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """The installed plugins, and a TMPDIR of the test's own (to see the metrics directory go)."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    return {**installed_cli_env, "TMPDIR": str(tmp)}


@pytest.fixture
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A SQLite file of the test's own, or (parametrized) a Redis backend under a prefix of its own."""
    kind = getattr(request, "param", "sqlite")
    if kind == "sqlite":
        return f"sqlite://{tmp_path / 'jobs.db'}"
    server: str = request.getfixturevalue("redis_server_url")
    return server.replace("redis://", f"{kind}://") + f"?prefix=m{uuid.uuid4().hex[:10]}"


@pytest.fixture
def config(url: str) -> Iterator[ModuleType]:
    """The config module, imported afresh under a name of its own, its App on the test's SQLite file."""
    name = f"metered_{uuid.uuid4().hex[:8]}"
    spec = importlib.util.spec_from_file_location(name, CONFIG)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.app.use_backend(url)
    yield module
    module.app.close()


@pytest.fixture
def start(env: dict[str, str]) -> Iterator[Callable[..., Worker]]:
    started: list[Worker] = []

    def run(*args: str) -> Worker:
        worker = Worker(list(args), env)
        started.append(worker)
        return worker

    yield run
    for worker in started:
        worker.close()


def scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def outcomes(samples: Samples) -> dict[tuple[str, str], float]:
    """(task, outcome) -> jobchain_jobs_total."""
    found = {}
    for (name, labels), figure in samples.items():
        if name == "jobchain_jobs_total":
            got = dict(labels)
            found[(got["task"], got["outcome"])] = figure
    return found


def by_task(samples: Samples, name: str) -> dict[str, float]:
    return {dict(labels)["task"]: figure for (n, labels), figure in samples.items() if n == name}


def _settled(handle: Any) -> bool:
    return handle.status() in ("succeeded", "failed", "cancelled")


@pytest.mark.parametrize("url", [pytest.param("sqlite", marks=needs_sqlite), "redis-streams"], indirect=True)
def test_a_worker_exports_what_it_ran(config: ModuleType, url: str, start: Callable[..., Worker]) -> None:
    """Counts by outcome, histograms, in flight, worker up, chains, queue depth and failed queue match."""
    from jobchain import chain

    m = config
    plain = [m.ok.submit(i) for i in range(6)]
    failing = m.boom.submit()
    flaky = m.flaky.submit()
    done_chain = chain(m.ok, m.ok).submit(1)
    halted_chain = chain(m.ok, m.boom).submit(2)
    m.parked.submit()
    m.parked.submit()
    m.ok.submit(99, countdown=3600)  # delayed: never runs in this test
    worker = start(
        "-c", str(CONFIG), "-b", url, "-Q", "default", "-j", "2", "-n", "metered", "--metrics-port", "0"
    )
    endpoint = worker.metrics_url()
    assert endpoint.startswith("http://127.0.0.1:")
    assert endpoint.endswith("/metrics")

    assert [h.wait(20) for h in plain] == list(range(6))
    assert flaky.wait(20) == "done"
    wait_until(lambda: _settled(failing), 20.0, "the failing job")
    wait_until(lambda: _settled(done_chain) and _settled(halted_chain), 20.0, "the chains")
    cancelled = m.stubborn.submit()
    wait_until(lambda: cancelled.status() == "running", 20.0, "the stubborn job to start")
    cancelled.cancel()
    wait_until(lambda: cancelled.status() == "cancelled", 20.0, "the stubborn job to be cancelled")

    # chain events follow the settlement the handles see: scrape until they are in
    def with_chains() -> Samples | None:
        samples = scrape(endpoint)
        return samples if value(samples, "jobchain_chains_total", outcome="halted") else None

    samples = wait_until(with_chains, 20.0, "the chain events")

    assert outcomes(samples) == {
        ("ok", "succeeded"): 9,  # 6 alone, 2 in the completed chain, 1 in the halted one
        ("boom", "failed"): 2,
        ("flaky", "retried"): 2,
        ("flaky", "succeeded"): 1,
        ("stubborn", "cancelled"): 1,
    }
    assert by_task(samples, "jobchain_jobs_started_total") == {"ok": 9, "boom": 2, "flaky": 3, "stubborn": 1}
    # run times of the runs that ended by themselves; waits of every run started
    assert by_task(samples, "jobchain_job_duration_seconds_count") == {"ok": 9, "boom": 2, "flaky": 3}
    assert by_task(samples, "jobchain_job_wait_seconds_count") == {
        "ok": 9,
        "boom": 2,
        "flaky": 3,
        "stubborn": 1,
    }
    assert set(by_task(samples, "jobchain_jobs_in_flight").values()) == {0}
    assert value(samples, "jobchain_worker_up", worker="metered") == 1
    assert value(samples, "jobchain_chains_total", outcome="completed") == 1
    assert value(samples, "jobchain_chains_total", outcome="halted") == 1
    # from the backend
    assert value(samples, "jobchain_backend_up") == 1
    assert value(samples, "jobchain_queue_jobs", queue="parked", state="ready") == 2
    assert value(samples, "jobchain_queue_jobs", queue="default", state="delayed") == 1
    assert value(samples, "jobchain_queue_jobs", queue="default", state="ready") == 0
    assert value(samples, "jobchain_failed_queue_jobs", queue="default") == 2
    assert worker.stop() == 0


@needs_sqlite
def test_worker_processes_export_their_totals(
    config: ModuleType, url: str, start: Callable[..., Worker], env: dict[str, str]
) -> None:
    """Two worker processes: the parent serves their sums, kept when a child is replaced; the dir goes."""
    m = config
    first = [m.ok.submit(i) for i in range(12)]
    failing = m.boom.submit()
    flaky = m.flaky.submit()
    worker = start(
        "-c", str(CONFIG), "-b", url, "-Q", "default", "-p", "2", "-j", "1", "-n", "pool",
        "--abort-grace", "0.2", "--metrics-port", "0",
    )  # fmt: skip
    endpoint = worker.metrics_url()
    [directory] = os.listdir(env["TMPDIR"])
    assert directory.startswith("jobchain-metrics-")
    assert [h.wait(20) for h in first] == list(range(12))
    assert flaky.wait(20) == "done"
    wait_until(lambda: _settled(failing), 20.0, "the failing job")

    # a job deaf to its cancel request: its process ends (--abort-grace) and a new one replaces it
    stuck = m.stuck.submit()
    wait_until(lambda: stuck.status() == "running", 20.0, "the stuck job to start")
    stuck.cancel()
    wait_until(lambda: stuck.status() == "cancelled", 20.0, "the stuck job to be recorded cancelled")
    wait_until(lambda: len(worker.grep("(pid ")) == 3, 20.0, "a process to replace the aborted one")
    more = [m.ok.submit(i) for i in range(12, 16)]
    assert [h.wait(20) for h in more] == list(range(12, 16))

    samples = scrape(endpoint)
    assert outcomes(samples) == {
        ("ok", "succeeded"): 16,  # those of the ended process included
        ("boom", "failed"): 1,
        ("flaky", "retried"): 2,
        ("flaky", "succeeded"): 1,
        ("stuck", "cancelled"): 1,
    }
    assert by_task(samples, "jobchain_job_duration_seconds_count") == {"ok": 16, "boom": 1, "flaky": 3}
    assert by_task(samples, "jobchain_job_wait_seconds_count") == {
        "ok": 16,
        "boom": 1,
        "flaky": 3,
        "stuck": 1,
    }
    # the ended process's gauges left the sums: nothing in flight, each name up once
    assert set(by_task(samples, "jobchain_jobs_in_flight").values()) == {0}
    assert value(samples, "jobchain_worker_up", worker="pool-1") == 1
    assert value(samples, "jobchain_worker_up", worker="pool-2") == 1
    assert value(samples, "jobchain_failed_queue_jobs", queue="default") == 1
    assert value(samples, "jobchain_backend_up") == 1

    assert worker.stop() == 0
    assert os.listdir(env["TMPDIR"]) == []  # the multi-process directory was removed


def test_metrics_options_are_checked(jobchain: Callable[..., Result]) -> None:
    """A host without a port, a blank host and a port out of range are usage errors, in one line each."""
    config = str(CONFIG)
    no_port = jobchain("worker", "-c", config, "--metrics-host", "0.0.0.0")
    assert no_port.code == 2, no_port
    assert "--metrics-host needs --metrics-port" in no_port.err
    blank = jobchain("worker", "-c", config, "--metrics-port", "9999", "--metrics-host", " ")
    assert blank.code == 2, blank
    assert "is not a host name or address" in blank.err
    too_high = jobchain("worker", "-c", config, "--metrics-port", "70000")
    assert too_high.code == 2, too_high
    assert "70000" in too_high.err
    for result in (no_port, blank, too_high):
        assert "Traceback" not in result.err


def test_a_port_in_use_is_one_line(jobchain: Callable[..., Result]) -> None:
    """The worker does not start when its metrics port is taken, and says which address failed."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = jobchain("worker", "-c", str(CONFIG), "--burst", "--metrics-port", str(port))
    assert result.code == 1, result
    assert f"error: cannot serve metrics on 127.0.0.1:{port}" in result.err
    assert "Traceback" not in result.err


def test_without_prometheus_client_it_says_what_to_install(
    jobchain: Callable[..., Result], tmp_path: Path
) -> None:
    """--metrics-port without prometheus_client installed: one line naming the extra to install."""
    from tests.cli.conftest import base_env

    hidden = tmp_path / "hide"
    hidden.mkdir()
    (hidden / "prometheus_client.py").write_text(
        "raise ImportError(\"No module named 'prometheus_client'\", name='prometheus_client')\n"
    )
    env = base_env()
    env["PYTHONPATH"] = os.pathsep.join([str(hidden), env.get("PYTHONPATH", "")])
    result = jobchain("worker", "-c", str(CONFIG), "--metrics-port", "0", env=env)
    assert result.code == 1, result
    assert result.err.strip().splitlines() == [
        "error: Prometheus metrics need prometheus_client: pip install 'jobchain[metrics]'"
    ]
