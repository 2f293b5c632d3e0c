"""A fork server for the tests: ``python -m jobchain ARGS`` in a process forked from a warm interpreter.

The tests run the real command (a CLI call, a worker, a gateway) in a process
of its own, hundreds of times per run; most of what one costs is the
interpreter starting and importing jobchain, click, structlog, rich, redis,
httpx and the plugins (about a second of CPU each on the 2-core machine). This
module shares that start-up: a server process imports them once, then, per
request, forks a process that takes the caller's stdin, stdout and stderr
(passed over a Unix socket), environment, working directory and arguments,
and runs ``jobchain`` as ``python -m jobchain`` does
(``runpy.run_module(..., run_name="__main__")``), ending as an interpreter ends
(threads joined, atexit handlers run, streams flushed). It has a pid of its
own: signals (SIGTERM, SIGKILL, SIGSTOP) reach it as they reach a process
``subprocess.Popen`` started, and its exit status (a signal as a negative
number) comes back as ``returncode``.

What differs from a fresh interpreter: modules the server imported are not
imported again (their import-time side effects happened in the server), and
the processes share the server's hash seed. Everything the commands do at run
time, plugin discovery included (entry points are read again in each process,
on its own ``sys.path``), happens in the process. A fresh interpreter is
started instead (plain ``subprocess``) when the command is not
``python -m jobchain``, when a ``popen`` option is one this module does not
handle, when the request's ``PYTHONPATH`` or working directory would import a
preloaded package from another folder, and for every command when
``JOBCHAIN_TEST_FORKSERVER=0``. A request whose interpreter settings (the
``PYTHON*`` variables but ``PYTHONPATH``) differ gets a server of its own.

Use :func:`popen` where ``subprocess.Popen`` was, and :func:`run` where
``subprocess.run(..., capture_output=True)`` was. Run as a script, this module
is the server: ``python forkserver.py SOCKET``.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import json
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

#: imported once by the server; a module that cannot be imported is left to the processes
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
    "jobchain_http.gateway",
    "jobchain_sqlite.plugin",
)

#: the popen options this module handles itself (others: a plain subprocess.Popen)
_OPTIONS = {"cwd", "env", "stdin", "stdout", "stderr", "text", "universal_newlines", "encoding", "bufsize"}


def _interpreter_settings(env: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """The variables a fresh interpreter reads at start-up, ``PYTHONPATH`` aside (set per process)."""
    return tuple(sorted((k, v) for k, v in env.items() if k.startswith("PYTHON") and k != "PYTHONPATH"))


def _read_line(conn: socket.socket, buffer: bytearray) -> bytes | None:
    """One line from ``conn`` (blocking as its timeout says); None when the peer closed first."""
    while b"\n" not in buffer:
        chunk = conn.recv(4096)
        if not chunk:
            return None
        buffer += chunk
    line, _, rest = bytes(buffer).partition(b"\n")
    buffer[:] = rest
    return line


# --------------------------------------------------------------------------------------------- server


def _serve(path: str) -> dict[str, Any]:
    """Accept requests until the test process goes; return (in a forked process) the request to run."""
    import importlib

    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception:  # a module that fails to import fails again, in the processes that use it
            continue
    if threading.active_count() != 1:
        raise SystemExit("forkserver: a preloaded module started a thread; not forking")
    pythonpath = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    base_path = [p for p in sys.path[1:] if p not in pythonpath]  # sys.path[0] is this file's folder
    origins = {}
    for name in {n.split(".")[0] for n in PRELOAD}:
        module = sys.modules.get(name)
        if module is not None and getattr(module, "__file__", None):
            origins[name] = str(Path(module.__file__ or "").resolve().parents[1])
    parent = os.getppid()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the reporters (below) are reaped by the kernel
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    listener.settimeout(1.0)
    sys.stdout.write(json.dumps({"ready": origins}) + "\n")
    sys.stdout.flush()
    while True:
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            if os.getppid() != parent:  # the test process is gone
                listener.close()
                with contextlib.suppress(OSError):
                    os.unlink(path)
                raise SystemExit(0) from None
            continue
        conn.settimeout(30)
        try:
            msg, fds, _flags, _addr = socket.recv_fds(conn, 1 << 20, 3)
            buffer = bytearray(msg)
            line = _read_line(conn, buffer)
        except OSError:
            line, fds = None, []
        if line is None or len(fds) != 3:
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
            for target, fd in enumerate(fds):
                os.dup2(fd, target)
            for fd in set(fds):
                if fd > 2:
                    os.close(fd)
            request: dict[str, Any] = json.loads(line)
            request["sys_path"] = [request["cwd"], *request["pythonpath"], *base_path]
            return request
        for fd in fds:
            os.close(fd)
        _report(conn, pid)


def _report(conn: socket.socket, pid: int) -> None:
    """The pid, then the exit status; the process is reaped only once the caller has closed (no pid reuse
    while the caller may still signal it, as with a child of its own)."""
    try:
        conn.settimeout(None)
        conn.sendall(f"{pid}\n".encode())
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
        assert info is not None
        code = info.si_status if info.si_code == os.CLD_EXITED else -info.si_status
        conn.sendall(f"{code}\n".encode())
        while conn.recv(4096):
            pass
    except OSError:
        pass
    finally:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
        os._exit(0)


def _run(request: dict[str, Any]) -> None:
    """In the command's process: become ``python -m jobchain ARGS`` in the caller's environment."""
    import importlib
    import runpy

    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    sys.path[:] = request["sys_path"]
    importlib.invalidate_caches()
    sys.argv = ["-m", *request["args"]]
    runpy.run_module("jobchain", run_name="__main__", alter_sys=True)


# --------------------------------------------------------------------------------------------- client


class _Server:
    """One server process (per set of interpreter settings): started on first use, stopped at exit."""

    def __init__(self, env: dict[str, str]) -> None:
        self.dir = tempfile.mkdtemp(prefix="jobchain-fork-")
        self.path = os.path.join(self.dir, "s")
        self.proc = subprocess.Popen(
            [sys.executable, __file__, self.path],
            env=env,
            cwd=self.dir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        #: the folders of the server's PYTHONPATH, resolved
        self.pythonpath = {str(Path(p).resolve()) for p in env.get("PYTHONPATH", "").split(os.pathsep) if p}
        self.origins: dict[str, str] | None = None
        with contextlib.suppress(ValueError):
            self.origins = json.loads(line)["ready"]
        if self.origins is None:
            self.stop()

    @property
    def up(self) -> bool:
        return self.origins is not None and self.proc.poll() is None

    def serves(self, cwd: str, pythonpath: list[str]) -> bool:
        """Would ``python -m`` in ``cwd`` with ``pythonpath`` import the preloaded packages from where
        the server did? A package found first in one of these folders must be in the same folder, and
        one the server found on its own ``PYTHONPATH`` must be found there too (not left out)."""
        assert self.origins is not None
        folders = [str(Path(f).resolve()) for f in (cwd, *pythonpath)]
        for name, origin in self.origins.items():
            if origin in self.pythonpath and origin not in folders:
                return False
            for folder in folders:
                if (Path(folder) / name).is_dir() or (Path(folder) / f"{name}.py").is_file():
                    if folder != origin:
                        return False
                    break
        return True

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        shutil.rmtree(self.dir, ignore_errors=True)


_servers: dict[tuple[tuple[str, str], ...], _Server] = {}
_lock = threading.Lock()


def _server_for(env: dict[str, str]) -> _Server | None:
    settings = _interpreter_settings(env)
    with _lock:
        server = _servers.get(settings)
        if server is not None and server.up:
            return server
        if server is not None and server.origins is None:
            return None  # it could not start: fresh interpreters from now on
        if not _servers:
            atexit.register(_stop_all)
        server = _servers[settings] = _Server(
            {k: v for k, v in env.items() if k != "PYTHONPATH"}
            | {"PYTHONPATH": os.environ.get("PYTHONPATH", "")}
        )
        return server if server.up else None


def _stop_all() -> None:
    for server in _servers.values():
        server.stop()


class ForkedProcess:
    """What ``subprocess.Popen`` gives, for a process the fork server started: ``pid``, ``returncode``,
    ``stdout``/``stderr`` (with ``PIPE``), ``poll``, ``wait``, ``communicate``, ``send_signal``,
    ``terminate``, ``kill``, and use as a context manager."""

    def __init__(self, server: _Server, args: list[str], command: list[str], **options: Any) -> None:
        self.args = args
        self.returncode: int | None = None
        self.stdin: IO[Any] | None = None
        self.stdout: IO[Any] | None = None
        self.stderr: IO[Any] | None = None
        self._buffer = bytearray()
        self._output: dict[int, list[bytes]] = {}
        text = bool(options.get("text") or options.get("universal_newlines") or options.get("encoding"))
        self._encoding = options.get("encoding")
        cwd = str(options.get("cwd") or os.getcwd())
        env = dict(os.environ if options.get("env") is None else options["env"])
        pythonpath = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        request = {"args": command, "env": env, "cwd": cwd, "pythonpath": pythonpath}
        opened: list[int] = []  # ours to close once passed
        fds = []
        for index, name in enumerate(("stdin", "stdout", "stderr")):
            spec = options.get(name)
            if spec is None:
                fds.append(index)
            elif spec == subprocess.DEVNULL:
                fd = os.open(os.devnull, os.O_RDWR)
                opened.append(fd)
                fds.append(fd)
            elif spec == subprocess.PIPE:
                read, write = os.pipe()
                mine, theirs = (write, read) if index == 0 else (read, write)
                opened.append(theirs)
                fds.append(theirs)
                mode = "wb" if index == 0 else "rb"
                stream: IO[Any] = open(mine, mode)  # noqa: SIM115 - closed by wait/communicate/__exit__
                if text:
                    stream = io.TextIOWrapper(stream, encoding=self._encoding)
                setattr(self, name, stream)
            elif spec == subprocess.STDOUT and index == 2:
                fds.append(fds[1])
            elif isinstance(spec, int):
                fds.append(spec)
            else:
                fds.append(spec.fileno())
        self._conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._conn.connect(server.path)
            socket.send_fds(self._conn, [(json.dumps(request) + "\n").encode()], fds)
            self._conn.settimeout(60)
            line = _read_line(self._conn, self._buffer)
            if line is None:
                raise OSError("the fork server did not start the process")
            self.pid = int(line)
        except BaseException:
            self._conn.close()
            for opened_stream in (self.stdin, self.stdout, self.stderr):
                if opened_stream is not None:
                    opened_stream.close()
            raise
        finally:
            for fd in opened:
                os.close(fd)

    def _status(self, timeout: float | None) -> int | None:
        if self.returncode is not None:
            return self.returncode
        self._conn.settimeout(timeout)
        try:
            line = _read_line(self._conn, self._buffer)
        except (TimeoutError, BlockingIOError):
            return None
        self.returncode = int(line) if line is not None else -signal.SIGKILL  # the reporter died: lost
        self._conn.close()  # the reporter reaps the process now
        return self.returncode

    def poll(self) -> int | None:
        return self._status(0)

    def wait(self, timeout: float | None = None) -> int:
        code = self._status(timeout)
        if code is None:
            raise subprocess.TimeoutExpired(self.args, timeout or 0)
        return code

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:  # not yet reaped (the reporter waits for us), so the pid is still ours
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def communicate(self, input: Any = None, timeout: float | None = None) -> tuple[Any, Any]:
        """Read ``stdout``/``stderr`` (the pipes) to their end, then wait; ``TimeoutExpired`` keeps what
        was read for the next call, as ``subprocess.Popen.communicate`` does."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if self.stdin is not None:
            if input:
                with contextlib.suppress(BrokenPipeError):
                    self.stdin.write(input)
            with contextlib.suppress(BrokenPipeError):
                self.stdin.close()
        streams = [s for s in (self.stdout, self.stderr) if s is not None and not s.closed]
        with selectors.DefaultSelector() as selector:
            for stream in streams:
                raw = stream.buffer if isinstance(stream, io.TextIOWrapper) else stream
                selector.register(raw.fileno(), selectors.EVENT_READ, stream)
                self._output.setdefault(raw.fileno(), [])
            while selector.get_map():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise subprocess.TimeoutExpired(self.args, timeout or 0)
                for key, _ in selector.select(left):
                    chunk = os.read(key.fd, 65536)
                    if chunk:
                        self._output[key.fd].append(chunk)
                    else:
                        selector.unregister(key.fd)
        results: list[Any] = []
        for piped in (self.stdout, self.stderr):
            if piped is None:
                results.append(None)
                continue
            text = isinstance(piped, io.TextIOWrapper)
            data = b""
            if not piped.closed:
                source: IO[Any] = piped.buffer if isinstance(piped, io.TextIOWrapper) else piped
                data = b"".join(self._output.get(source.fileno(), []))
                piped.close()
            results.append(_text(data, self._encoding) if text else data)
        self.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return results[0], results[1]

    def __enter__(self) -> ForkedProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        for stream in (self.stdin, self.stdout, self.stderr):
            if stream is not None:
                stream.close()
        self.wait()


def _text(data: bytes, encoding: str | None = None) -> str:
    """Bytes decoded as ``subprocess`` decodes them in text mode (universal newlines)."""
    return io.TextIOWrapper(io.BytesIO(data), encoding=encoding).read()


def _command(args: Any) -> list[str] | None:
    """ARGS of ``[sys.executable, "-m", "jobchain", *ARGS]``; None for any other command."""
    if isinstance(args, (str, bytes)) or len(args) < 3:
        return None
    first, flag, module, *rest = (str(a) for a in args)
    if (first, flag, module) != (sys.executable, "-m", "jobchain"):
        return None
    return rest


def popen(args: Sequence[str], **options: Any) -> ForkedProcess | subprocess.Popen[Any]:
    """``subprocess.Popen(args, **options)``, forked from the warm server when ``args`` is
    ``[sys.executable, "-m", "jobchain", ...]`` (see the module's docstring for when it is not)."""
    command = _command(args)
    if command is not None and os.environ.get("JOBCHAIN_TEST_FORKSERVER") != "0" and set(options) <= _OPTIONS:
        env = dict(os.environ if options.get("env") is None else options["env"])
        server = _server_for(env)
        pythonpath = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        if server is not None and server.serves(str(options.get("cwd") or os.getcwd()), pythonpath):
            return ForkedProcess(server, list(args), command, **options)
    return subprocess.Popen(args, **options)


def run(
    args: Sequence[str],
    *,
    timeout: float | None = None,
    input: Any = None,
    **options: Any,
) -> subprocess.CompletedProcess[Any]:
    """``subprocess.run(args, capture_output=True, ...)`` through :func:`popen`."""
    options.pop("capture_output", None)
    options.setdefault("stdout", subprocess.PIPE)
    options.setdefault("stderr", subprocess.PIPE)
    if input is not None:
        options["stdin"] = subprocess.PIPE
    with popen(args, **options) as process:
        try:
            out, err = process.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise
        return subprocess.CompletedProcess(list(args), process.wait(), out, err)


if __name__ == "__main__":
    _run(_serve(sys.argv[1]))
