"""Fixtures of the gateway's tests (helpers live in gateway_helpers.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytest.importorskip("jobchain_http", reason="pip install -e plugins/http[test]")

from gateway_helpers import TOKEN, GatewayProcess, process_env


@pytest.fixture
def start_gateway(tmp_path: Path) -> Iterator[Callable[..., GatewayProcess]]:
    """Start ``jobchain http serve ARGS`` (default: a token); all are stopped at teardown."""
    started: list[GatewayProcess] = []

    def start(*args: str, token: str | None = TOKEN, env: dict[str, str] | None = None) -> GatewayProcess:
        argv = list(args) + (["--token", token] if token else [])
        gateway = GatewayProcess(tmp_path / f"gateway-{len(started)}.log", argv, env or process_env())
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.stop()
