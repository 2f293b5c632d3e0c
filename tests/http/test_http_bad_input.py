"""Input no backend can store is refused with a 4xx, and a request that fails never has its body logged."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import httpx
import pytest
import structlog
from gateway_helpers import ThreadedGateway, wait_for
from structlog.testing import capture_logs

from jobchain.cli.logs import configure_logging
from jobchain.memory import MemoryBackend
from jobchain.model import ChainRecord, Job

JSON = {"content-type": "application/json"}


class ExplodingBackend(MemoryBackend):
    """A backend whose enqueue fails with a bug that quotes what it was given."""

    def enqueue(self, jobs: Sequence[Job], chains: Sequence[ChainRecord] = ()) -> None:
        secret_local = jobs[0].args  # noqa: F841 - a local variable a traceback renderer could show
        raise RuntimeError(f"bug while storing {jobs[0].args!r}")


@pytest.fixture(scope="module")
def gateway() -> Iterator[ThreadedGateway]:
    served = ThreadedGateway(MemoryBackend())
    yield served
    served.stop()


@pytest.fixture
def fresh(gateway: ThreadedGateway) -> ThreadedGateway:
    gateway.use(MemoryBackend())
    return gateway


def test_a_lone_surrogate_in_a_job_is_refused_with_400_naming_where(fresh: ThreadedGateway) -> None:
    """A job whose argument holds "\\ud800" gets 400 with the JSON path of the string; nothing is stored."""
    body = b'{"jobs":[{"id":"j1","task":"t","args":["SECRET\\ud800"],"enqueued_at":1.0}]}'
    with capture_logs() as logs:
        answer = httpx.post(f"{fresh.url}/v1/enqueue", content=body, headers=JSON)
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert (error["code"], error["path"]) == ("bad_json", "$.jobs[0].args[0]")
    assert "surrogate" in error["message"]
    assert httpx.get(f"{fresh.url}/v1/jobs/j1").status_code == 404
    assert "SECRET" not in repr(logs)


def test_a_lone_surrogate_in_a_key_or_a_worker_name_is_refused(fresh: ThreadedGateway) -> None:
    """Keys and every other string of a body are checked too."""
    beat = b'{"info":{"name":"w\\udc80","started_at":1,"heartbeat_at":1},"ttl":10}'
    answer = httpx.put(f"{fresh.url}/v1/workers/w", content=beat, headers=JSON)
    assert (answer.status_code, answer.json()["error"]["path"]) == (400, "$.info.name")
    keyed = b'{"jobs":[{"id":"j2","task":"t","kwargs":{"k\\ud800":1},"enqueued_at":1.0}]}'
    answer = httpx.post(f"{fresh.url}/v1/enqueue", content=keyed, headers=JSON)
    assert (answer.status_code, answer.json()["error"]["path"]) == (400, "$.jobs[0].kwargs")


def test_a_failing_request_is_logged_without_its_body_or_locals(gateway: ThreadedGateway) -> None:
    """An unexpected error answers 500 and logs its type and frames: no body, no locals, no message."""
    gateway.use(ExplodingBackend())
    body = b'{"jobs":[{"id":"j3","task":"t","args":["SECRET-ARG"],"enqueued_at":1.0}]}'
    with capture_logs() as logs:
        answer = httpx.post(f"{gateway.url}/v1/enqueue", content=body, headers=JSON)
        # logged once the answer went out (Starlette raises the error again after its handler answered)
        wait_for(lambda: any(e["event"] == "request_failed" for e in logs), 10.0, "the failure to be logged")
    assert answer.status_code == 500
    assert "SECRET" not in answer.text
    [entry] = [e for e in logs if e["event"] == "request_failed"]
    assert entry["error_type"] == "RuntimeError"
    assert any("in enqueue" in frame for frame in entry["where"])
    assert "exc_info" not in entry
    assert "SECRET" not in repr(logs)


@pytest.mark.parametrize("fmt", ["console", "json"])
def test_logged_tracebacks_show_no_local_variables(fmt: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The CLI's log configuration (the gateway's too) renders tracebacks without local variables."""
    configure_logging("info", fmt)
    try:
        try:
            secret_local = "SECRET-LOCAL"  # noqa: F841 - what a locals-printing traceback would show
            raise RuntimeError("boom")
        except RuntimeError:
            structlog.get_logger("test").error("failed", exc_info=True)
    finally:
        structlog.reset_defaults()
    err = capsys.readouterr().err
    assert "RuntimeError" in err
    assert "SECRET-LOCAL" not in err
