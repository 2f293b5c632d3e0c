"""Submitting to a real Redis that goes away, fills up or may evict: nothing acknowledged is lost or doubled.

Each test starts its own redis-server on a free loopback port (``RedisProcess``,
stopped by its PID at teardown), so it may shut it down, reconfigure it or fill
it without touching the session's shared server. Both Redis backends.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

redis = pytest.importorskip("redis", reason="jobchain-redis is not installed (pip install -e backends/redis)")
pytest.importorskip("jobchain_redis", reason="jobchain-redis is not installed")

from jobchain_redis import plugin as redis_plugin  # noqa: E402
from redis_proc import RedisProcess, RedisUnavailable  # noqa: E402

from jobchain import (  # noqa: E402
    App,
    BackendFullError,
    BackendUnavailableError,
    ConfigurationError,
    JobHandle,
    Plugins,
    SubmitBuffer,
    SubmitBufferFullError,
)
from jobchain.backend import Backend  # noqa: E402

SCHEMES = ["redis-lists", "redis-streams"]
#: fast retries, so that the buffer drains within half a second of Redis' return
BUFFER = SubmitBuffer(retry_base=0.05, retry_cap=0.5)


def _plugins() -> Plugins:
    """Only the Redis backends' plugin, registered directly."""
    return Plugins(entry_points=False, plugins=[redis_plugin])


def _start(directory: Path, unavailable: Callable[[str], None], **options: Any) -> RedisProcess:
    proc = RedisProcess(directory, **options)
    try:
        proc.start()
    except RedisUnavailable as exc:
        unavailable(str(exc))
    return proc


@pytest.fixture
def server(tmp_path: Path, redis_unavailable: Callable[[str], None]) -> Iterator[RedisProcess]:
    """This test's own redis-server, with ``appendonly yes`` (``appendfsync always``), restartable."""
    proc = _start(tmp_path / "redis", redis_unavailable)
    yield proc
    proc.close()


@pytest.fixture
def scratch(tmp_path: Path, redis_unavailable: Callable[[str], None]) -> Iterator[RedisProcess]:
    """This test's own redis-server without persistence, to reconfigure (policy, maxmemory, ACL)."""
    proc = _start(tmp_path / "scratch", redis_unavailable, appendonly=False)
    yield proc
    proc.close()


@pytest.fixture
def apps() -> Iterator[Callable[..., App]]:
    """Make Apps with a task ``echo`` on a backend URL; all closed at teardown."""
    made: list[App] = []

    def make(url: str, buffer: SubmitBuffer | None = BUFFER) -> App:
        app = App(url, plugins=_plugins(), buffer=buffer)

        @app.task
        def echo(x: Any) -> Any:
            return x

        made.append(app)
        return app

    yield make
    for app in made:
        app.close(timeout=10)


def _url(server: RedisProcess, scheme: str, query: str = "") -> str:
    base = server.url.replace("redis://", f"{scheme}://", 1)
    return f"{base}?socket_timeout=3&socket_connect_timeout=2{'&' + query if query else ''}"


def _drain(backend: Backend) -> list[Any]:
    """The args of every job the backend holds, in the order it hands them out (each reserved once)."""
    seen: list[Any] = []
    while True:
        deliveries = backend.reserve(["default"], limit=200, lease=300, worker="checker")
        if not deliveries:
            return seen
        seen += [d.job.args[0] for d in deliveries]


# --- outages -------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", SCHEMES)
def test_submits_during_a_restart_are_stored_once_in_submit_order(
    server: RedisProcess, apps: Callable[..., App], scheme: str
) -> None:
    """Redis shut down for 5 s under 100 submits/s: every submit is stored once, in order, buffered too."""
    app = apps(_url(server, scheme))
    echo = app.tasks["echo"]
    made: list[tuple[int, JobHandle, bool]] = []
    errors: list[tuple[int, BaseException]] = []
    stop = threading.Event()

    def submitter() -> None:
        seq, due = 0, time.monotonic()
        while not stop.is_set():
            try:
                handle = echo.submit(seq)
                made.append((seq, handle, handle.buffered))
            except Exception as exc:  # recorded: the test fails on any
                errors.append((seq, exc))
            seq += 1
            due += 0.01
            time.sleep(max(0.0, due - time.monotonic()))

    thread = threading.Thread(target=submitter, name="submitter")
    thread.start()
    try:
        time.sleep(1.5)
        server.shutdown()
        time.sleep(5.0)
        server.start()
        time.sleep(1.5)
    finally:
        stop.set()
        thread.join(30)
    assert not errors, errors[:3]
    assert app.buffer is not None
    assert app.buffer.wait_empty(30), "the buffer did not drain"
    buffered = [h for _, h, was_buffered in made if was_buffered]
    assert len(buffered) >= 100, f"only {len(buffered)} submits were buffered during a 5 s outage"
    for _, handle, _ in made:
        handle.wait_stored(timeout=10)
    assert {h.status() for h in buffered} == {"queued"}  # buffered -> queued
    assert _drain(app.backend) == [seq for seq, _, _ in made]  # each stored once, in submit order


@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_full_buffer_during_an_outage_raises_at_the_limit_and_stores_exactly_the_accepted(
    server: RedisProcess, apps: Callable[..., App], scheme: str
) -> None:
    """With max_jobs=50 and Redis down, submit 51 raises SubmitBufferFullError; the 50 before are stored."""
    app = apps(_url(server, scheme), SubmitBuffer(max_jobs=50, retry_base=0.05, retry_cap=0.5))
    echo = app.tasks["echo"]
    for seq in range(10):
        echo.submit(seq)
    server.shutdown()
    accepted: list[JobHandle] = []
    refused: list[tuple[int, SubmitBufferFullError]] = []
    for seq in range(10, 90):
        try:
            accepted.append(echo.submit(seq))
        except SubmitBufferFullError as exc:
            refused.append((seq, exc))
    assert len(accepted) == 50
    assert [seq for seq, _ in refused] == list(range(60, 90))  # from the 51st buffered submit on
    assert {(exc.held_jobs, exc.max_jobs) for _, exc in refused} == {(50, 50)}
    assert {h.status() for h in accepted} == {"buffered"}
    server.start()
    assert app.buffer is not None
    assert app.buffer.wait_empty(30)
    assert {h.status() for h in accepted} == {"queued"}
    assert _drain(app.backend) == list(range(60))


@pytest.mark.parametrize("scheme", SCHEMES)
def test_submits_whose_replies_were_lost_are_stored_once(
    server: RedisProcess, apps: Callable[..., App], scheme: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A submit and a flush that reached Redis but lost their replies are retried without doubles."""
    app = apps(_url(server, scheme))
    backend = app.backend
    lost = {"enqueue_new": 1, "enqueue": 1}

    def losing(name: str) -> Callable[..., None]:
        real = getattr(backend, name)

        def call(*args: Any, **kwargs: Any) -> None:
            real(*args, **kwargs)  # written to Redis ...
            if lost[name]:
                lost[name] -= 1  # ... but the reply never arrives
                raise BackendUnavailableError(backend.url, "reset after the write (injected)")

        return call

    monkeypatch.setattr(backend, "enqueue_new", losing("enqueue_new"))
    monkeypatch.setattr(backend, "enqueue", losing("enqueue"))
    first = app.submit("echo", 0)
    rest = [app.submit("echo", seq) for seq in range(1, 20)]
    assert first.status() == "buffered"
    assert {h.status() for h in rest} == {"buffered"}
    assert app.buffer is not None
    assert app.buffer.wait_empty(30)
    assert lost == {"enqueue_new": 0, "enqueue": 0}
    assert {h.status() for h in [first, *rest]} == {"queued"}
    assert _drain(backend) == list(range(20))


# --- eviction policy -----------------------------------------------------------------


def _eviction_events(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in logs if str(e["event"]).startswith("redis_eviction_policy")]


@pytest.mark.parametrize("scheme", SCHEMES)
def test_an_evicting_policy_is_warned_about_once(
    scratch: RedisProcess, apps: Callable[..., App], scheme: str
) -> None:
    """maxmemory-policy allkeys-lru: the first submit logs a warning naming the policy and what is at risk."""
    scratch.client().config_set("maxmemory-policy", "allkeys-lru")
    app = apps(_url(scratch, scheme))
    with structlog.testing.capture_logs() as logs:
        first = app.submit("echo", 1)
        app.submit("echo", 2)
    assert first.status() == "queued"
    [event] = _eviction_events(logs)
    assert event["event"] == "redis_eviction_policy_unsafe"
    assert event["log_level"] == "warning"
    assert event["policy"] == "allkeys-lru"
    assert "queued jobs" in event["can_lose"]


@pytest.mark.parametrize("scheme", SCHEMES)
def test_an_evicting_policy_is_refused_with_eviction_refuse(
    scratch: RedisProcess, apps: Callable[..., App], scheme: str
) -> None:
    """?eviction=refuse: submits raise ConfigurationError naming the policy; nothing is stored or buffered."""
    scratch.client().config_set("maxmemory-policy", "allkeys-lru")
    app = apps(_url(scratch, scheme, "eviction=refuse"))
    for _ in range(2):
        with pytest.raises(ConfigurationError, match=r"maxmemory-policy allkeys-lru.*noeviction"):
            app.submit("echo", 1)
    assert app.buffer is not None
    assert len(app.buffer) == 0
    assert scratch.client().dbsize() == 0


@pytest.mark.parametrize(("policy", "mode"), [("noeviction", "warn"), ("allkeys-lru", "ignore")])
def test_no_warning_under_noeviction_or_with_eviction_ignore(
    scratch: RedisProcess, apps: Callable[..., App], policy: str, mode: str
) -> None:
    """noeviction is safe, and ?eviction=ignore does not look: no eviction log line, the submit is stored."""
    scratch.client().config_set("maxmemory-policy", policy)
    app = apps(_url(scratch, "redis-lists", f"eviction={mode}"))
    with structlog.testing.capture_logs() as logs:
        assert app.submit("echo", 1).status() == "queued"
    assert _eviction_events(logs) == []


def test_a_policy_the_acl_hides_is_logged_as_unchecked(
    scratch: RedisProcess, apps: Callable[..., App]
) -> None:
    """A user without CONFIG permission: the check is logged as not done, and submits work."""
    scratch.client().acl_setuser(
        "jobs", enabled=True, passwords=["+s3cret"], keys=["*"], channels=["*"], commands=["+@all", "-config"]
    )
    url = _url(scratch, "redis-streams").replace("://", "://jobs:s3cret@", 1)
    app = apps(url)
    with structlog.testing.capture_logs() as logs:
        assert app.submit("echo", 1).status() == "queued"
    [event] = _eviction_events(logs)
    assert event["event"] == "redis_eviction_policy_unchecked"
    assert "s3cret" not in str(event)


def test_an_unknown_eviction_mode_is_a_configuration_error(
    scratch: RedisProcess, apps: Callable[..., App]
) -> None:
    """?eviction=maybe names the accepted values."""
    app = apps(_url(scratch, "redis-lists", "eviction=maybe"))
    with pytest.raises(ConfigurationError, match="warn, refuse, ignore"):
        app.submit("echo", 1)


# --- out of memory -------------------------------------------------------------------


def _snapshot(client: Any) -> dict[bytes, bytes]:
    return {key: client.dump(key) for key in client.keys("*")}


@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_full_redis_refuses_a_submit_clearly_with_nothing_half_written(
    scratch: RedisProcess, apps: Callable[..., App], scheme: str
) -> None:
    """Under noeviction at maxmemory, a submit raises BackendFullError and its MULTI/EXEC applied nothing.

    maxmemory is set a little above what Redis uses, so the first commands of
    the transaction are queued and a later one is refused with OOM: Redis then
    discards the whole transaction (EXECABORT).
    """
    client = scratch.client()
    app = apps(_url(scratch, scheme))
    echo = app.tasks["echo"]
    echo.submit("before")
    before = _snapshot(client)
    client.config_resetstat()
    used = int(client.info("memory")["used_memory"])
    client.config_set("maxmemory", str(used + 200_000))
    try:
        with pytest.raises(BackendFullError, match="out of memory") as caught:
            app.submit_many([echo.s("x" * 2_000) for _ in range(400)])
        assert "maxmemory" in str(caught.value)
        stats = client.info("commandstats").get("cmdstat_hset", {})
        assert stats.get("calls", 0) == 0  # nothing executed ...
        assert 0 < stats.get("rejected_calls", 0) < 400  # ... though the first ones were queued
        assert client.info("errorstats").get("errorstat_EXECABORT", {}).get("count") == 1
        assert _snapshot(client) == before
        assert app.buffer is not None
        assert len(app.buffer) == 0
        client.config_set("maxmemory", str(used // 2))  # full before the first command
        with pytest.raises(BackendFullError):
            echo.submit("small")
        assert _snapshot(client) == before
    finally:
        client.config_set("maxmemory", "0")
    after = echo.submit("after")
    assert after.status() == "queued"
    assert _drain(app.backend) == ["before", "after"]
