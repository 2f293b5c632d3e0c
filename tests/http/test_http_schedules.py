"""The gateway's schedule routes: states in the order asked, a mark kept only when later, 400s and 422s."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("jobchain_http", reason="pip install -e plugins/http[test]")

import httpx
from gateway_helpers import InProcessTransport
from jobchain_http import HttpBackend
from jobchain_http.gateway import GatewayApp, GatewayConfig, create_app

from jobchain.memory import MemoryBackend


@pytest.fixture
def backend() -> MemoryBackend:
    return MemoryBackend()


@pytest.fixture
def gateway(backend: MemoryBackend) -> GatewayApp:
    return create_app(GatewayConfig(backend=backend))


def _request(app: GatewayApp, method: str, path: str, body: object = None) -> httpx.Response:
    async def send() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
            return await client.request(method, path, json=body)

    return asyncio.run(send())


def test_marks_pauses_and_states(gateway: GatewayApp, backend: MemoryBackend) -> None:
    """Each POST answers the state after it; an older mark changes nothing; GET keeps the order asked."""
    mark = {"schedule": "a", "slot": 120, "job_id": "j120"}
    first = _request(gateway, "POST", "/v1/schedules/mark", mark).json()
    assert first == {"name": "a", "last_slot": 120.0, "last_job": "j120", "paused": False}
    older = _request(gateway, "POST", "/v1/schedules/mark", {**mark, "slot": 60, "job_id": "j60"}).json()
    assert older["last_job"] == "j120"
    assert _request(gateway, "POST", "/v1/schedules/pause", {"name": "a"}).json()["paused"] is True
    answer = _request(gateway, "GET", "/v1/schedules?name=b&name=a").json()
    assert [(s["name"], s["last_slot"], s["paused"]) for s in answer["schedules"]] == [
        ("b", None, False),
        ("a", 120.0, True),
    ]
    assert _request(gateway, "POST", "/v1/schedules/resume", {"name": "a"}).json()["paused"] is False
    assert backend.schedule_states(["a"])[0].paused is False
    assert _request(gateway, "GET", "/v1/schedules").json() == {"schedules": []}


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("name=", "1 to 200 characters"),
        ("name=" + "x" * 201, "1 to 200 characters"),
        ("&".join(f"name=s{n}" for n in range(101)), "at most 100 names"),
    ],
)
def test_bad_names_are_400(gateway: GatewayApp, query: str, message: str) -> None:
    response = _request(gateway, "GET", f"/v1/schedules?{query}")
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["path"]) == ("bad_query", "name")
    assert message in error["message"]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/schedules/mark", {"schedule": "a", "slot": 1.0}),
        ("/v1/schedules/mark", {"schedule": "", "slot": 1.0, "job_id": "j"}),
        ("/v1/schedules/mark", {"schedule": "a", "slot": "soon", "job_id": "j"}),
        ("/v1/schedules/mark", {"schedule": "a", "slot": 1e300, "job_id": "j"}),
        ("/v1/schedules/pause", {"name": ""}),
        ("/v1/schedules/resume", {}),
    ],
)
def test_bad_bodies_are_422_and_change_nothing(
    gateway: GatewayApp, backend: MemoryBackend, path: str, body: object
) -> None:
    response = _request(gateway, "POST", path, body)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid"
    assert backend.schedule_states(["a"])[0].last_slot is None


def test_the_client_asks_for_many_names_in_chunks(gateway: GatewayApp, backend: MemoryBackend) -> None:
    """More names than one GET takes: the http:// backend splits them and keeps the order."""
    names = [f"s{n}" for n in range(130)]
    backend.mark_slot("s129", 5.0, "j")
    transport = InProcessTransport(gateway)
    with httpx.Client(transport=transport, base_url="http://gw") as client:
        http = HttpBackend("http://gw", client=client, delivery="poll")
        states = http.schedule_states(names)
        http.close()
    transport.close()
    assert [s.name for s in states] == names
    assert states[-1].last_slot == 5.0
