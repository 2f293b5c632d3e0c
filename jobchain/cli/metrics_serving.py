"""``jobchain worker --metrics-port``: the options, and starting the ``/metrics`` endpoint.

One process: a :class:`jobchain.metrics.JobMetrics` on the App's plugins and
the backend's counts, served on a thread. With ``--processes N`` the parent
makes a private directory for prometheus_client's multi-process mode before
it starts the children (they inherit it through ``PROMETHEUS_MULTIPROC_DIR``
and each registers its own ``JobMetrics``), serves the sum of what they
wrote plus the backend's counts, tells prometheus_client when a child has
exited, and removes the directory at the end.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress
from typing import TYPE_CHECKING, Any, TypeVar

import click

from jobchain.cli.common import CliError

if TYPE_CHECKING:
    from jobchain.app import App
    from jobchain.metrics import MetricsServer, MultiprocessMetrics

__all__ = [
    "PoolMetrics",
    "check_metrics_options",
    "metrics_options",
    "serve_pool_metrics",
    "serve_worker_metrics",
]

F = TypeVar("F", bound=Callable[..., Any])


def metrics_options(fn: F) -> F:
    fn = click.option(
        "--metrics-host",
        metavar="HOST",
        default=None,
        help="Address the metrics endpoint binds to (default 127.0.0.1; 0.0.0.0 or :: for every interface).",
    )(fn)
    return click.option(
        "--metrics-port",
        type=click.IntRange(min=0, max=65535),
        default=None,
        metavar="PORT",
        help="Serve Prometheus metrics at http://HOST:PORT/metrics (0: any free port, printed); "
        "needs pip install 'jobchain[metrics]'.",
    )(fn)


def check_metrics_options(port: int | None, host: str | None) -> str:
    """The host to bind; a usage error for a host without a port or an empty host."""
    if host is not None and port is None:
        raise click.UsageError("--metrics-host needs --metrics-port")
    if host is not None and (not host.strip() or any(c.isspace() for c in host)):
        raise click.BadParameter(f"{host!r} is not a host name or address", param_hint="'--metrics-host'")
    if port is not None:
        _import_metrics()  # no prometheus_client: one line saying what to install, before anything starts
    return host or "127.0.0.1"


def _import_metrics() -> None:
    try:
        import jobchain.metrics  # noqa: F401
    except ImportError as exc:
        if exc.name == "prometheus_client":
            raise CliError(str(exc)) from None
        raise


def _serve(registry: Any, host: str, port: int) -> MetricsServer:
    from jobchain.metrics import serve

    try:
        server = serve(registry, host, port)
    except OSError as exc:  # in use, not an address of this host, does not resolve
        raise CliError(
            f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}",
            hint="choose another --metrics-port, or --metrics-host",
        ) from None
    click.echo(f"metrics at {server.url}", err=True)
    return server


def serve_worker_metrics(app: App, host: str, port: int) -> MetricsServer:
    """One worker process: its job events and the backend's counts, served on a thread."""
    from jobchain.metrics import worker_registry

    return _serve(worker_registry(app), host, port)


class PoolMetrics:
    """The parent of ``--processes``: the multi-process directory and the endpoint serving the sums."""

    def __init__(self, mp: MultiprocessMetrics, server: MetricsServer) -> None:
        self.mp = mp
        self.server = server

    def process_ended(self, pid: int) -> None:
        """Called on the pool's reader thread, which must not die of it: a file that will not go stays."""
        with suppress(OSError):
            self.mp.process_ended(pid)

    def close(self) -> None:
        self.server.close()
        self.mp.close()


def serve_pool_metrics(app: App, host: str, port: int) -> PoolMetrics:
    """Before the children start: the directory they write to, and the endpoint that sums them."""
    from jobchain.metrics import BackendCollector, MultiprocessMetrics

    mp = MultiprocessMetrics()
    try:
        registry = mp.registry()
        registry.register(BackendCollector(app))
        server = _serve(registry, host, port)
    except BaseException:
        mp.close()
        raise
    return PoolMetrics(mp, server)
