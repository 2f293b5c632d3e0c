"""Redis fixtures shared by every test directory: a real redis-server on a free loopback port.

Loaded through ``pytest_plugins`` in tests/conftest.py, so tests/backends and
tests/cli share one server per session (each test keeps to a key prefix of
its own). The server fixture skips when redis-server cannot be started,
except with ``CI=true``, where it fails the run: CI must never silently skip
Redis. ``redis_cluster`` is the same for a 3-master Redis Cluster
(tests/backends/cluster_proc.py).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and a real Redis is required: {reason}")
    pytest.skip(reason)


@pytest.fixture
def redis_unavailable() -> Callable[[str], None]:
    """What the server fixture does when Redis cannot be had: fail under CI=true, else skip."""
    return _unavailable


@pytest.fixture(scope="session")
def redis_server_url() -> Iterator[str]:
    """``redis://127.0.0.1:PORT/0`` of a redis-server this session started (stopped at the end)."""
    try:
        import redis
    except ImportError:
        _unavailable("the redis package is not installed (pip install -e backends/redis)")
    binary = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None
    )
    if binary is None:
        _unavailable("redis-server is not installed (apt-get install redis-server)")
        raise AssertionError("unreachable")
    port = _free_port()
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    client = redis.Redis(host="127.0.0.1", port=port)
    try:
        deadline = time.monotonic() + 10.0
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                    proc.kill()
                    _unavailable(f"redis-server did not start on port {port}: {stderr.strip()[:300]}")
                time.sleep(0.02)
        client.close()
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if proc.stderr:
            proc.stderr.close()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A started 3-master Redis Cluster on loopback (a ``cluster_proc.ClusterProcess``), stopped at the end.

    Shared by the whole session: a test keeps to keys of its own (a hash tag of
    its own) and leaves every slot where it found it.
    """
    try:
        import redis  # noqa: F401
    except ImportError:
        _unavailable("the redis package is not installed (pip install -e backends/redis)")
    backends = str(Path(__file__).resolve().parent / "backends")
    if backends not in sys.path:
        sys.path.append(backends)  # where cluster_proc and redis_proc live (tests/backends has no __init__)
    from cluster_proc import ClusterProcess
    from redis_proc import RedisUnavailable

    try:
        cluster = ClusterProcess.start(tmp_path_factory.mktemp("redis-cluster"), masters=3)
    except RedisUnavailable as exc:
        _unavailable(str(exc))
        raise AssertionError("unreachable") from exc
    try:
        yield cluster
    finally:
        cluster.stop()
