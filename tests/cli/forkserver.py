"""A fork server for the CLI tests: ``python -m jobchain ARGS`` in a process forked from a warm interpreter.

Every CLI test runs the real command in a process of its own; most of what one
costs is the interpreter starting and importing jobchain, click, structlog,
rich, redis and the plugins (about a second of CPU each, hundreds of times per
run). This module shares that start-up: a server process imports them once,
then, per request, forks a child that takes the caller's stdin, stdout and
stderr (passed over a Unix socket), environment, working directory and
arguments, and runs ``jobchain`` as ``python -m jobchain`` does
(``runpy.run_module(..., run_name="__main__")``), ending as an interpreter
ends (threads joined, atexit handlers run, streams flushed). The caller gets
its exit status, a signal as a negative number as :mod:`subprocess` reports it.

What differs from a fresh interpreter: modules the server imported are not
imported again (their import-time side effects happened in the server), and
children share the server's hash seed. Everything the commands do at run time,
plugin discovery included (entry points are read again in each child, with the
child's ``sys.path``), happens in the child. A request whose interpreter
settings differ from the server's (any ``PYTHON*`` variable but ``PYTHONPATH``)
runs in a fresh interpreter instead, and ``JOBCHAIN_TEST_FORKSERVER=0`` runs
every command in a fresh interpreter.

Run as a script, this is the server: ``python forkserver.py SOCKET``.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Sequence

#: imported once by the server; a module that cannot be imported is left to the children
PRELOAD = (
    "jobchain",
    "jobchain.cli.main",
    "jobchain.memory",
    "click",
    "structlog",
    "rich.console",
    "rich.traceback",
    "redis",
    "redis.asyncio",
    "httpx",
    "jobchain_redis.plugin",
    "jobchain_redis.lists",
    "jobchain_redis.streams",
    "jobchain_http.plugin",
    "jobchain_http.client",
    "jobchain_sqlite.plugin",
)


def _interpreter_settings(env: dict[str, str]) -> dict[str, str]:
    """The variables a fresh interpreter reads at start-up, ``PYTHONPATH`` aside (set per child)."""
    return {k: v for k, v in env.items() if k.startswith("PYTHON") and k != "PYTHONPATH"}


def _recv_line(conn: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def _serve(path: str) -> dict[str, object]:
    """Accept requests until the parent goes; return (in a child) the request that child must run."""
    import importlib
    import threading

    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception:  # a module that fails to import fails again, in the children that use it
            continue
    if threading.active_count() != 1:
        raise SystemExit("forkserver: a preloaded module started a thread; not forking")
    pythonpath = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    base_path = [p for p in sys.path[1:] if p not in pythonpath]  # sys.path[0] is this file's folder
    parent = os.getppid()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the reporters (below) are reaped by the kernel
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    listener.settimeout(1.0)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    while True:
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            if os.getppid() != parent:  # the test process is gone
                listener.close()
                os.unlink(path)
                raise SystemExit(0) from None
            continue
        conn.settimeout(None)
        msg, fds, _flags, _addr = socket.recv_fds(conn, 1 << 20, 3)
        while not msg.endswith(b"\n"):
            more = conn.recv(1 << 20)
            if not more:
                break
            msg += more
        if len(fds) != 3:
            for fd in fds:
                os.close(fd)
            conn.close()
            continue
        sys.stdout.flush()
        sys.stderr.flush()
        if os.fork() != 0:  # the server: straight back to accepting
            for fd in fds:
                os.close(fd)
            conn.close()
            continue
        # the reporter: forks the command's process, tells the caller its pid, then its exit status
        listener.close()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        pid = os.fork()
        if pid == 0:
            conn.close()
            request: dict[str, object] = json.loads(msg)
            for target, fd in enumerate(fds):
                os.dup2(fd, target)
                os.close(fd)
            request["sys_path"] = [str(request["cwd"]), *request["pythonpath"], *base_path]  # type: ignore[misc]
            return request
        for fd in fds:
            os.close(fd)
        try:
            conn.sendall(f"{pid}\n".encode())
            _, status = os.waitpid(pid, 0)
            conn.sendall(f"{os.waitstatus_to_exitcode(status)}\n".encode())
        finally:
            os._exit(0)


def _run(request: dict[str, object]) -> None:
    """In the command's process: become ``python -m jobchain ARGS`` in the caller's environment."""
    import importlib
    import runpy

    env = request["env"]
    assert isinstance(env, dict)
    os.environ.clear()
    os.environ.update(env)
    os.chdir(str(request["cwd"]))
    sys.path[:] = list(request["sys_path"])  # type: ignore[call-overload]
    importlib.invalidate_caches()
    sys.argv = ["-m", *request["args"]]  # type: ignore[misc]
    runpy.run_module("jobchain", run_name="__main__", alter_sys=True)


class ForkServer:
    """The caller's side: start the server on first use, run commands through it, stop it at exit."""

    def __init__(self, env: dict[str, str]) -> None:
        self._env = env
        self._settings = _interpreter_settings(env)
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir = ""
        self._path = ""
        self._broken = False

    def _start(self) -> bool:
        if self._proc is not None and self._proc.poll() is None:
            return True
        if self._broken:
            return False
        self._dir = tempfile.mkdtemp(prefix="jobchain-fork-")
        self._path = os.path.join(self._dir, "s")
        self._proc = subprocess.Popen(
            [sys.executable, __file__, self._path],
            env=self._env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert self._proc.stdout is not None
        if self._proc.stdout.readline() != b"ready\n":
            self._broken = True
            self._proc.kill()
            self._proc.wait()
            return False
        atexit.register(self.stop)
        return True

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            self._proc.wait(10)
        if self._proc is not None and self._proc.stdout is not None:
            self._proc.stdout.close()
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)
        self._proc = None

    def run(
        self, args: Sequence[str], *, env: dict[str, str], cwd: str, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        """``subprocess.run([python, -m, jobchain, *args], capture_output=True, text=True, ...)``."""
        fresh = [sys.executable, "-m", "jobchain", *args]
        if (
            os.environ.get("JOBCHAIN_TEST_FORKSERVER") == "0"
            or _interpreter_settings(env) != self._settings
            or not self._start()
        ):
            return subprocess.run(
                fresh,
                cwd=cwd,
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
            )
        pythonpath = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        request = {"args": list(args), "env": env, "cwd": str(cwd), "pythonpath": pythonpath}
        with (
            open(os.devnull, "rb") as stdin,
            tempfile.TemporaryFile() as out,
            tempfile.TemporaryFile() as err,
            socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn,
        ):
            conn.connect(self._path)
            payload = (json.dumps(request) + "\n").encode()
            socket.send_fds(conn, [payload], [stdin.fileno(), out.fileno(), err.fileno()])
            conn.settimeout(timeout)
            pid = int(_recv_line(conn))
            try:
                code = int(_recv_line(conn))
            except (TimeoutError, ValueError):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                raise subprocess.TimeoutExpired(fresh, timeout) from None
            out.seek(0)
            err.seek(0)
            return subprocess.CompletedProcess(fresh, code, _text(out.read()), _text(err.read()))


def _text(data: bytes) -> str:
    """Bytes decoded as ``subprocess.run(text=True)`` decodes them (universal newlines)."""
    return io.TextIOWrapper(io.BytesIO(data)).read()


if __name__ == "__main__":
    _run(_serve(sys.argv[1]))
