"""Budgets shared by several replicas: the platform limits of one bot token and the per-user
turn limit, counted in Redis (:meth:`core.store.redis_coordination.RedisCoordination.take`,
a sliding log per limit in one Lua script) instead of in each process's memory.

Each process still paces itself locally (:class:`core.pacer.Pacer`, :class:`core.flood.
FloodControl`); these add the count across replicas. A place is taken when a call is granted,
a little before the platform stamps it, so shared windows are counted a little longer than
the platform's (``margin``): the aim is zero 429s, not the last message per second.

:class:`SharedRouteBuckets` shares the buckets a platform announces in its answers (Discord's
per-route ``X-RateLimit-*``): each process's HTTP library honours them for its own calls only,
so two replicas posting into one channel would each spend the whole bucket.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from chatbridge.core.types import ConversationKey

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from chatbridge.core.store.redis_coordination import RedisCoordination

log = logging.getLogger(__name__)


class SharedWindows:
    """:class:`core.pacer.SharedWindows` on Redis, for the pacer of one bot token."""

    def __init__(
        self,
        redis: RedisCoordination,
        name: str,
        *,
        margin: float = 1.1,
        slack: float = 0.05,
    ) -> None:
        self._redis = redis
        self._name = name
        self._margin = margin
        self._slack = slack
        self.waits = 0  # times a call waited for the other replicas' share (for benchmarks)

    async def take(self, windows: Sequence[tuple[str, int, float]]) -> float:
        """Once a place is taken in each window: the seconds they cover a call made from now
        (the margin each is counted longer than the platform's; inf when Redis is out of
        reach: the local pacer still limits)."""
        named = [
            (f"{self._name}:{name}", limit, period * self._margin + self._slack)
            for name, limit, period in windows
        ]
        covers = min(
            (period * (self._margin - 1) + self._slack for _, _, period in windows),
            default=math.inf,
        )
        while True:
            try:
                wait = await self._redis.take(named)
            except Exception as exc:  # Redis out of reach: the local pacer still limits
                log.warning("shared budget %s unavailable: %s", self._name, exc)
                return math.inf
            if wait <= 0:
                return covers
            self.waits += 1
            await asyncio.sleep(wait)


class SharedFlood:
    """``turns_per_minute`` per user (per bot), across every replica
    (:class:`core.protocols.SharedFloodGate`). Refused turns are not counted."""

    def __init__(self, redis: RedisCoordination, turns_per_minute: int, window: float = 60.0):
        self._redis = redis
        self.limit = turns_per_minute
        self.window = window

    async def check_shared(self, key: ConversationKey) -> float | None:
        window = self.window_of(key)
        if window is None:
            return None
        wait = await self._redis.take([window])
        return None if wait <= 0 else wait

    def window_of(self, key: ConversationKey) -> tuple[str, int, float] | None:
        if self.limit <= 0:
            return None
        return (f"flood:{key.bot}:{key.user_id}", self.limit, self.window)


# Discord-style buckets, announced by the platform in every answer: ``limit`` calls until the
# bucket resets ``reset_after`` seconds later; one bucket (a name the platform gives) may serve
# several routes, and holds one window per scope (the route's major parameter: the channel,
# the guild). Keys under ``rb:<token>:``: ``r:<route>`` -> the route's bucket; ``l:<bucket>``
# -> {limit, period (ms: the longest reset announced)}; ``s:<scope>`` -> the buckets seen in
# this scope; ``b:<bucket>:<scope>`` -> the window: {remaining, reset (ms, Redis's clock)}.

# KEYS: the route's key. ARGV: key prefix, scope, margin (ms). A route not learned yet takes
# a place in every bucket seen in its scope (it may be any of them: its first call must not
# be the one too many). 0: go (places taken), else milliseconds to wait (nothing taken).
_ROUTE_TAKE = """
local P, scope, margin = ARGV[1], ARGV[2], tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function window(bucket)
  local l = redis.call('HMGET', P .. 'l:' .. bucket, 'limit', 'period')
  local limit, period = tonumber(l[1]), tonumber(l[2])
  if not limit then return nil end
  local key = P .. 'b:' .. bucket .. ':' .. scope
  local s = redis.call('HMGET', key, 'remaining', 'reset')
  local remaining, reset = tonumber(s[1]), tonumber(s[2])
  if not reset or now >= reset then
    -- the platform opens a window at the first call after a reset: counted from here, a
    -- margin longer, as that call reaches the platform a little after this grant
    remaining, reset = limit, now + period + margin
  end
  return key, remaining, reset, period
end
local bucket = redis.call('GET', KEYS[1])
local buckets = bucket and {bucket} or redis.call('SMEMBERS', P .. 's:' .. scope)
local wait = 0
for _, b in ipairs(buckets) do
  local key, remaining, reset = window(b)
  if key and remaining <= 0 then wait = math.max(wait, reset - now, 1) end
end
if wait > 0 then return wait end
for _, b in ipairs(buckets) do
  local key, remaining, reset, period = window(b)
  if key then
    redis.call('HSET', key, 'remaining', remaining - 1, 'reset', reset)
    redis.call('PEXPIRE', key, reset - now + period + 60000)
  end
end
return 0
"""

# KEYS: the route's key. ARGV: key prefix, scope, bucket, limit, remaining, reset_after (ms).
# What an answer announced. Within the window already counted, the lower remaining and the
# later reset win: our count includes calls still in flight, and a late answer of an older
# window must not give places back.
_ROUTE_LEARN = """
local P, scope, bucket = ARGV[1], ARGV[2], ARGV[3]
local limit, remaining, after = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('SET', KEYS[1], bucket, 'EX', 86400)
local lkey = P .. 'l:' .. bucket
local period = math.max(tonumber(redis.call('HGET', lkey, 'period') or '0'), after)
redis.call('HSET', lkey, 'limit', limit, 'period', period)
redis.call('EXPIRE', lkey, 86400)
redis.call('SADD', P .. 's:' .. scope, bucket)
redis.call('EXPIRE', P .. 's:' .. scope, 86400)
local key = P .. 'b:' .. bucket .. ':' .. scope
local s = redis.call('HMGET', key, 'remaining', 'reset')
local counted, until_ = tonumber(s[1]), tonumber(s[2])
local reset = now + after
if until_ and now < until_ then
  remaining = math.min(remaining, counted)
  reset = math.max(reset, until_)
end
redis.call('HSET', key, 'remaining', remaining, 'reset', reset)
redis.call('PEXPIRE', key, reset - now + period + 60000)
return remaining
"""


class RouteBuckets(Protocol):
    """Per-route buckets kept outside the process (see :class:`SharedRouteBuckets`)."""

    async def take(self, route: str, scope: str) -> None: ...

    async def learn(
        self, route: str, scope: str, bucket: str, limit: int, remaining: int, reset_after: float
    ) -> None: ...


class SharedRouteBuckets:
    """A platform's per-route buckets, counted across every replica of one bot token
    (``name``) in Redis. :meth:`take` before a call waits while another replica has spent
    the bucket; :meth:`learn` records what an answer announced. Redis out of reach: calls
    go, limited by each process's own HTTP library as without replicas."""

    def __init__(
        self,
        client: aioredis.Redis,
        name: str,
        *,
        prefix: str = "chatbridge:",
        margin: float = 0.05,
    ) -> None:
        self._prefix = f"{prefix}rb:{name}:"
        self._margin_ms = int(margin * 1000)
        self._take = client.register_script(_ROUTE_TAKE)
        self._learn = client.register_script(_ROUTE_LEARN)
        self.waits = 0  # calls that waited for the other replicas' share (for benchmarks)

    async def take(self, route: str, scope: str) -> None:
        while True:
            try:
                wait_ms = int(
                    await self._take(
                        keys=[f"{self._prefix}r:{route}"],
                        args=[self._prefix, scope, self._margin_ms],
                    )
                )
            except Exception as exc:
                log.warning("shared route buckets unavailable: %s", exc)
                return
            if wait_ms <= 0:
                return
            self.waits += 1
            await asyncio.sleep(wait_ms / 1000)

    async def learn(
        self,
        route: str,
        scope: str,
        bucket: str,
        limit: int,
        remaining: int,
        reset_after: float,
    ) -> None:
        try:
            await self._learn(
                keys=[f"{self._prefix}r:{route}"],
                args=[
                    self._prefix,
                    scope,
                    bucket,
                    limit,
                    remaining,
                    max(0, math.ceil(reset_after * 1000)),
                ],
            )
        except Exception as exc:
            log.warning("shared route buckets unavailable: %s", exc)
