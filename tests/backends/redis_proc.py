"""A redis-server of a test's own, on a loopback port, that fault tests stop, kill and restart.

Only the process this object started is ever signalled, by its PID. The data
directory is kept across restarts, so with ``appendonly yes`` a restarted
server comes back with what it had acknowledged::

    server = RedisProcess(tmp_path / "redis")      # appendonly yes, appendfsync always, no RDB
    server.start()                                 # RedisUnavailable if it cannot be started
    ...
    server.shutdown()                              # SHUTDOWN: the AOF is flushed, the port freed
    server.start()                                 # same port, same dir
    server.close()                                 # at teardown: stops it if still running
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = ["RedisProcess", "RedisUnavailable", "free_port", "redis_server_binary"]


class RedisUnavailable(RuntimeError):
    """redis-server is missing or did not start."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_server_binary() -> str | None:
    """The path of redis-server, or None when it is not installed."""
    found = shutil.which("redis-server")
    if found is None and os.path.exists("/usr/bin/redis-server"):
        found = "/usr/bin/redis-server"
    return found


class RedisProcess:
    """One redis-server bound to 127.0.0.1, persisted to an append-only file in ``directory``."""

    def __init__(
        self,
        directory: Path,
        *,
        port: int | None = None,
        appendonly: bool = True,
        appendfsync: str = "always",
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.directory = Path(directory)
        self.port = port or free_port()
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.extra_args = extra_args
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``; swap the scheme for a jobchain backend URL."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def logfile(self) -> Path:
        return self.directory / "redis.log"

    def client(self, *, retries: bool = True, **options: Any) -> Any:
        """A redis-py client for this server (the caller closes it).

        ``retries=False`` turns off redis-py's own reconnect attempts (seconds of
        them by default), for a client that must fail fast.
        """
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        options.setdefault("socket_timeout", 5)
        if not retries:
            options["retry"] = Retry(NoBackoff(), 0)
        return redis.Redis(host="127.0.0.1", port=self.port, **options)

    def start(self, timeout: float = 10.0) -> None:
        """Start (or start again) on the same port and directory; return once it answers PING."""
        if self.running:
            raise RuntimeError(f"redis-server already running (pid {self.pid})")
        binary = redis_server_binary()
        if binary is None:
            raise RedisUnavailable("redis-server is not installed (apt-get install redis-server)")
        self.directory.mkdir(parents=True, exist_ok=True)
        args = [
            binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.directory),
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            self.appendfsync,
            "--daemonize",
            "no",
            "--logfile",
            str(self.logfile),
            *self.extra_args,
        ]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        self.starts += 1
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        import redis

        client = self.client(retries=False, socket_timeout=1, socket_connect_timeout=1)
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    if client.ping():
                        return
                except redis.RedisError:  # refused, or LOADING the append-only file
                    pass
                if not self.running or time.monotonic() > deadline:
                    self._terminate()
                    raise RedisUnavailable(
                        f"redis-server did not start on port {self.port}: {self._log_tail()}"
                    )
                time.sleep(0.02)
        finally:
            client.close()

    def _log_tail(self, lines: int = 5) -> str:
        try:
            return " | ".join(self.logfile.read_text(errors="replace").strip().splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def shutdown(self, timeout: float = 10.0) -> None:
        """``SHUTDOWN`` (the append-only file is flushed) and wait for the process to exit."""
        import redis

        if not self.running:
            return
        # no retries: redis-py would otherwise reconnect to the server it just shut down for seconds
        client = self.client(retries=False, socket_timeout=2)
        try:
            client.shutdown()
        except redis.RedisError:
            pass  # the connection closes as the server exits
        finally:
            client.close()
        self._wait_exit(timeout)

    def kill(self) -> None:
        """SIGKILL the server (a crash): only what the append-only file holds survives."""
        if self.proc is not None and self.running:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def restart(self, down: float = 0.0) -> None:
        """Shut down, stay down ``down`` seconds, start again on the same port and directory."""
        self.shutdown()
        time.sleep(down)
        self.start()

    def _wait_exit(self, timeout: float) -> None:
        assert self.proc is not None
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._terminate()

    def _terminate(self) -> None:
        if self.proc is None or not self.running:
            return
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def close(self) -> None:
        """Stop the server if it runs (teardown)."""
        self._terminate()

    def __enter__(self) -> RedisProcess:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RedisProcess(port={self.port}, pid={self.pid}, dir={str(self.directory)!r})"


# --- what the fault tests share: waiting, and the worker processes they start and stop --------------


def wait_for(
    check: Callable[[], bool], timeout: float, what: str, detail: Callable[[], object] = lambda: ""
) -> None:
    """Poll ``check`` until it is true; after ``timeout`` seconds fail, naming ``what`` (and ``detail()``)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what} {detail()}")
        time.sleep(0.05)


def start_worker(
    config: Path,
    name: str,
    backend: str | None,
    *,
    threads: int,
    lease: float,
    env: dict[str, str],
    log: Path,
) -> subprocess.Popen[bytes]:
    """``python -m jobchain worker --config CONFIG [--backend URL] ...``, its output into ``log``."""
    import forkserver  # tests/forkserver.py (tests/ is on sys.path under pytest)

    with log.open("wb") as out:
        return forkserver.popen(
            [
                sys.executable,
                "-m",
                "jobchain",
                "worker",
                "--config",
                str(config),
                *([] if backend is None else ["--backend", backend]),
                "--concurrency",
                str(threads),
                "--lease",
                str(lease),
                "--grace",
                "10",
                "--name",
                name,
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def stop_processes(procs: Sequence[subprocess.Popen[bytes]], timeout: float = 20.0) -> list[int | None]:
    """SIGTERM the processes the test started (by PID), then wait; SIGKILL what is left (code None)."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    codes: list[int | None] = []
    for proc in procs:
        try:
            codes.append(proc.wait(timeout))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
            codes.append(None)
    return codes


def read_runs(directory: Path) -> list[dict[str, Any]]:
    """The runs the worker processes recorded, one JSON object per line of ``runs-*.jsonl``."""
    runs = []
    for path in directory.glob("runs-*.jsonl"):
        runs += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return runs
