"""A gateway over a backend without a capability answers its endpoints 501 not_supported, in JSON."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("jobchain_http", reason="pip install -e plugins/http[test]")

import httpx
from jobchain_http.gateway import GatewayApp, GatewayConfig, create_app

ROOT = Path(__file__).resolve().parents[2]


def _minimal_backend() -> type:
    spec = importlib.util.spec_from_file_location("minimal_backend", ROOT / "examples" / "minimal_backend.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["minimal_backend"] = module
    spec.loader.exec_module(module)
    return module.MinimalBackend  # type: ignore[no-any-return]


@pytest.fixture
def gateway() -> Iterator[GatewayApp]:
    backend = _minimal_backend()()
    yield create_app(GatewayConfig(backend=backend))
    backend.close()


def _request(app: GatewayApp, method: str, path: str, body: object = None) -> httpx.Response:
    async def send() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
            return await client.request(method, path, json=body)

    return asyncio.run(send())


@pytest.mark.parametrize(
    ("method", "path", "body", "capability"),
    [
        ("GET", "/v1/failed", None, "FailedQueue"),
        ("GET", "/v1/failed/j-1", None, "FailedQueue"),
        ("POST", "/v1/failed/redrive", {"ids": ["j-1"]}, "FailedQueue"),
        ("POST", "/v1/failed/purge", {}, "FailedQueue"),
        ("GET", "/v1/workers", None, "WorkerRegistry"),
        ("DELETE", "/v1/workers/w-1", None, "WorkerRegistry"),
        ("POST", "/v1/workers/w-1/stop", None, "WorkerRegistry"),
        ("GET", "/v1/stats", None, "Stats"),
        ("GET", "/v1/lines/q", None, "Stats"),
        ("POST", "/v1/queues/pause", {"queues": ["q"]}, "Pause"),
        ("POST", "/v1/queues/resume", {"queues": ["q"]}, "Pause"),
        ("GET", "/v1/queues/paused", None, "Pause"),
        ("GET", "/v1/jobs?queue=q&state=ready", None, "Browse"),
        ("GET", "/v1/counts?queue=q", None, "Browse"),
        (
            "POST",
            "/v1/enqueue-unique",
            {"jobs": [{"id": "j-1", "task": "t", "enqueued_at": 1.0, "unique": "k"}], "keys": ["k"]},
            "Uniqueness",
        ),
        ("POST", "/v1/jobs/cancel", {"ids": ["j-1"]}, "Cancel"),
        ("POST", "/v1/jobs/cancel-requested", {"ids": ["j-1"]}, "Cancel"),
        ("POST", "/v1/queues/purge", {"queue": "q"}, "Cancel"),
        ("GET", "/v1/schedules?name=a&name=b", None, "ScheduleSlots"),
        ("POST", "/v1/schedules/mark", {"schedule": "a", "slot": 60.0, "job_id": "j-1"}, "ScheduleSlots"),
        ("POST", "/v1/schedules/pause", {"name": "a"}, "ScheduleSlots"),
        ("POST", "/v1/schedules/resume", {"name": "a"}, "ScheduleSlots"),
    ],
)
def test_an_endpoint_of_a_missing_capability_is_501(
    gateway: GatewayApp, method: str, path: str, body: object, capability: str
) -> None:
    response = _request(gateway, method, path, body)
    assert response.status_code == 501
    error = response.json()["error"]
    assert (error["status"], error["code"], error["capability"]) == (501, "not_supported", capability)
    assert error["message"].startswith("minimal:// does not support ")


def test_the_core_endpoints_still_work(gateway: GatewayApp) -> None:
    assert _request(gateway, "GET", "/v1/jobs/nope").status_code == 404
    assert _request(gateway, "GET", "/v1/time").status_code == 200


def test_the_http_client_raises_not_supported_for_a_501(gateway: GatewayApp) -> None:
    """The http:// client turns the gateway's 501 into NotSupportedError naming the capability."""
    from jobchain_http import HttpBackend

    from jobchain.errors import BackendUnavailableError, NotSupportedError

    with httpx.Client(transport=_SyncASGI(gateway), base_url="http://gw") as client:
        backend = HttpBackend("http://gw", client=client, delivery="poll")
        with pytest.raises(NotSupportedError, match="capability FailedQueue") as caught:
            backend.failed()
        assert not isinstance(caught.value, BackendUnavailableError)
        assert caught.value.capability == "FailedQueue"
        with pytest.raises(NotSupportedError, match="capability ScheduleSlots"):
            backend.schedule_states(["a"])


class _SyncASGI(httpx.BaseTransport):
    """Serve a synchronous httpx client from the ASGI app, one event loop per request."""

    def __init__(self, app: GatewayApp) -> None:
        self.app = app

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        async def send() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
                answer = await client.request(
                    request.method, str(request.url), headers=request.headers, content=request.read()
                )
                return httpx.Response(answer.status_code, headers=answer.headers, content=answer.content)

        return asyncio.run(send())
