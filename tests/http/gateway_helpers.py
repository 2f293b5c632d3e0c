"""Helpers for the gateway's tests: gateways in process (uvicorn on a thread) and as processes.

Every process is started here and stopped by its PID; every socket is on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import forkserver
import pytest

pytest.importorskip("jobchain_http", reason="pip install -e plugins/http[test]")

import httpx
import uvicorn
from jobchain_http.gateway import GatewayConfig, create_app

from jobchain.backend import Backend

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "test-token-0123456789"


def process_env(**extra: str) -> dict[str, str]:
    """The environment of a ``jobchain`` subprocess: this one's, without JOBCHAIN_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBCHAIN_")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["NO_COLOR"] = "1"
    env.update(extra)
    return env


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.02) -> Any:
    """Poll ``check()`` until it returns something truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def stop_process(proc: subprocess.Popen[Any], timeout: float = 15.0) -> None:
    """SIGTERM the process we started (by PID), then SIGKILL it if it does not exit."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout)


class GatewayProcess:
    """``jobchain http serve`` in a subprocess, on a free loopback port it reports."""

    def __init__(self, log: Path, args: list[str], env: dict[str, str]) -> None:
        self.log = log
        with open(log, "wb") as stderr:  # the child keeps its own copy of the descriptor
            self.proc = forkserver.popen(
                [sys.executable, "-m", "jobchain", "http", "serve", "--bind", "127.0.0.1:0", *args],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        found = wait_for(self._url, 60.0, f"the gateway to start (log: {log})", interval=0.05)
        self.url: str = found

    def _url(self) -> str | None:
        text = self.log.read_text(errors="replace")
        match = re.search(r"serving .* on (http://127\.0\.0\.1:\d+)", text)
        if match:
            return match.group(1)
        if self.proc.poll() is not None:
            pytest.fail(f"the gateway exited with {self.proc.returncode}:\n{text[-2000:]}")
        return None

    def stop(self) -> None:
        stop_process(self.proc)


class ThreadedGateway:
    """A gateway served by uvicorn on a thread of this process: a real socket, an injected backend."""

    def __init__(self, backend: Backend, **options: Any) -> None:
        options.setdefault("ping_interval", 0.2)
        self.app = create_app(GatewayConfig(backend=backend, **options))
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=0, log_config=None, access_log=False, lifespan="off"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="test-gateway", daemon=True)
        self.thread.start()
        wait_for(lambda: self.server.started, 30.0, "uvicorn to start", interval=0.002)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    def use(self, backend: Backend) -> None:
        """Serve ``backend`` from now on (a fresh store for the next test)."""
        self.app.gateway.use_backend(backend)

    def stop(self) -> None:
        self.app.gateway.hub.request_shutdown()
        self.server.should_exit = True
        self.thread.join(15)


class InProcessTransport(httpx.BaseTransport):
    """A synchronous httpx transport that hands each request to an ASGI app through ``httpx.ASGITransport``.

    The app runs on an event loop of its own thread, so blocking callers (the ``http://``
    backend, a Worker's threads) can use it as they would a socket. Responses are read
    whole, so streamed delivery is not available this way (the backend long-polls).
    """

    def __init__(self, app: Any) -> None:
        self._asgi = httpx.ASGITransport(app=app)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="asgi-loop", daemon=True)
        self._thread.start()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        content = request.read()

        async def call() -> tuple[int, list[tuple[bytes, bytes]], bytes]:
            inner = httpx.Request(request.method, request.url, headers=request.headers, content=content)
            response = await self._asgi.handle_async_request(inner)
            body = b"".join([chunk async for chunk in response.stream])  # type: ignore[union-attr]
            return response.status_code, response.headers.raw, body

        status, headers, body = asyncio.run_coroutine_threadsafe(call(), self._loop).result()
        return httpx.Response(status, headers=headers, content=body, request=request)

    def close(self) -> None:
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
        if not self._loop.is_running():
            self._loop.close()
