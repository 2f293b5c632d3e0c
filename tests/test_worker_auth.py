"""Credentials refused are not an outage: a worker does not start, or stops, and says why.

An outage (``BackendUnavailableError``) is waited out; a refused password or
permission (``BackendAuthError``) is not fixed by waiting, so ``start()``
raises it, a running worker stops on it (``fatal``), and ``run()`` raises it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest
import structlog.testing

from jobchain import App, BackendAuthError, BackendError, BackendUnavailableError
from jobchain.memory import MemoryBackend
from jobchain.model import Delivery, WorkerInfo
from jobchain.plugins import Plugins


class LockedOut(MemoryBackend):
    """The memory backend whose reserve and heartbeat raise BackendAuthError once ``locked`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.url = "locked://"
        self.locked = threading.Event()
        self.reserves = 0

    def _check(self) -> None:
        if self.locked.is_set():
            raise BackendAuthError(self.url, "WRONGPASS invalid username-password pair (injected)")

    def reserve(
        self, queues: Sequence[str], *, limit: int, lease: float, worker: str, wait: float = 0.0
    ) -> list[Delivery]:
        self.reserves += 1
        self._check()
        return super().reserve(queues, limit=limit, lease=lease, worker=worker, wait=wait)

    def heartbeat(self, info: WorkerInfo, ttl: float) -> bool:
        self._check()
        return super().heartbeat(info, ttl)


def _app(backend: LockedOut) -> App:
    app = App(backend, plugins=Plugins(entry_points=False))

    @app.task
    def ok(n: int) -> int:
        return n

    return app


def test_auth_error_is_a_backend_error_but_not_an_outage() -> None:
    exc = BackendAuthError("redis-lists://:***@h:6379/0", "WRONGPASS")
    assert isinstance(exc, BackendError)
    assert not isinstance(exc, BackendUnavailableError | ConnectionError | OSError)
    assert exc.url == "redis-lists://:***@h:6379/0"
    assert str(exc) == "authentication failed for backend redis-lists://:***@h:6379/0: WRONGPASS"


def test_start_raises_when_the_credentials_are_refused() -> None:
    backend = LockedOut()
    backend.locked.set()
    worker = _app(backend).worker(concurrency=1, poll=0.02)
    with pytest.raises(BackendAuthError, match="authentication failed"):
        worker.start()
    assert backend.reserves == 0, "it reserved although it could not start"


def test_a_running_worker_stops_when_the_credentials_are_refused() -> None:
    backend = LockedOut()
    app = _app(backend)
    assert app.submit("ok", 1).id
    worker = app.worker(concurrency=1, poll=0.02, reconnect_base=0.005, reconnect_cap=0.02)
    done = threading.Event()
    raised: list[BaseException] = []

    def run() -> None:
        try:
            worker.run()
        except BaseException as exc:
            raised.append(exc)
        done.set()

    with structlog.testing.capture_logs() as logs:
        threading.Thread(target=run, daemon=True).start()
        deadline = time.monotonic() + 5.0  # running: registered and reserving, then the password changes
        while backend.reserves == 0 and time.monotonic() < deadline:
            time.sleep(0.005)
        backend.locked.set()
        assert done.wait(10.0), "the worker went on retrying refused credentials"
    assert worker.fatal is not None
    assert len(raised) == 1
    assert isinstance(raised[0], BackendAuthError)
    stops = [e for e in logs if e["event"] == "worker_stopped_by_backend_auth"]
    assert len(stops) == 1, "the refusal was logged more than once"
    assert not [e for e in logs if e["event"] == "backend_error"], "it was treated as a retryable error"
    reserves = backend.reserves
    worker.stop(timeout=1)
    assert backend.reserves == reserves, "it kept reserving after it stopped"
