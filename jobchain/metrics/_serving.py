"""Serving ``/metrics``: an HTTP endpoint on a thread, an ASGI app, the multi-process parent's side."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from types import TracebackType
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_asgi_app, make_wsgi_app
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

__all__ = ["MULTIPROC_ENV", "MetricsServer", "MultiprocessMetrics", "asgi_app", "serve"]

#: the variable prometheus_client reads, when it is imported, to write its values to files
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

_NOT_FOUND = b"not found: the metrics are at /metrics\n"


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a scrape in progress does not hold the process at exit


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # one line per scrape is noise
        pass


def _wsgi(registry: CollectorRegistry) -> Callable[..., Iterable[bytes]]:
    metrics = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO", "") in ("/metrics", "/metrics/"):
            result: Iterable[bytes] = metrics(environ, start_response)
            return result
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [_NOT_FOUND]

    return app


class MetricsServer:
    """``GET /metrics`` of ``registry`` on ``host:port`` (port 0: any free one), served by a daemon thread.

    Binding happens in the constructor, so an address in use or a host that
    does not resolve raises :class:`OSError` at once. ``port`` is the port
    bound. :meth:`close` stops it.
    """

    def __init__(self, registry: CollectorRegistry, host: str = "127.0.0.1", port: int = 0) -> None:
        family, _, _, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        server_class = type("_Server", (_Server,), {"address_family": family})
        self._server: WSGIServer = make_server(
            str(address[0]), int(address[1]), _wsgi(registry), server_class, handler_class=_QuietHandler
        )
        self.host = host
        self.port: int = self._server.server_port
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="jobchain-metrics", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def serve(registry: CollectorRegistry, host: str = "127.0.0.1", port: int = 0) -> MetricsServer:
    """Serve ``registry`` at ``http://host:port/metrics`` until :meth:`MetricsServer.close`."""
    return MetricsServer(registry, host, port)


def asgi_app(registry: CollectorRegistry) -> Callable[..., Any]:
    """An ASGI app answering every GET with the text exposition of ``registry`` (mount it at ``/metrics``)."""
    app: Callable[..., Any] = make_asgi_app(registry)
    return app


class MultiprocessMetrics:
    """The supervising process's side of prometheus_client's multi-process mode.

    Creating it makes a private directory and sets ``PROMETHEUS_MULTIPROC_DIR``
    to it in this process's environment, which the worker processes started
    afterwards inherit (they must import prometheus_client after that: a
    ``spawn`` child imports everything afresh). Each writes its values to
    files there; :meth:`registry` sums them. Call :meth:`process_ended` with a
    child's pid once it has exited (its live gauges leave the sums, its
    counters and histograms stay), and :meth:`close` at the end: the previous
    value of the variable is restored and the directory removed.
    """

    def __init__(self) -> None:
        self.path = tempfile.mkdtemp(prefix="jobchain-metrics-")
        self._previous = os.environ.get(MULTIPROC_ENV)
        os.environ[MULTIPROC_ENV] = self.path

    def registry(self) -> CollectorRegistry:
        """A registry that sums what every worker process (live or ended) wrote."""
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.path)  # type: ignore[no-untyped-call]
        return registry

    def process_ended(self, pid: int) -> None:
        mark_process_dead(pid, self.path)  # type: ignore[no-untyped-call]

    def close(self) -> None:
        if os.environ.get(MULTIPROC_ENV) == self.path:
            if self._previous is None:
                del os.environ[MULTIPROC_ENV]
            else:
                os.environ[MULTIPROC_ENV] = self._previous
        shutil.rmtree(self.path, ignore_errors=True)

    def __enter__(self) -> MultiprocessMetrics:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
