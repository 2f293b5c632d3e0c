"""Streamed delivery: credit-based flow control, leases that end, and the ``http://`` backend's stream.

The gateway runs on uvicorn on a thread of this process (a real socket) over a
memory backend with an injected clock, so lease ends are moved by hand.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from gateway_helpers import TOKEN, ThreadedGateway, wait_for
from jobchain_http import HttpBackend
from jobchain_http.streams import Hub, Stream

from jobchain import App, ManualClock, Plugins
from jobchain.memory import MemoryBackend
from jobchain.model import Delivery
from jobchain.testing import make_job, reserve

AUTH = {"authorization": f"Bearer {TOKEN}"}


class RecordingHub(Hub):
    """A hub that remembers the most deliveries any stream ever had out unsettled."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.most_outstanding = 0

    def track(self, deliveries: Any, stream: Stream | None = None) -> None:
        super().track(deliveries, stream)
        if stream is not None:
            self.most_outstanding = max(self.most_outstanding, len(stream.outstanding))


@pytest.fixture
def store(clock: ManualClock) -> MemoryBackend:
    return MemoryBackend(clock=clock)


@pytest.fixture
def hub(store: MemoryBackend) -> RecordingHub:
    return RecordingHub(store, ping_interval=0.1)


@pytest.fixture
def gateway(store: MemoryBackend, hub: RecordingHub) -> Iterator[ThreadedGateway]:
    gw = ThreadedGateway(store, token=TOKEN, hub=hub, ping_interval=0.1)
    yield gw
    gw.stop()


class StreamReader:
    """Reads a ``/v1/stream`` response line by line."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.lines = response.iter_lines()

    def next(self) -> dict[str, Any]:
        while True:
            line = next(self.lines)
            if line:
                message: dict[str, Any] = json.loads(line)
                return message

    def next_delivery(self) -> dict[str, Any]:
        while True:
            message = self.next()
            if message["type"] == "delivery":
                return message

    def until_ping(self) -> list[dict[str, Any]]:
        """Every delivery sent before the next ping (a ping is sent only when the stream is idle)."""
        got = []
        while True:
            message = self.next()
            if message["type"] == "ping":
                return got
            if message["type"] == "delivery":
                got.append(message)


def open_stream(client: httpx.Client, **params: Any) -> Any:
    return client.stream("GET", "/v1/stream", params=params, timeout=30)


def settle_completed(client: httpx.Client, message: dict[str, Any]) -> bool:
    d = message["delivery"]
    outcome = {
        "job_id": d["job"]["id"],
        "token": d["token"],
        "outcome": "completed",
        "result": None,
        "started_at": 1.0,
        "finished_at": 1.0,
    }
    answer = client.post("/v1/settle", json={"outcomes": [outcome]}).json()
    return bool(answer["results"][0]["accepted"])


def test_stream_never_has_more_than_prefetch_unsettled(
    gateway: ThreadedGateway, store: MemoryBackend, clock: ManualClock
) -> None:
    """With 10 jobs ready and prefetch 3, the stream sends 3, then one more per settle, never a 4th early."""
    store.enqueue([make_job(clock) for _ in range(10)])
    with (
        httpx.Client(base_url=gateway.url, headers=AUTH) as client,
        open_stream(client, prefetch=3, lease=30, worker="w") as response,
    ):
        reader = StreamReader(response)
        hello = reader.next()
        assert (hello["type"], hello["prefetch"]) == ("hello", 3)
        first = reader.until_ping()
        assert len(first) == 3
        assert reader.until_ping() == []  # idle: out of credit, although 7 jobs are ready
        assert settle_completed(client, first[0])
        more = reader.until_ping()
        assert len(more) == 1
        for message in first[1:] + more:
            assert settle_completed(client, message)
        assert len(reader.until_ping()) == 3


def test_unsettled_streamed_delivery_returns_when_its_lease_ends(
    gateway: ThreadedGateway, store: MemoryBackend, clock: ManualClock
) -> None:
    """A streamed job left unsettled is held for its lease, no longer (the stream extends nothing),
    and then no longer counts against the stream's credit: it is delivered again."""
    job = make_job(clock)
    store.enqueue([job])
    with (
        httpx.Client(base_url=gateway.url, headers=AUTH) as client,
        open_stream(client, prefetch=1, lease=10, worker="w") as response,
    ):
        reader = StreamReader(response)
        first = reader.next_delivery()["delivery"]
        assert first["delivery_count"] == 1
        clock.advance(9.0)
        assert reader.until_ping() == []  # alive and idle: out of credit
        assert reserve(store, worker="w-2") == []  # and the job is still leased
        clock.advance(2.0)
        second = reader.next_delivery()["delivery"]
        assert (second["job"]["id"], second["delivery_count"]) == (job.id, 2)
        assert second["token"] != first["token"]


def test_dropped_stream_leaves_its_deliveries_settleable(
    gateway: ThreadedGateway, store: MemoryBackend, clock: ManualClock
) -> None:
    """A worker whose stream dropped can still complete what it was sent: the gateway releases nothing."""
    store.enqueue([make_job(clock) for _ in range(2)])
    with httpx.Client(base_url=gateway.url, headers=AUTH) as client:
        with open_stream(client, prefetch=2, lease=30, worker="w") as response:
            reader = StreamReader(response)
            sent = [reader.next_delivery(), reader.next_delivery()]
        wait_for(lambda: not gateway.app.gateway.hub.streams, 10, "the gateway to notice the dropped stream")
        assert all(settle_completed(client, message) for message in sent)
    stats = {s.queue: s for s in store.stats()}["default"]
    assert (stats.ready, stats.in_flight) == (0, 0)


def test_http_backend_streams_to_a_worker_within_its_prefetch(
    gateway: ThreadedGateway, store: MemoryBackend, hub: RecordingHub, clock: ManualClock
) -> None:
    """A Worker on http:// runs 300 jobs through one stream, which never had more than prefetch out."""
    backend = HttpBackend(gateway.url, token=TOKEN, prefetch=4)
    app = App(backend, clock=clock, plugins=Plugins(entry_points=False))
    done: list[int] = []

    @app.task
    def note(n: int) -> None:
        done.append(n)

    note.submit_many([(n,) for n in range(300)])
    worker = app.worker(concurrency=4, poll=0.5, prefetch=2).start()
    try:
        assert worker.drain(60)
    finally:
        worker.stop(10)
        backend.close()
    assert sorted(done) == list(range(300))
    assert hub.most_outstanding == 4
    wait_for(lambda: not hub.streams, 10, "the worker's stream to end with it")


def test_stream_reader_hands_back_what_it_holds_when_closed(
    gateway: ThreadedGateway, store: MemoryBackend, clock: ManualClock
) -> None:
    """Deliveries buffered by the http:// backend but never taken are released when it closes."""
    store.enqueue([make_job(clock) for _ in range(5)])
    backend = HttpBackend(gateway.url, token=TOKEN, prefetch=5)
    got: list[Delivery] = backend.reserve(["default"], limit=1, lease=30, worker="w", wait=5)
    assert len(got) == 1
    wait_for(lambda: store.stats()[0].in_flight == 5, 10, "the stream to fill its credit")
    backend.close()
    stats = store.stats()[0]
    assert (stats.ready, stats.in_flight) == (4, 1)
