"""The CLI at the Redis backends' edges: URL mistakes, refused credentials and bytes that are not UTF-8.

Every command runs as a real ``jobchain`` subprocess. Each mistake must end as
one or two lines on stderr (``error: ...`` and perhaps a hint), a non-zero exit
code and no traceback; a refused password is an authentication failure at
once, not an outage waited out; and the read commands print what they cannot
decode instead of crashing. The servers are real: the session's redis-server,
and one started with ``requirepass`` for this module.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import forkserver
import pytest

Run = Callable[..., Any]
CONFIG = "examples/etl.py"
PASSWORD = "s3cret-pw"
#: bytes that are not UTF-8
BAD = b"\xff\xfe\xc3("

sys.path.append(str(Path(__file__).resolve().parents[1] / "backends"))  # redis_proc (no __init__ there)


@pytest.fixture
def redis_env(installed_cli_env: dict[str, str]) -> dict[str, str]:
    """The environment with jobchain-redis enabled and every other installed plugin disabled.

    Another plugin installed here (one under development that fails to load, say)
    would add its own warning line to stderr, which these tests count.
    """
    if importlib.util.find_spec("jobchain_redis") is None:
        pytest.skip("jobchain-redis is not installed (pip install -e backends/redis)")
    others = sorted(
        ep.name
        for ep in importlib.metadata.entry_points(group="jobchain")
        if ep.dist is not None and ep.dist.name not in ("jobchain", "jobchain-redis")
    )
    env = dict(installed_cli_env)
    if others:
        env["JOBCHAIN_DISABLE_PLUGINS"] = ",".join(others)
    return env


@pytest.fixture
def jobchain(jobchain: Run, redis_env: dict[str, str]) -> Run:
    """The conftest's runner, with the redis backends enabled."""

    def run(*args: str, **options: Any) -> Any:
        options.setdefault("env", redis_env)
        return jobchain(*args, **options)

    return run


def _one_error(result: Any, *fragments: str) -> None:
    """A failure shown as ``error: ...`` (and at most a hint line), naming ``fragments``, no traceback."""
    assert result.code == 1, result
    assert "Traceback" not in result.err, result
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert 1 <= len(lines) <= 2, result
    assert lines[0].startswith("error: "), result
    for fragment in fragments:
        assert fragment in result.err, result


@pytest.mark.parametrize(
    ("query", "fragments"),
    [
        ("redis-lists://127.0.0.1:6399/0?ssl_ca_cert=x", ["unknown option 'ssl_ca_cert'", "'ssl_ca_certs'"]),
        ("redis-streams://127.0.0.1:6399/0?sockt_timeout=2", ["unknown option 'sockt_timeout'", "prefix"]),
        ("redis-lists://127.0.0.1:6399/0?band=abc", ["band='abc'", "a number > 0"]),
        ("redis-streams://127.0.0.1:6399/0?orphan_idle=soon", ["orphan_idle='soon'"]),
        ("redis-lists://127.0.0.1:6399/0?socket_timeout=abc", ["socket_timeout"]),
        ("redis-lists://127.0.0.1:99999/0", ["bad port", "1 to 65535"]),
        ("rediss-lists://127.0.0.1:6399/0?ssl_ca_certs=/no/such/ca.pem", ["ssl_ca_certs='/no/such/ca.pem'"]),
        ("redis-lists://127.0.0.1:6399/0?ssl_ca_certs=/etc/hostname", ["is for TLS", "rediss-lists://"]),
    ],
    ids=["misspelt", "unknown", "band", "orphan-idle", "redis-py-value", "port", "ca-file", "tls-only"],
)
def test_url_mistakes_are_one_line_errors(jobchain: Run, query: str, fragments: list[str]) -> None:
    """A mistyped option, a bad number, a port out of range, a missing CA file: named, no traceback."""
    _one_error(jobchain("status", "-b", query), *fragments)


@pytest.fixture(scope="module")
def locked_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A redis-server of this module's own whose default user needs ``PASSWORD`` (requirepass)."""
    from redis_proc import RedisProcess, RedisUnavailable

    server = RedisProcess(tmp_path_factory.mktemp("locked-redis"), appendonly=False)
    try:
        server.start()
    except RedisUnavailable as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true and a real Redis is required: {exc}")
        pytest.skip(str(exc))
    admin = server.client()
    admin.config_set("requirepass", PASSWORD)
    admin.close()
    yield server
    server.close()


def _admin(server: Any) -> Any:
    return server.client(password=PASSWORD)


@pytest.mark.parametrize("scheme", ["redis-lists", "redis-streams"])
def test_wrong_password_is_an_authentication_error_at_once(
    jobchain: Run, locked_server: Any, scheme: str
) -> None:
    """A wrong or missing password: 'authentication failed' with a hint, no retries, no outage message."""
    for userinfo in (":wrong@", ""):
        url = f"{scheme}://{userinfo}127.0.0.1:{locked_server.port}/0"
        for args in (("status", "-b", url), ("submit", "-c", CONFIG, "-b", url, "etl")):
            started = time.monotonic()
            result = jobchain(*args)
            took = time.monotonic() - started
            _one_error(result, "authentication failed", "password")
            assert "could not be reached" not in result.err
            assert "is the server running" not in result.err
            assert took < 8.0, f"{args[0]} took {took:.1f}s: it retried a refused password"
    good = jobchain("status", "-b", f"{scheme}://:{PASSWORD}@127.0.0.1:{locked_server.port}/0")
    assert good.code == 0, good


def test_worker_with_a_wrong_password_exits_at_start(jobchain: Run, locked_server: Any) -> None:
    """`jobchain worker` does not start (and retry forever) on refused credentials: exit 1, one error."""
    url = f"redis-lists://:wrong@127.0.0.1:{locked_server.port}/0"
    result = jobchain("worker", "-c", CONFIG, "-b", url, timeout=30)
    assert result.code == 1, result
    assert "Traceback" not in result.err, result
    assert "error: authentication failed" in result.err, result
    several = jobchain("worker", "-c", CONFIG, "-b", url, "-p", "2", timeout=30)
    assert several.code == 1, several
    assert "Traceback" not in several.err, several
    assert "authentication failed" in several.err, several


@pytest.mark.parametrize("scheme", ["redis-lists", "redis-streams"])
def test_worker_exits_when_its_permissions_are_revoked(
    repo_root: Path, redis_env: dict[str, str], jobchain: Run, locked_server: Any, scheme: str
) -> None:
    """Credentials refused while a worker runs (an ACL change: NOPERM): it stops and exits 1 at once."""
    from jobchain_redis.keys import Keys

    user = f"jc{uuid.uuid4().hex[:8]}"
    admin = _admin(locked_server)
    admin.acl_setuser(
        user, enabled=True, passwords=[f"+{PASSWORD}"], keys=["*"], channels=["*"], commands=["+@all"]
    )
    url = f"{scheme}://{user}:{PASSWORD}@127.0.0.1:{locked_server.port}/0?prefix={user}"
    name = f"w-{user}"
    process = forkserver.popen(
        [
            sys.executable,
            "-m",
            "jobchain",
            "worker",
            "-c",
            CONFIG,
            "-b",
            url,
            "-n",
            name,
            "-j",
            "2",
            "--grace",
            "5",
        ],
        cwd=repo_root,
        env=redis_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while admin.zscore(Keys(user).workers, name) is None:
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() < deadline, "the worker did not register"
            time.sleep(0.05)
        admin.acl_setuser(user, enabled=True, commands=["-@all"], reset_keys=False)
        _, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        admin.acl_deluser(user)
        admin.close()
    assert process.returncode == 1, err
    assert "Traceback" not in err, err
    assert f"error: worker {name} stopped: authentication failed" in err, err


@pytest.fixture(params=["redis-lists", "redis-streams"])
def planted(request: pytest.FixtureRequest, redis_server_url: str) -> Iterator[tuple[str, str, str]]:
    """A backend URL whose queue holds bytes that are not UTF-8: (url, failed job id, ready job id).

    The failed job's stored error and the ready job's payload are not UTF-8, and
    a worker registration is garbled too.
    """
    if importlib.util.find_spec("jobchain_redis") is None:
        pytest.skip("jobchain-redis is not installed (pip install -e backends/redis)")
    import redis
    from jobchain_redis.lists import ListsBackend
    from jobchain_redis.streams import StreamsBackend

    from jobchain.clock import ManualClock
    from jobchain.testing import make_job

    prefix = f"cli{uuid.uuid4().hex[:10]}"
    url = redis_server_url.replace("redis://", f"{request.param}://") + f"?prefix={prefix}"
    kind = ListsBackend if request.param == "redis-lists" else StreamsBackend
    backend = kind.from_url(url)
    raw = redis.Redis.from_url(redis_server_url)
    clock = ManualClock(backend.now())
    failed, ready = make_job(clock, "extract"), make_job(clock, "extract")
    backend.enqueue([failed, ready])
    key = backend.keys.job(failed.id)
    raw.hset(key, mapping={"state": "failed", "error": b'{"type":"' + BAD + b'"}'})
    raw.zadd(backend.keys.failed_in("default"), {failed.id: backend.now()})
    raw.hset(backend.keys.job(ready.id), "job", b'{"v":1,"task":"' + BAD + b'"}')
    raw.set(backend.keys.worker("garbled"), BAD)
    raw.zadd(backend.keys.workers, {"garbled": backend.now() + 60})
    yield url, failed.id, ready.id
    backend.delete_everything()
    backend.close()
    raw.close()


def test_read_commands_print_undecodable_entries(jobchain: Run, planted: tuple[str, str, str]) -> None:
    """`status`, `failed list/show` and `workers` print what they cannot decode instead of crashing."""
    url, failed_id, ready_id = planted
    results: dict[tuple[str, ...], Any] = {}
    for args in (
        ("status", "-b", url),
        ("status", "-b", url, "--json"),
        ("status", "-b", url, failed_id),
        ("status", "-b", url, ready_id),
        ("failed", "list", "-b", url),
        ("failed", "list", "-b", url, "--json"),
        ("failed", "show", "-b", url, failed_id),
        ("workers", "-b", url),
    ):
        result = jobchain(*args)
        assert result.code == 0, (args, result)
        assert "Traceback" not in result.err, (args, result)
        results[args] = result
    listed = results[("failed", "list", "-b", url, "--json")].json()
    [entry] = [e for e in listed if e["id"] == failed_id]
    assert entry["error"]["type"] == "UnreadableJob"
    assert entry["raw"].startswith("base64:")
    shown = results[("failed", "show", "-b", url, failed_id)]
    assert "UnreadableJob" in shown.out
    assert "base64:" in shown.out
    assert "unreadable" in results[("workers", "-b", url)].out
    assert "UnreadableJob" in results[("status", "-b", url, ready_id)].out


def test_plain_redis_url_is_the_default_layout(jobchain: Run, redis_server_url: str) -> None:
    """``redis://`` is an alias of ``redis-lists://`` (the default layout), not "install jobchain-redis"."""
    prefix = f"alias{uuid.uuid4().hex[:10]}"
    plain = redis_server_url + f"?prefix={prefix}"
    lists = redis_server_url.replace("redis://", "redis-lists://") + f"?prefix={prefix}"
    submitted = jobchain("submit", "-c", CONFIG, "-b", plain, "extract", '["x"]')
    assert submitted.code == 0, submitted
    job_id = submitted.out.strip()
    seen = jobchain("status", "-b", lists, job_id)
    assert seen.code == 0, seen
    assert job_id in seen.out, seen
    listed = jobchain("backends")
    assert "rediss+cluster" in listed.out, listed
    assert "alias of redis-lists" in listed.out, listed
