"""The gateway's browse routes: GET /v1/jobs pages a queue's jobs by state, GET /v1/counts; 400s."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("jobchain_http", reason="pip install -e plugins/http[test]")

import httpx
from jobchain_http.gateway import GatewayApp, GatewayConfig, create_app

from jobchain.clock import ManualClock
from jobchain.memory import MemoryBackend
from jobchain.testing import make_job, reserve_one


@pytest.fixture
def backend() -> MemoryBackend:
    return MemoryBackend(clock=ManualClock())


@pytest.fixture
def gateway(backend: MemoryBackend) -> GatewayApp:
    return create_app(GatewayConfig(backend=backend))


def _get(app: GatewayApp, path: str) -> httpx.Response:
    async def send() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
            return await client.get(path)

    return asyncio.run(send())


def test_a_page_and_the_next(gateway: GatewayApp, backend: MemoryBackend) -> None:
    """Pages follow the cursor, oldest first on order=oldest; a running job names its worker."""
    clock = backend.clock
    assert isinstance(clock, ManualClock)
    jobs = []
    for n in range(3):
        jobs.append(make_job(clock, "t", args=[n], queue="q"))
        clock.advance(1)
    backend.enqueue(jobs)
    first = _get(gateway, "/v1/jobs?queue=q&state=ready&limit=2&order=oldest").json()
    assert [r["job"]["id"] for r in first["records"]] == [jobs[0].id, jobs[1].id]
    rest = _get(gateway, f"/v1/jobs?queue=q&state=ready&limit=2&order=oldest&cursor={first['cursor']}").json()
    assert ([r["job"]["id"] for r in rest["records"]], rest["cursor"]) == ([jobs[2].id], None)
    reserve_one(backend, ["q"], worker="w-1")
    [running] = _get(gateway, "/v1/jobs?queue=q&state=running").json()["records"]
    assert running["worker"] == "w-1"
    counts = _get(gateway, "/v1/counts?queue=q").json()
    assert counts["queue"] == "q"
    by_state = counts["counts"]
    assert (by_state["queued"], by_state["running"], by_state["cancelled"]) == (2, 1, 0)


@pytest.mark.parametrize(
    ("query", "path"),
    [
        ("state=later", "state"),
        ("limit=0", "limit"),
        ("limit=100000", "limit"),
        ("cursor=zz", "cursor"),
        ("order=sideways", "order"),
    ],
)
def test_bad_parameters_are_400(gateway: GatewayApp, query: str, path: str) -> None:
    response = _get(gateway, f"/v1/jobs?queue=q&{query}")
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["path"]) == ("bad_query", path)
