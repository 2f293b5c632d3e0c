"""Chain records stored with the old state words still read, on every backend that stores them.

Before jobs, steps and chains shared one vocabulary, a chain ended ``completed``
or ``halted`` and a step ``completed``. Those words read as ``succeeded`` and
``failed`` wherever they were stored: a Redis key, a SQLite row, a gateway's
answer (an older gateway), and a record handed to the memory backend.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from jobchain import App
from jobchain.backend import Backend
from jobchain.errors import ChainHaltedError
from jobchain.memory import MemoryBackend
from jobchain.model import ChainRecord, ChainState, StepState

#: a chain that failed at its second step, in the old words ("halted", a "completed" step)
HALTED = {
    "v": 1,
    "id": "old-halted",
    "name": "pair",
    "kind": "chain",
    "state": "halted",
    "steps": [
        {"kind": "task", "members": [{"job_id": "h-1", "task": "step", "state": "completed", "result": 2}]},
        {
            "kind": "task",
            "members": [
                {
                    "job_id": "h-2",
                    "task": "step",
                    "state": "failed",
                    "error": {"type": "ValueError", "message": "bad", "attempt": 1, "at": 3.0},
                }
            ],
        },
    ],
    "created_at": 1.0,
    "finished_at": 3.0,
}

#: a chain that succeeded, in the old words
COMPLETED = {
    "v": 1,
    "id": "old-completed",
    "name": None,
    "kind": "group",
    "state": "completed",
    "steps": [
        {
            "kind": "group",
            "members": [
                {"job_id": "c-1", "task": "step", "state": "completed", "result": 10},
                {"job_id": "c-2", "task": "step", "state": "completed", "result": 20},
            ],
        }
    ],
    "created_at": 1.0,
    "finished_at": 2.0,
}

#: stores a raw chain record (its JSON text, as it was written) and returns a backend to read it with
Store = Callable[[dict[str, object]], Backend]


def _memory(tmp_path: Path) -> Iterator[Store]:
    backend = MemoryBackend()

    def store(raw: dict[str, object]) -> Backend:
        backend.enqueue([], [ChainRecord.from_wire(raw)])
        return backend

    yield store
    backend.close()


def _sqlite(tmp_path: Path) -> Iterator[Store]:
    pytest.importorskip("jobchain_sqlite", reason="pip install -e plugins/sqlite")
    from jobchain_sqlite import SqliteBackend

    path = str(tmp_path / "jobs.db")
    backend = SqliteBackend(path)

    def store(raw: dict[str, object]) -> Backend:
        with sqlite3.connect(path) as conn:
            conn.execute("INSERT INTO chains (id, record) VALUES (?, ?)", (raw["id"], json.dumps(raw)))
        conn.close()
        return backend

    yield store
    backend.close()


def _redis(kind: str) -> Callable[[Path], Iterator[Store]]:
    def make(tmp_path: Path) -> Iterator[Store]:
        pytest.importorskip("jobchain_redis", reason="pip install -e backends/redis")
        fakeredis = pytest.importorskip("fakeredis", reason="fakeredis is not installed")
        from jobchain_redis.lists import ListsBackend
        from jobchain_redis.streams import StreamsBackend

        cls = ListsBackend if kind == "lists" else StreamsBackend
        backend = cls(fakeredis.FakeRedis(decode_responses=True), prefix=f"w{uuid.uuid4().hex[:8]}")

        def store(raw: dict[str, object]) -> Backend:
            backend.client.set(backend.keys.chain(str(raw["id"])), json.dumps(raw, separators=(",", ":")))
            return backend

        yield store
        backend.delete_everything()
        backend.close()

    return make


def _old_gateway(tmp_path: Path) -> Iterator[Store]:
    """An older gateway: it answers ``GET /v1/chains/ID`` with the record as it has it, old words included."""
    pytest.importorskip("jobchain_http", reason="pip install -e plugins/http")
    from jobchain_http import HttpBackend

    records: dict[str, dict[str, object]] = {}

    def answer(request: httpx.Request) -> httpx.Response:
        chain_id = request.url.path.rsplit("/", 1)[-1]
        if request.url.path.startswith("/v1/chains/") and chain_id in records:
            return httpx.Response(200, json=records[chain_id])
        return httpx.Response(404, json={"error": "not found"})

    client = httpx.Client(transport=httpx.MockTransport(answer), base_url="http://gateway.test")
    backend = HttpBackend("http://gateway.test", client=client, delivery="poll")

    def store(raw: dict[str, object]) -> Backend:
        records[str(raw["id"])] = raw
        return backend

    yield store
    backend.close()
    client.close()


STORES = {
    "memory": _memory,
    "sqlite": _sqlite,
    "redis-lists": _redis("lists"),
    "redis-streams": _redis("streams"),
    "http": _old_gateway,
}


@pytest.fixture(params=sorted(STORES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    yield from STORES[request.param](tmp_path)


def test_a_halted_chain_reads_as_failed(store: Store) -> None:
    """``halted`` reads as ``failed``, a ``completed`` step as ``succeeded``; the handle raises as before."""
    backend = store(HALTED)
    record = backend.get_chain("old-halted")
    assert record is not None
    assert record.state is ChainState.FAILED
    assert record.finished
    assert [s.state for s in record.steps] == [StepState.SUCCEEDED, StepState.FAILED]
    assert record.render() == "step (succeeded) -> step (failed)"
    handle = App(backend=backend).chain("old-halted")
    assert handle.status() == "failed"
    with pytest.raises(ChainHaltedError, match="halted at step 2: ValueError: bad"):
        handle.result()


def test_a_completed_chain_reads_as_succeeded(store: Store) -> None:
    """``completed`` reads as ``succeeded``, with the result of its last step."""
    backend = store(COMPLETED)
    record = backend.get_chain("old-completed")
    assert record is not None
    assert (record.state, record.result) == (ChainState.SUCCEEDED, [10, 20])
    assert App(backend=backend).chain("old-completed").result() == [10, 20]


def test_the_old_member_names_are_aliases() -> None:
    """``COMPLETED`` and ``HALTED`` stay, naming the new states; the old words are never written."""
    assert ChainState.COMPLETED is ChainState.SUCCEEDED
    assert ChainState.HALTED is ChainState.FAILED
    assert StepState.COMPLETED is StepState.SUCCEEDED
    assert ChainState("halted") is ChainState.FAILED
    assert StepState("completed") is StepState.SUCCEEDED
    assert [s.value for s in ChainState] == ["pending", "running", "succeeded", "failed", "cancelled"]
    assert ChainRecord.from_wire(HALTED).to_wire()["state"] == "failed"
    with pytest.raises(ValueError):
        ChainState("finished")
