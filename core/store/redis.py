"""A SessionStore on Redis, shared by several replicas (``[store] url = "redis://..."``).

Layout (every key under ``prefix``, default ``chatbridge:``):

- ``s:<json key>``: a hash per conversation (fields of :class:`core.types.SessionRecord`)
- ``idx:all``, ``idx:bot:<bot>``, ``idx:user:<user_id>``: sorted sets of session keys scored
  by ``last_active`` (microseconds; exact in a double until the year 2255)
- ``btn:id:<short>`` -> payload, ``btn:p:<payload>`` -> short (both expire after the TTL),
  and ``btn:used``: short ids scored by the time last issued, for :meth:`RedisStore.prune`

Multi-key updates (touch, short_id) run as Lua scripts, so they are atomic across replicas.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, cast

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from chatbridge.core.store._common import (
    DEFAULT_BUTTON_TTL,
    from_micros,
    short_id_candidates,
    to_micros,
    utcnow,
)
from chatbridge.core.store.redis_journal import RedisJournal
from chatbridge.core.types import ConversationKey, SessionRecord

# KEYS: session hash, then the index sorted sets. ARGV: now (micros), index member.
_TOUCH = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'last_active', ARGV[1])
redis.call('HINCRBY', KEYS[1], 'turn_count', 1)
for i = 2, #KEYS do redis.call('ZADD', KEYS[i], ARGV[1], ARGV[2]) end
return 1
"""

# KEYS: btn:p:<payload>, btn:used, then btn:id:<candidate> for each candidate.
# ARGV: payload, ttl (ms), now (micros), then the candidates in the same order.
_SHORT_ID = """
local existing = redis.call('GET', KEYS[1])
if existing then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  for i = 3, #KEYS do
    if ARGV[i + 1] == existing then redis.call('PEXPIRE', KEYS[i], ARGV[2]) end
  end
  redis.call('ZADD', KEYS[2], ARGV[3], existing)
  return existing
end
for i = 3, #KEYS do
  local cand = ARGV[i + 1]
  local ok = redis.call('SET', KEYS[i], ARGV[1], 'NX', 'PX', ARGV[2])
  if ok or redis.call('GET', KEYS[i]) == ARGV[1] then
    redis.call('PEXPIRE', KEYS[i], ARGV[2])
    redis.call('SET', KEYS[1], cand, 'PX', ARGV[2])
    redis.call('ZADD', KEYS[2], ARGV[3], cand)
    return cand
  end
end
return false
"""

# KEYS: btn:used. ARGV: cutoff (micros), "btn:id:" prefix, "btn:p:" prefix. Atomic, so an id
# re-issued concurrently is either pruned before or kept after, never half-deleted.
_PRUNE = """
local stale = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
local n = 0
for _, short in ipairs(stale) do
  local payload = redis.call('GET', ARGV[2] .. short)
  if payload then
    redis.call('DEL', ARGV[2] .. short)
    redis.call('DEL', ARGV[3] .. payload)
    n = n + 1
  end
  redis.call('ZREM', KEYS[1], short)
end
return n
"""


def _member(key: ConversationKey) -> str:
    return json.dumps([key.bot, key.platform, key.chat_id, key.user_id, key.thread_id])


def _key_from_member(member: str) -> ConversationKey:
    bot, platform, chat_id, user_id, thread_id = json.loads(member)
    return ConversationKey(bot, platform, chat_id, user_id, thread_id)


class RedisStore:
    """``core.protocols.SessionStore`` on Redis (redis.asyncio)."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = "chatbridge:",
        button_ttl: timedelta = DEFAULT_BUTTON_TTL,
    ) -> None:
        self._r = client
        self._p = prefix
        self.button_ttl = button_ttl
        self._closed = False
        self._touch = client.register_script(_TOUCH)
        self._short_id = client.register_script(_SHORT_ID)
        self._prune = client.register_script(_PRUNE)
        self.journal = RedisJournal(client, prefix)

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        prefix: str = "chatbridge:",
        button_ttl: timedelta = DEFAULT_BUTTON_TTL,
    ) -> RedisStore:
        """Connect and check the server answers (raises ``redis.exceptions.RedisError``)."""
        client = aioredis.Redis.from_url(url, decode_responses=True)
        store = cls(client, prefix=prefix, button_ttl=button_ttl)
        try:
            await client.ping()
            await store.prune()
        except BaseException:
            await client.aclose()
            raise
        return store

    def _check(self) -> None:
        # redis-py reconnects silently after aclose(); a closed store must not.
        if self._closed:
            raise RuntimeError("store is closed")

    def _hash(self, key: ConversationKey) -> str:
        return f"{self._p}s:{_member(key)}"

    def _indexes(self, key: ConversationKey) -> list[str]:
        return [
            f"{self._p}idx:all",
            f"{self._p}idx:bot:{key.bot}",
            f"{self._p}idx:user:{key.user_id}",
        ]

    # --- sessions -----------------------------------------------------------------------------

    async def get(self, key: ConversationKey) -> SessionRecord | None:
        self._check()
        fields = cast(dict[str, str], await self._r.hgetall(self._hash(key)))
        return self._record(key, fields) if fields else None

    @staticmethod
    def _record(key: ConversationKey, f: dict[str, str]) -> SessionRecord:
        return SessionRecord(
            key=key,
            backend=f["backend"],
            session_ref=f["session_ref"],
            language=f.get("language"),
            created_at=from_micros(int(f["created_at"])),
            last_active=from_micros(int(f["last_active"])),
            turn_count=int(f["turn_count"]),
        )

    async def put(self, record: SessionRecord) -> None:
        self._check()
        name = self._hash(record.key)
        active = to_micros(record.last_active)
        mapping: dict[str, str | int] = {
            "backend": record.backend,
            "session_ref": record.session_ref,
            "created_at": to_micros(record.created_at),
            "last_active": active,
            "turn_count": record.turn_count,
        }
        if record.language is not None:
            mapping["language"] = record.language
        member = _member(record.key)
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.delete(name)
            pipe.hset(name, mapping=cast(Any, mapping))
            for index in self._indexes(record.key):
                pipe.zadd(index, {member: active})
            await pipe.execute()

    async def touch(self, key: ConversationKey) -> None:
        self._check()
        keys = [self._hash(key), *self._indexes(key)]
        await self._touch(keys=keys, args=[to_micros(utcnow()), _member(key)])

    async def delete(self, key: ConversationKey) -> bool:
        self._check()
        member = _member(key)
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.delete(self._hash(key))
            for index in self._indexes(key):
                pipe.zrem(index, member)
            results = await pipe.execute()
        return bool(results[0])

    async def delete_all(self, bot: str | None = None) -> int:
        self._check()
        index = f"{self._p}idx:all" if bot is None else f"{self._p}idx:bot:{bot}"
        members = cast(builtins.list[str], await self._r.zrange(index, 0, -1))
        deleted = 0
        # Batched: one round trip per 500 sessions instead of one per session.
        for start in range(0, len(members), 500):
            async with self._r.pipeline(transaction=True) as pipe:
                for member in members[start : start + 500]:
                    key = _key_from_member(member)
                    pipe.delete(self._hash(key))
                    for idx in self._indexes(key):
                        pipe.zrem(idx, member)
                results = await pipe.execute()
            stride = 1 + len(self._indexes(ConversationKey("", "", "", "")))
            deleted += sum(1 for r in results[::stride] if r)
        return deleted

    async def list(
        self, bot: str | None = None, user_id: str | None = None, limit: int = 50
    ) -> builtins.list[SessionRecord]:
        self._check()
        if limit <= 0:
            return []
        if user_id is not None:
            index = f"{self._p}idx:user:{user_id}"
        elif bot is not None:
            index = f"{self._p}idx:bot:{bot}"
        else:
            index = f"{self._p}idx:all"
        # With both filters the user's index is read and filtered by bot here: one user has
        # few conversations, so reading them all is cheap.
        stop = -1 if (user_id is not None and bot is not None) else limit - 1
        members = cast(builtins.list[str], await self._r.zrevrange(index, 0, stop))
        keys = [_key_from_member(m) for m in members]
        if bot is not None:
            keys = [k for k in keys if k.bot == bot]
        keys = keys[:limit]
        async with self._r.pipeline(transaction=False) as pipe:
            for k in keys:
                pipe.hgetall(self._hash(k))
            rows: builtins.list[dict[str, str]] = await pipe.execute()
        return [self._record(k, row) for k, row in zip(keys, rows, strict=True) if row]

    async def count(self, bot: str | None = None) -> int:
        self._check()
        index = f"{self._p}idx:all" if bot is None else f"{self._p}idx:bot:{bot}"
        return int(await self._r.zcard(index))

    # --- button short ids ---------------------------------------------------------------------

    async def short_id(self, payload: str) -> str:
        return (await self.short_ids([payload]))[0]

    async def short_ids(self, payloads: Sequence[str]) -> builtins.list[str]:
        """Ids for every payload: one script call each, sent in one round trip."""
        self._check()
        unique = list(dict.fromkeys(payloads))
        if not unique:
            return []
        ttl_ms = max(1, int(self.button_ttl.total_seconds() * 1000))
        now = to_micros(utcnow())
        async with self._r.pipeline(transaction=False) as pipe:
            for payload in unique:
                candidates = short_id_candidates(payload)
                keys = [
                    f"{self._p}btn:p:{payload}",
                    f"{self._p}btn:used",
                    *(f"{self._p}btn:id:{c}" for c in candidates),
                ]
                args: builtins.list[Any] = [payload, ttl_ms, now, *candidates]
                await self._short_id(keys=keys, args=args, client=pipe)
            results = await pipe.execute()
        ids: dict[str, str] = {}
        for payload, result in zip(unique, results, strict=True):
            if not result:
                raise RuntimeError("no free short id for a button payload")  # pragma: no cover
            ids[payload] = str(result)
        return [ids[p] for p in payloads]

    async def resolve(self, short_id: str) -> str | None:
        self._check()
        value = await self._r.get(f"{self._p}btn:id:{short_id}")
        return None if value is None else str(value)

    async def prune(self, older_than: timedelta | None = None) -> int:
        """Forget button ids not issued for ``older_than`` (default: the TTL, which Redis also
        enforces on its own by key expiry)."""
        self._check()
        age = self.button_ttl if older_than is None else older_than
        cutoff = to_micros(utcnow() - age)
        result = await self._prune(
            keys=[f"{self._p}btn:used"],
            args=[cutoff, f"{self._p}btn:id:", f"{self._p}btn:p:"],
        )
        return int(result)

    # --- lifecycle ----------------------------------------------------------------------------

    async def ping(self) -> bool:
        if self._closed:
            return False
        try:
            return bool(await self._r.ping())
        except (RedisError, OSError):
            return False

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._r.aclose()
