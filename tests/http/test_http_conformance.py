"""The core's conformance suite over the ``http://`` backend: a gateway in front of the memory backend.

Three ways: in process through httpx's ASGI transport (long polling,
the clock injected into the gateway's backend); through uvicorn on a thread of
this process (a real socket, streamed delivery, the clock still injected); and
once end to end against a real uvicorn process (tests/http/clocked_gateway.py),
whose clock the test moves through a shared file.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from clocked_gateway import SharedClock
from gateway_helpers import TOKEN, InProcessTransport, ThreadedGateway, process_env, stop_process
from jobchain_http import HttpBackend, create_app
from jobchain_http.gateway import GatewayConfig

from jobchain.clock import ManualClock
from jobchain.memory import MemoryBackend
from jobchain.testing import BackendConformance


class TestHttpOverAsgi(BackendConformance):
    """In process, long polling: every request goes through the whole ASGI application."""

    @pytest.fixture
    def backend(self, clock: ManualClock) -> Iterator[HttpBackend]:
        app = create_app(GatewayConfig(backend=MemoryBackend(clock=clock), token=TOKEN))
        transport = InProcessTransport(app)
        with httpx.Client(transport=transport, base_url="http://gateway.test") as client:
            backend = HttpBackend("http://gateway.test", client=client, token=TOKEN, delivery="poll")
            yield backend
            backend.close()
        transport.close()


@pytest.fixture(scope="module")
def threaded_gateway() -> Iterator[ThreadedGateway]:
    gateway = ThreadedGateway(MemoryBackend(), token=TOKEN)
    yield gateway
    gateway.stop()


class TestHttpStreamedOverUvicorn(BackendConformance):
    """Over a real socket with streamed delivery (workers reserve through the stream).

    One uvicorn server for the module; each test gets a fresh memory backend on its clock.
    """

    @pytest.fixture
    def backend(self, clock: ManualClock, threaded_gateway: ThreadedGateway) -> Iterator[HttpBackend]:
        threaded_gateway.use(MemoryBackend(clock=clock))
        backend = HttpBackend(threaded_gateway.url, token=TOKEN, delivery="stream")
        yield backend
        backend.close()


@pytest.fixture(scope="module")
def clocked_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A real uvicorn process (tests/http/clocked_gateway.py) and the file its clock reads."""
    clock_file = tmp_path_factory.mktemp("clock") / "clock"
    clock_file.write_bytes(bytes(8))
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("clocked_gateway.py")), str(clock_file), TOKEN],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=process_env(),
        text=True,
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        yield f"http://127.0.0.1:{port}", clock_file
    finally:
        stop_process(proc)
        if proc.stdout is not None:
            proc.stdout.close()


class TestHttpEndToEnd(BackendConformance):
    """Against a real uvicorn process, streamed delivery; the test's clock is shared through a file."""

    @pytest.fixture
    def clock(self, clocked_gateway: tuple[str, Path]) -> ManualClock:
        return SharedClock(str(clocked_gateway[1]))

    @pytest.fixture
    def backend(self, clock: ManualClock, clocked_gateway: tuple[str, Path]) -> Iterator[HttpBackend]:
        backend = HttpBackend(clocked_gateway[0], token=TOKEN)
        backend.request("POST", "/__test__/reset")
        yield backend
        backend.close()
