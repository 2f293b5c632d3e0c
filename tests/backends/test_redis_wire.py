"""The lean pipeline of the hot paths answers exactly as redis-py's own, on a real server and fakeredis."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

redis = pytest.importorskip("redis", reason="jobchain-redis is not installed (pip install -e backends/redis)")
fakeredis = pytest.importorskip("fakeredis")

from jobchain_redis._wire import LeanPipeline, lean_pipeline  # noqa: E402


@pytest.fixture(params=["real", "fake"])
def client(request: pytest.FixtureRequest) -> Iterator[Any]:
    if request.param == "real":
        url = request.getfixturevalue("redis_server_url")
        made = redis.Redis.from_url(url, decode_responses=True)
    else:
        made = fakeredis.FakeRedis(decode_responses=True)
    yield made
    made.close()


def _commands(pipe: Any, key: str) -> None:
    pipe.hset(f"{key}:h", mapping={"job": "x" * 300, "queue": "q", "n": 3})
    pipe.hincrby(f"{key}:h", "n", 2)
    pipe.hmget(f"{key}:h", "queue", "n", "missing")
    pipe.hgetall(f"{key}:h")
    pipe.zadd(f"{key}:z", {"a": 1.5, "b": 0.1}, nx=True)
    pipe.zrange(f"{key}:z", 0, -1, withscores=True)
    pipe.zrangebyscore(f"{key}:z", "-inf", 1, start=0, num=1)
    pipe.exists(f"{key}:h", f"{key}:none")
    pipe.xadd(f"{key}:s", {"id": "j1"}, id="1-1")
    pipe.xrevrange(f"{key}:s", count=1)
    pipe.xgroup_create(f"{key}:s", "g", id="0")  # a command name of two words (XGROUP CREATE)


@pytest.mark.parametrize("transaction", [True, False], ids=["multi", "plain"])
def test_replies_have_redis_py_shapes(client: Any, transaction: bool) -> None:
    replies = []
    for make in (
        lambda: client.pipeline(transaction=transaction),
        lambda: lean_pipeline(client, transaction=transaction),
    ):
        key = f"w{uuid.uuid4().hex[:8]}"
        pipe = make()
        _commands(pipe, key)
        replies.append(pipe.execute())
    assert isinstance(lean_pipeline(client, transaction=True), LeanPipeline)
    assert replies[1] == replies[0]
    assert replies[1][5] == [("b", 0.1), ("a", 1.5)]
    assert replies[1][2] == ["q", "5", None]


@pytest.mark.parametrize("transaction", [True, False], ids=["multi", "plain"])
def test_an_error_reply_is_raised_or_left_in_place(client: Any, transaction: bool) -> None:
    key = f"w{uuid.uuid4().hex[:8]}"
    client.set(key, "text")

    def build() -> Any:
        pipe = lean_pipeline(client, transaction=transaction)
        pipe.set(f"{key}:other", "1")
        pipe.hget(key, "f")  # WRONGTYPE
        pipe.get(f"{key}:other")
        return pipe

    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        build().execute()
    ok, error, value = build().execute(raise_on_error=False)
    assert ok is True
    assert isinstance(error, redis.ResponseError)
    assert value == "1"
    assert client.ping()  # the connection was left clean for the next user


def test_a_watched_key_that_changed_aborts_the_transaction(client: Any) -> None:
    key = f"w{uuid.uuid4().hex[:8]}"
    with lean_pipeline(client, transaction=True) as pipe:
        pipe.watch(key)
        client.set(key, "changed")
        pipe.multi()
        pipe.set(key, "mine")
        with pytest.raises(redis.WatchError):
            pipe.execute()
    assert client.get(key) == "changed"


def _fail_reads(monkeypatch: pytest.MonkeyPatch, after: int) -> list[int]:
    """The connection fails once ``after`` replies were read (the commands themselves went through)."""
    count = [0]
    real = redis.connection.AbstractConnection.read_response

    def read(self: Any, *args: Any, **kwargs: Any) -> Any:
        count[0] += 1
        if count[0] == after + 1:
            self.disconnect()
            raise redis.ConnectionError("connection reset (injected)")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(redis.connection.AbstractConnection, "read_response", read)
    return count


def test_a_connection_lost_in_a_watched_transaction_is_a_watch_error_and_nothing_is_resent(
    redis_server_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = redis.Redis.from_url(redis_server_url, decode_responses=True)
    key = f"w{uuid.uuid4().hex[:8]}"
    assert client.ping()  # the pooled connection is open: only the transaction's replies are counted
    pipe = lean_pipeline(client, transaction=True)
    pipe.multi()
    pipe.watching = True  # as jobchain_redis.connection.transact marks every transaction
    pipe.incr(key)
    with monkeypatch.context() as patch:
        _fail_reads(patch, after=2)  # MULTI's OK and QUEUED read; EXEC's reply lost
        with pytest.raises(redis.WatchError) as caught:
            pipe.execute()
    assert isinstance(caught.value.__context__, redis.ConnectionError)
    assert client.get(key) == "1"  # applied once: not re-sent
    client.close()


def test_a_plain_pipeline_that_lost_its_connection_is_sent_again(
    redis_server_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = redis.Redis.from_url(redis_server_url, decode_responses=True)
    key = f"w{uuid.uuid4().hex[:8]}"
    client.set(key, "v")
    pipe = lean_pipeline(client, transaction=False)
    pipe.get(key)
    pipe.exists(key)
    with monkeypatch.context() as patch:
        count = _fail_reads(patch, after=1)
        assert pipe.execute() == ["v", 1]
    assert count[0] > 3  # read again on a new connection
    client.close()


def test_a_cluster_client_keeps_its_own_pipeline() -> None:
    class NotPlain:
        def pipeline(self, transaction: bool) -> str:
            return f"own pipeline, transaction={transaction}"

    made: Callable[..., Any] = lean_pipeline
    assert made(NotPlain(), transaction=False) == "own pipeline, transaction=False"
