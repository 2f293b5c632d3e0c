"""examples/fastapi_app.py: a chain per request, awaited, through FastAPI's ASGI app and a worker.

On the memory backend and a real Redis (the asyncio client of redis-lists://),
requests go through ``httpx.AsyncClient`` over ``ASGITransport``: many at
once, a failing chain (502), a chain not done in time (504), the status route.
"""

from __future__ import annotations

import asyncio
import importlib.util
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from jobchain.memory import MemoryBackend

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "fastapi_app.py"


def _load() -> ModuleType:
    """A fresh copy of the example module (its own App)."""
    spec = importlib.util.spec_from_file_location(f"fastapi_app_{uuid.uuid4().hex}", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(params=["memory", "redis-lists"])
def example(request: pytest.FixtureRequest) -> Iterator[ModuleType]:
    module = _load()
    if request.param == "memory":
        module.app.use_backend(MemoryBackend())
    else:
        from jobchain_redis import ListsBackend

        url = request.getfixturevalue("redis_server_url").replace("redis://", "redis-lists://")
        module.app.use_backend(ListsBackend.from_url(f"{url}?prefix=fastapi-{uuid.uuid4().hex[:8]}"))
    yield module
    backend = module.app.backend
    if hasattr(backend, "delete_everything"):
        backend.delete_everything()
    module.app.close()


async def _get(module: ModuleType, *paths: str) -> list[httpx.Response]:
    transport = httpx.ASGITransport(app=module.api)
    async with httpx.AsyncClient(transport=transport, base_url="http://example.test") as client:
        responses = await asyncio.gather(*(client.get(path) for path in paths))
    await module.app.close_async()
    return list(responses)


def test_each_request_submits_a_chain_and_awaits_it(example: ModuleType) -> None:
    """Fifty requests at once: each gets its own chain's result."""
    worker = example.app.worker(concurrency=8)
    worker.start()
    try:
        responses = asyncio.run(_get(example, *(f"/report/{n}" for n in range(1, 51))))
    finally:
        worker.stop()
    bodies: list[dict[str, Any]] = [r.json() for r in responses]
    assert [r.status_code for r in responses] == [200] * 50
    assert [b["result"]["sum"] for b in bodies] == [sum(i * i for i in range(1, n + 1)) for n in range(1, 51)]
    assert len({b["chain"] for b in bodies}) == 50
    [status] = asyncio.run(_get(example, f"/chains/{bodies[2]['chain']}"))
    assert status.json()["state"] == "succeeded"
    assert status.json()["rendered"] == "numbers (succeeded) -> squares (succeeded) -> report (succeeded)"


def test_a_failed_chain_is_a_502_naming_the_step(example: ModuleType) -> None:
    """n=0: the report step fails; the response says which step and why."""
    worker = example.app.worker(concurrency=2)
    worker.start()
    try:
        [response] = asyncio.run(_get(example, "/report/0"))
    finally:
        worker.stop()
    assert response.status_code == 502
    detail = response.json()["detail"]
    assert detail["failed_step"] == 2
    assert "nothing to report" in detail["error"]


def test_a_chain_not_done_in_time_is_a_504_with_its_id(example: ModuleType) -> None:
    """No worker: the wait times out and the response names the chain, still pending."""
    [response, missing] = asyncio.run(_get(example, "/report/3?timeout=0.05", "/chains/nope"))
    assert response.status_code == 504
    assert response.json()["detail"]["status"] == "pending"
    assert missing.status_code == 404
