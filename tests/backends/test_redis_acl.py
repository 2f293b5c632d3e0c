"""The ACL recipe of docs/security.md: jobchain works under a user limited to its prefix, without @dangerous.

A user is created on the session's redis-server with exactly the rules the
security page gives (its key patterns, ``+@all -@dangerous``, no channels),
and the conformance suite runs on both Redis backends as that user. A
command the backends need that the recipe does not allow fails these tests.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator

import pytest

from jobchain.clock import ManualClock
from jobchain.testing import BackendConformance

redis = pytest.importorskip("redis", reason="jobchain-redis is not installed (pip install -e backends/redis)")

from jobchain_redis.common import RedisBackend  # noqa: E402
from jobchain_redis.lists import ListsBackend  # noqa: E402
from jobchain_redis.streams import StreamsBackend  # noqa: E402


def acl_rules(prefix: str) -> list[str]:
    """The rules docs/security.md gives for a jobchain user of ``prefix``."""
    return [
        "on",
        "resetkeys",
        "resetchannels",
        f"~{{{prefix}}}:*",
        f"~{{{prefix}:*",
        "-@all",
        "+@all",
        "-@dangerous",
    ]


@pytest.fixture
def acl_url(redis_server_url: str) -> Iterator[tuple[str, str]]:
    """(URL of a fresh ACL user limited to a fresh prefix, that prefix); the user is deleted afterwards."""
    admin = redis.Redis.from_url(redis_server_url)
    user, password, prefix = f"jc{uuid.uuid4().hex[:8]}", secrets.token_hex(16), f"acl{uuid.uuid4().hex[:8]}"
    admin.execute_command("ACL", "SETUSER", user, *acl_rules(prefix), f">{password}")
    host = redis_server_url.removeprefix("redis://")
    try:
        yield f"{user}:{password}@{host}", prefix
    finally:
        admin.execute_command("ACL", "DELUSER", user)
        admin.close()


class _UnderAcl(BackendConformance):
    kind: type[RedisBackend] = ListsBackend
    scheme = "redis-lists"

    @pytest.fixture
    def backend(self, clock: ManualClock, acl_url: tuple[str, str]) -> Iterator[RedisBackend]:
        where, prefix = acl_url
        url = f"{self.scheme}://{where}?prefix={prefix}&eviction=ignore"  # CONFIG GET is @dangerous
        backend = self.kind.from_url(url, clock=clock)
        yield backend
        backend.delete_everything()
        backend.close()


class TestRedisListsUnderAcl(_UnderAcl):
    kind = ListsBackend
    scheme = "redis-lists"
    aging_tolerance = 0.01  # as in test_redis_conformance.py


class TestRedisStreamsUnderAcl(_UnderAcl):
    kind = StreamsBackend
    scheme = "redis-streams"
    aging_tolerance = 0.1


def test_the_acl_user_cannot_touch_other_keys(acl_url: tuple[str, str], redis_server_url: str) -> None:
    """The recipe confines the user: other prefixes' keys and @dangerous commands are refused."""
    where, prefix = acl_url
    client = redis.Redis.from_url(f"redis://{where}")
    try:
        client.set(f"{{{prefix}}}:mine", "1")
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.set("{other}:job:1", "x")
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.flushall()
    finally:
        client.delete(f"{{{prefix}}}:mine")
        client.close()
