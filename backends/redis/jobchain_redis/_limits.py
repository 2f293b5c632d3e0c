"""Rate and concurrency limits in Redis: each call is one Lua script on one key (one round trip).

``{p:limit:<key>}:rate`` (hash): window name -> the window's GCRA theoretical
arrival time (:func:`jobchain.limits.gcra_take`, the same arithmetic in Lua);
it expires a minute after its last window would be full again.
``{p:limit:<key>}:slots`` (zset): holder -> held until, the concurrency slots
of ``key``. Each key carries its own hash tag, so limits spread over a
Cluster's shards and every script touches one slot. Times are the backend's
clock (passed in), so workers agree with the lease arithmetic.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from jobchain.capabilities import ConcurrencyLimits, RateLimits
from jobchain.limits import EPSILON, Window, window_name
from jobchain_redis.keys import Keys

__all__ = ["RedisLimits"]

#: a limit's keys live this much longer than their state needs (clocks of the callers may differ)
_EXPIRY_MARGIN = 60.0

_TAKE = """
local now, count, max_wait, eps = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local n = (#ARGV - 4) / 3
local at, tats = now, {}
for i = 0, n - 1 do
  local tokens, seconds = tonumber(ARGV[5 + 3 * i]), tonumber(ARGV[6 + 3 * i])
  if count > tokens then return redis.error_reply('NEVER ' .. count .. ' > ' .. tokens) end
  local tat = tonumber(redis.call('HGET', KEYS[1], ARGV[7 + 3 * i]) or now)
  tats[i] = tat
  local t = math.max(tat, now) + count * seconds / tokens - seconds
  if t > at then at = t end
end
local wait = at - now
if wait <= eps then wait = 0; at = now end
if wait > max_wait then return tostring(wait) end
local horizon = 0
for i = 0, n - 1 do
  local tokens, seconds = tonumber(ARGV[5 + 3 * i]), tonumber(ARGV[6 + 3 * i])
  local new = math.max(tats[i], at) + count * seconds / tokens
  redis.call('HSET', KEYS[1], ARGV[7 + 3 * i], string.format('%.17g', new))
  if new - now > horizon then horizon = new - now end
end
redis.call('PEXPIRE', KEYS[1], math.ceil((horizon + tonumber(ARGV[4 + 3 * n + 1] or 60)) * 1000))
return tostring(wait)
"""

_ACQUIRE = """
local now, limit, expiry = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], ARGV[3]) and redis.call('ZCARD', KEYS[1]) >= limit then return 0 end
redis.call('ZADD', KEYS[1], string.format("%.17g", expiry), ARGV[3])
redis.call('PEXPIRE', KEYS[1], math.ceil((expiry - now + tonumber(ARGV[5])) * 1000))
return 1
"""

_EXTEND = """
local score = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[2]) or 0)
if score <= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], 'XX', ARGV[3], ARGV[2])
redis.call('PEXPIRE', KEYS[1], math.ceil((tonumber(ARGV[3]) - tonumber(ARGV[1]) + tonumber(ARGV[4])) * 1000))
return 1
"""


class RedisLimits(RateLimits, ConcurrencyLimits):
    """The limits of the Redis backends (a mixin of :class:`~jobchain_redis.common.RedisBackend`)."""

    client: Any
    keys: Keys

    def now(self) -> float:
        raise NotImplementedError

    def _limit_key(self, key: str, kind: str) -> str:
        return "{" + self.keys.prefix + ":limit:" + key + "}:" + kind

    def _script(self, name: str, text: str) -> Any:
        scripts: dict[str, Any] = self.__dict__.setdefault("_limit_scripts", {})
        script = scripts.get(name)
        if script is None:
            script = scripts[name] = self.client.register_script(text)
        return script

    def take_tokens(
        self, key: str, windows: Sequence[Window], count: int = 1, *, max_wait: float = 0.0
    ) -> float:
        if count < 1:
            raise ValueError(f"count must be >= 1, got {count!r}")
        if any(count > tokens for tokens, _ in windows):
            raise ValueError(
                f"{count} tokens can never be taken from a window of {min(t for t, _ in windows)}"
            )
        args: list[Any] = [repr(self.now()), count, repr(float(max_wait)), repr(EPSILON)]
        for window in windows:
            args += [window[0], repr(float(window[1])), window_name(window)]
        args.append(repr(_EXPIRY_MARGIN))
        return float(self._script("take", _TAKE)(keys=[self._limit_key(key, "rate")], args=args))

    def acquire_slot(self, key: str, limit: int, holder: str, ttl: float) -> bool:
        now = self.now()
        args = [repr(now), limit, holder, repr(now + ttl), repr(_EXPIRY_MARGIN)]
        return bool(self._script("acquire", _ACQUIRE)(keys=[self._limit_key(key, "slots")], args=args))

    def extend_slots(self, slots: Sequence[tuple[str, str]], ttl: float) -> list[bool]:
        now = self.now()
        script = self._script("extend", _EXTEND)
        return [
            bool(
                script(
                    keys=[self._limit_key(key, "slots")],
                    args=[repr(now), holder, repr(now + ttl), repr(_EXPIRY_MARGIN)],
                )
            )
            for key, holder in slots
        ]

    def release_slot(self, key: str, holder: str) -> None:
        self.client.zrem(self._limit_key(key, "slots"), holder)

    def slots_held(self, key: str) -> int:
        return int(self.client.zcount(self._limit_key(key, "slots"), f"({self.now()!r}", "+inf"))
