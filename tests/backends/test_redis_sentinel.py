"""Redis Sentinel: the ``+sentinel`` URL forms, and a real failover under load that loses nothing.

The URL tests need no server. The failover test starts its own Sentinel group
on loopback (a master, a replica, three Sentinels with quorum 2; see
``sentinel_proc.py``), two ``jobchain worker`` processes on the
``…+sentinel://`` URL and a client thread in the test submitting jobs and
three-step chains (about 100 submits a second), then runs
``SENTINEL FAILOVER mymaster`` mid-run, with the old master's writes held
(``CLIENT PAUSE … WRITE``) from just before the promotion until it has dropped
the promoted replica (``SentinelGroupProcess.failover(pause_writes=True)``).
Without that hold, what the old master acknowledged in the milliseconds
between the promotion and its seeing the replica's link close is lost by
Redis' asynchronous replication, whatever the client does: on a loaded
machine one such submit was lost in 11 of 40 runs (docs/operations.md,
"What asynchronous replication can lose"). Every submit (its key, when it was
tried, whether it was acknowledged) is recorded in the test, and every
execution in a file per worker process (``sentinel_app.py``): outside Redis.

Checked: lost 0 (every acknowledged submit ran and reached its outcome), no
job ran twice except one held by a worker at the failover, chains ran in
order, the client saw only ``BackendUnavailableError`` (never a raw Redis
error) and the client and each worker were working on the new master within
10 s of the ``SENTINEL FAILOVER`` (``FOLLOW_LIMIT``). The measured times are
printed (``pytest -s``) for docs/operations-sentinel.md.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

redis = pytest.importorskip("redis", reason="jobchain-redis is not installed (pip install -e backends/redis)")
jobchain_redis = pytest.importorskip("jobchain_redis", reason="jobchain-redis is not installed")

import sentinel_app  # noqa: E402
from jobchain_redis.connection import boundary, connect, parse_url, public_url  # noqa: E402
from jobchain_redis.sentinel import FollowingPool, SentinelGroup  # noqa: E402
from redis_proc import RedisUnavailable, read_runs, start_worker, stop_processes, wait_for  # noqa: E402
from sentinel_proc import SentinelGroupProcess  # noqa: E402

import jobchain  # noqa: E402
from jobchain.errors import BackendError, BackendUnavailableError, ConfigurationError  # noqa: E402
from jobchain.model import ChainState, JobState  # noqa: E402
from jobchain.plugins import default_plugins  # noqa: E402

APP_FILE = Path(sentinel_app.__file__).resolve()
WORKERS, THREADS = 2, 4
LEASE = 8.0
ORPHAN_IDLE = 4.0
#: seconds of submitting before the failover, and after it
BEFORE, AFTER = 2.0, 6.0
#: everyone works on the new master within this many seconds of SENTINEL FAILOVER
FOLLOW_LIMIT = 10.0


# --- URL forms (no server) --------------------------------------------------------------------


def test_sentinel_url_lists_the_sentinels_the_service_and_the_db() -> None:
    parsed = parse_url("redis-streams+sentinel://s1:26379,s2:26380,s3/mymaster/2")
    assert parsed.sentinels == (("s1", 26379), ("s2", 26380), ("s3", 26379))
    assert parsed.service == "mymaster"
    assert parsed.redis_url == "redis://localhost/2"
    assert not parsed.tls


def test_sentinel_url_db_defaults_to_0_and_ipv6_hosts_are_bracketed() -> None:
    parsed = parse_url("redis-lists+sentinel://[::1]:26379,[fe80::2]/cache")
    assert parsed.sentinels == (("::1", 26379), ("fe80::2", 26379))
    assert (parsed.service, parsed.redis_url) == ("cache", "redis://localhost/0")


def test_sentinel_url_options_split_between_jobchain_the_nodes_and_the_sentinels() -> None:
    parsed = parse_url(
        "rediss-lists+sentinel://app:s3cret@h1:1,h2:2/mymaster/3?prefix=p&band=0.5&socket_timeout=2"
        "&sentinel_username=sen&sentinel_password=sentpw&master_check=0.5"
    )
    assert parsed.tls
    assert parsed.options == {"prefix": "p", "band": "0.5"}
    assert parsed.sentinel_options == {
        "sentinel_username": "sen",
        "sentinel_password": "sentpw",
        "master_check": "0.5",
    }
    assert parsed.redis_url == "rediss://app:s3cret@localhost/3?socket_timeout=2"
    assert "s3cret" not in parsed.public
    assert "sentpw" not in parsed.public
    assert parsed.public.startswith("rediss-lists+sentinel://app:***@h1:1,h2:2/mymaster/3?")
    assert "sentinel_password=***" in parsed.public


def test_public_url_hides_a_password_given_as_an_option() -> None:
    assert public_url("redis-lists+sentinel://h:1/m?sentinel_password=x&prefix=a") == (
        "redis-lists+sentinel://h:1/m?sentinel_password=***&prefix=a"
    )
    assert public_url("redis-lists://h:1/0?prefix=a") == "redis-lists://h:1/0?prefix=a"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis-lists+sentinel://h1:26379", "path is /SERVICE"),
        ("redis-lists+sentinel://h1:26379/", "path is /SERVICE"),
        ("redis-lists+sentinel://h1:26379/m/x", "db in a +sentinel URL is a number"),
        ("redis-lists+sentinel://h1:26379/m/0/extra", "path is /SERVICE"),
        ("redis-lists+sentinel://h1:port/m", "bad Sentinel address"),
        ("redis-lists+sentinel://h1:70000/m", "bad Sentinel address"),
        ("redis-lists+sentinel://u:pw@/m", "lists the Sentinels"),
        ("redis-lists+sentinal://h1/m", "not a Redis backend URL"),
    ],
)
def test_bad_sentinel_urls_are_configuration_errors(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(message)) as info:
        parse_url(url)
    assert "pw" not in str(info.value)


def test_connect_builds_a_master_client_from_the_url_without_connecting() -> None:
    url = (
        "redis-lists+sentinel://app:pw@127.0.0.1:1,127.0.0.1:2/mymaster/4?socket_timeout=3"
        "&sentinel_password=spw&master_check=0.25&max_connections=7"
    )
    client = connect(parse_url(url))
    try:
        pool = client.connection_pool
        assert isinstance(pool, FollowingPool)
        assert pool.service_name == "mymaster"
        assert pool.master_check == 0.25
        assert pool.max_connections == 7
        kwargs = pool.connection_kwargs
        assert (kwargs["db"], kwargs["username"], kwargs["password"]) == (4, "app", "pw")
        assert kwargs["socket_timeout"] == 3.0
        assert kwargs["decode_responses"] is True
        group = pool.sentinel_manager
        assert isinstance(group, SentinelGroup)
        sentinels = [s.connection_pool.connection_kwargs for s in group.sentinels]
        assert [(s["host"], s["port"]) for s in sentinels] == [("127.0.0.1", 1), ("127.0.0.1", 2)]
        assert all(s["password"] == "spw" and s["socket_timeout"] == 3.0 for s in sentinels)
    finally:
        client.close()


@pytest.mark.parametrize("value", ["-1", "soon"])
def test_a_bad_master_check_is_a_configuration_error(value: str) -> None:
    with pytest.raises(ConfigurationError, match=r"master_check|could not convert"):
        connect(parse_url(f"redis-lists+sentinel://h:1/m?master_check={value}"))


def test_the_sentinel_schemes_are_registered() -> None:
    schemes = set(default_plugins().backends.schemes())
    for scheme in ("redis-lists", "redis-streams", "rediss-lists", "rediss-streams"):
        assert f"{scheme}+sentinel" in schemes


class _Refusing:
    """A stand-in backend whose call fails the way a demoted or replica-less master answers."""

    url = "redis-lists+sentinel://h:1/m"

    def __init__(self, client: Any, error: Exception) -> None:
        self.client = client
        self.error = error

    @boundary
    def call(self) -> None:
        raise self.error


@pytest.mark.parametrize(
    "error",
    [
        redis.exceptions.ReadOnlyError("You can't write against a read only replica."),
        redis.ResponseError("NOREPLICAS Not enough good replicas to write."),
        redis.ResponseError(
            "Command # 1 (RPUSH k v) of pipeline caused error: NOREPLICAS Not enough good replicas to write."
        ),
        redis.exceptions.MasterDownError("Link with MASTER is down"),
    ],
    ids=["READONLY", "NOREPLICAS", "NOREPLICAS-in-pipeline", "MASTERDOWN"],
)
def test_a_master_that_is_no_more_is_unavailable_and_its_connections_are_dropped(error: Exception) -> None:
    client = connect(parse_url("redis-lists+sentinel://127.0.0.1:1/m?master_check=60"))
    try:
        pool = client.connection_pool
        dropped: list[bool] = []
        pool.disconnect = lambda inuse_connections=True: dropped.append(inuse_connections)
        with pytest.raises(BackendUnavailableError, match="not a master"):
            _Refusing(client, error).call()
        assert dropped == [False]  # the idle connections go; the next call asks the Sentinels first
        assert pool._checked == float("-inf")
    finally:
        del pool.disconnect
        client.close()


def test_other_redis_errors_stay_backend_errors() -> None:
    client = redis.Redis()
    try:
        with pytest.raises(BackendError) as info:
            _Refusing(client, redis.ResponseError("WRONGTYPE Operation against a key")).call()
        assert not isinstance(info.value, BackendUnavailableError)
    finally:
        client.close()


# --- a real failover --------------------------------------------------------------------------


@pytest.fixture
def group(tmp_path: Path, redis_unavailable: Callable[[str], None]) -> Iterator[SentinelGroupProcess]:
    """This test's own master, replica and three Sentinels on loopback."""
    procs = SentinelGroupProcess(tmp_path / "sentinel")
    try:
        procs.start()
    except RedisUnavailable as exc:
        procs.close()
        redis_unavailable(str(exc))
    yield procs
    procs.close()


def _env(runs: Path, url: str) -> dict[str, str]:
    sources = [str(Path(m.__file__ or "").resolve().parents[1]) for m in (jobchain, jobchain_redis)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBCHAIN_")}
    env["PYTHONPATH"] = os.pathsep.join([*dict.fromkeys(sources), env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep
    )
    env["SENTINEL_TEST_RUNS"] = str(runs)
    env["SENTINEL_TEST_BACKEND"] = url
    env["SENTINEL_TEST_ORPHAN_IDLE"] = str(ORPHAN_IDLE)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _start_worker(index: int, url: str, runs: Path, log: Path) -> subprocess.Popen[bytes]:
    """``jobchain worker --config sentinel_app.py``; for streams the config opens the URL itself."""
    backend = None if url.startswith("redis-streams+") else url
    return start_worker(
        APP_FILE, f"sentinel-{index}", backend, threads=THREADS, lease=LEASE, env=_env(runs, url), log=log
    )


@dataclass
class Attempt:
    """One submit as the client saw it."""

    kind: str  # "job" or "chain"
    key: str
    tried: float
    answered: float
    handle: Any = None  # None if submit raised
    error: str | None = None  # the exception's type name
    buffered: bool = False  # accepted into the App's submit buffer, stored later


class Submitter:
    """Submits a job or a chain every ``interval`` seconds and records every attempt, in the test.

    A submit that returned is acknowledged: stored, or accepted into the App's
    submit buffer while the backend could not take it (the handle says
    ``buffered``); either way it must not be lost. A submit that raised is
    not acknowledged and never counts as lost; the next one uses a fresh key.
    """

    def __init__(self, app: Any, interval: float = 0.01) -> None:
        self.app = app
        self.interval = interval
        self.attempts: list[Attempt] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="submitter", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        assert not self._thread.is_alive(), "the submitter is stuck"

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            kind = "chain" if n % 5 == 0 else "job"
            key = f"{kind[0]}{n}"
            target = sentinel_app.three_steps(key) if kind == "chain" else sentinel_app.job.s(key)
            tried = time.time()
            try:
                handle = self.app.submit(target)
            except Exception as exc:  # recorded; the test asserts which kinds were seen
                self.attempts.append(Attempt(kind, key, tried, time.time(), error=type(exc).__name__))
            else:
                buffered = bool(getattr(handle, "buffered", False))
                self.attempts.append(Attempt(kind, key, tried, time.time(), handle, buffered=buffered))
            self._stop.wait(self.interval)

    @property
    def acknowledged(self) -> list[Attempt]:
        return [a for a in self.attempts if a.handle is not None]


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["redis-lists", "redis-streams"])
def test_a_sentinel_failover_loses_nothing_and_everyone_follows(
    scheme: str, group: SentinelGroupProcess, tmp_path: Path
) -> None:
    """SENTINEL FAILOVER under load: lost 0, no double outcome, chains in order, all follow in 10 s."""
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    url = group.url(scheme)
    old_port = group.master.port
    logs = [tmp_path / f"worker-{i}.log" for i in range(WORKERS)]
    app = sentinel_app.app
    app.use_backend(url)
    submitter = Submitter(app)
    try:
        procs = [_start_worker(i, url, runs_dir, log) for i, log in enumerate(logs)]
        try:
            names = {f"sentinel-{i}" for i in range(WORKERS)}
            wait_for(lambda: names <= {w.name for w in app.workers()}, 30, "the workers to register")
            submitter.start()
            time.sleep(BEFORE)
            assert read_runs(runs_dir), "nothing ran before the failover"
            failover_at = time.time()
            # a switchover that loses nothing Redis acknowledged: see the module's docstring
            writes_held = group.failover(pause_writes=True)
            switched = lambda: all(group.master_port(i) == group.replica.port for i in range(3))  # noqa: E731
            wait_for(switched, 15, "the switch")
            switched_at = time.time()
            time.sleep(max(0.0, failover_at + AFTER - time.time()))
            submitter.stop()
            assert [p.poll() for p in procs] == [None] * WORKERS, "a worker exited"

            acked = submitter.acknowledged
            for attempt in acked:  # buffered submits are stored once the client finds the new master
                if hasattr(attempt.handle, "wait_stored"):
                    attempt.handle.wait_stored(20)
            steps = ("first", "second", "third")
            expected = {("job", a.key) for a in acked if a.kind == "job"} | {
                (task, a.key) for a in acked if a.kind == "chain" for task in steps
            }

            def not_run() -> object:
                missing = expected - {(r["task"], r["key"]) for r in read_runs(runs_dir)}
                attempts = {a.key: a for a in acked}
                return [(task, attempts[key]) for task, key in sorted(missing)[:5]], len(missing)

            ran = lambda: expected <= {(r["task"], r["key"]) for r in read_runs(runs_dir)}  # noqa: E731
            wait_for(ran, 30, "every run", not_run)

            def settled() -> bool:
                for a in acked:
                    get = app.backend.get_job if a.kind == "job" else app.backend.get_chain
                    record: Any = get(a.handle.id)
                    if record is None or not (record.state.finished if a.kind == "job" else record.finished):
                        return False
                return True

            wait_for(settled, 20, "every acknowledged outcome to be settled")
            assert [p.poll() for p in procs] == [None] * WORKERS, "a worker exited"
        finally:
            if submitter._thread.is_alive():
                submitter.stop()
            codes = stop_processes(procs)
        output = [log.read_text(errors="replace") for log in logs]
        assert codes == [0] * WORKERS, output

        # every acknowledged submit reached its one outcome, the right one, on the new master
        for a in acked:
            if a.kind == "job":
                job_record = app.backend.get_job(a.handle.id)
                assert job_record is not None
                assert (job_record.state, job_record.result) == (JobState.SUCCEEDED, a.key)
            else:
                chain_record = app.backend.get_chain(a.handle.id)
                assert chain_record is not None
                assert chain_record.state is ChainState.COMPLETED, chain_record.render()
                assert chain_record.result == [a.key, "2", "3"]
        assert app.backend.client.connection_pool.master_address == ("127.0.0.1", group.replica.port)
    finally:
        app.use_backend("memory://")

    # the client saw the failover only as a buffered submit or BackendUnavailableError (with no
    # buffer), never a raw Redis error, and only after the failover began
    failures = [a for a in submitter.attempts if a.error is not None]
    assert {a.error for a in failures} <= {"BackendUnavailableError"}, Counter(a.error for a in failures)
    missed = [a for a in submitter.attempts if a.error is not None or a.buffered]
    assert all(a.answered >= failover_at for a in missed), "a submit failed before the failover"

    # executions, recorded outside Redis: every acknowledged submit ran (lost 0) ...
    runs = read_runs(runs_dir)
    counts = Counter((r["task"], r["key"]) for r in runs)
    lost = expected - set(counts)
    assert not lost, f"lost {len(lost)} acknowledged: {sorted(lost)[:10]}"
    # ... and none ran twice unless a worker held it across the failover
    twice = {k: n for k, n in counts.items() if n > 1}
    held = {
        (r["task"], r["key"])
        for r in runs
        if r["start"] <= switched_at + LEASE and r["end"] >= failover_at - 1
    }
    assert set(twice) <= held, twice

    # chains ran in order: no step started before its predecessor had finished
    starts: dict[tuple[str, str], float] = defaultdict(lambda: float("inf"))
    ends: dict[tuple[str, str], float] = defaultdict(lambda: float("inf"))
    for r in runs:
        key = (r["task"], r["key"])
        starts[key] = min(starts[key], r["start"])
        ends[key] = min(ends[key], r["end"])
    for a in acked:
        if a.kind == "chain":
            assert ends["first", a.key] <= starts["second", a.key]
            assert ends["second", a.key] <= starts["third", a.key]

    # everyone follows: the client once a submit is stored at once again after the last one it
    # could not store (buffered or refused); each worker at its first run of a job submitted after
    # that (such a job exists on the new master only: the old one refuses writes)
    last_missed = max((a.answered for a in missed), default=failover_at)
    client_back = min(a.answered for a in acked if a.tried >= last_missed and not a.buffered)
    ahead = {a.key for a in acked if a.tried >= client_back}
    worker_back = {
        pid: min((r["start"] for r in runs if r["pid"] == pid and r["key"] in ahead), default=float("inf"))
        for pid in {p.pid for p in procs}
    }
    follow = {"client": client_back - failover_at} | {
        f"worker {pid}": at - failover_at for pid, at in worker_back.items()
    }
    print(
        f"\n[{scheme}] writes held {writes_held:.2f}s, sentinels switched {switched_at - failover_at:.2f}s"
        + " after SENTINEL FAILOVER; "
        + ", ".join(f"{who} followed in {s:.2f}s" for who, s in follow.items())
        + f"; submits {len(submitter.attempts)}, acknowledged {len(acked)}"
        + f" (buffered {sum(a.buffered for a in acked)}), refused {len(failures)}"
        + f"; runs {len(runs)}, ran twice {len(twice)}, lost {len(lost)}"
    )
    assert max(follow.values()) <= FOLLOW_LIMIT, follow
    assert old_port != group.replica.port
    for text in output:
        assert "backend_error" not in text, text[-3000:]  # only ever "unavailable", never a raw error
