"""A SessionStore on Redis, shared by several replicas (``[store] url = "redis://..."``).

Layout (every key under ``prefix``, default ``chatbridge:``):

- ``s:<json key>``: a hash per conversation (fields of :class:`core.types.SessionRecord`)
- ``idx:all``, ``idx:bot:<bot>``, ``idx:user:<user_id>``: sorted sets of session keys scored
  by ``last_active`` (microseconds; exact in a double until the year 2255)
- ``btn:id:<short>`` -> payload, ``btn:p:<payload>`` -> short (both expire after the TTL),
  and ``btn:used``: short ids scored by the time last issued, for :meth:`RedisStore.prune`

Multi-key updates (touch, short ids) run as Lua scripts, so they are atomic across replicas.
Round trips are what a turn pays here (each one a network hop, where SQLite's is a thread
hop): a turn's touch is batched off the turn's path (within ``TOUCH_FLUSH_DELAY``, every
touch of that second in one script call, as the SQLite store does), and the button ids of an
answer are one script call (a pipeline of scripts would cost a ``SCRIPT EXISTS`` more), or
none when this replica named every payload within the hour (renewed with the touches).
"""

from __future__ import annotations

import asyncio
import builtins
import dataclasses
import json
import logging
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError

from chatbridge.core.store._common import (
    DEFAULT_BUTTON_TTL,
    from_micros,
    short_id_candidates,
    to_micros,
    utcnow,
)
from chatbridge.core.store.redis_journal import RedisJournal
from chatbridge.core.store.redis_pipelined import PipelinedRedis, hash_fields
from chatbridge.core.types import ConversationKey, SessionRecord

# touch() is called at the end of every turn; its write waits this long so that touches of
# many turns go to Redis in one script call, off the turns' path (other replicas see a turn's
# activity within this delay; this one at once).
TOUCH_FLUSH_DELAY = 1.0

#: A payload this replica named within this long (and within half the button TTL) is named
#: again from memory, with no round trip on the turn's path; its keys' TTL and ``btn:used``
#: are renewed with the touches (see short_ids). Safe across replicas: a payload's id changes
#: only once its keys are gone (expired or pruned after the TTL since last named), which the
#: memory's horizon stays well inside.
NAMED_RECENTLY = timedelta(hours=1)
#: At most this many payloads remembered (the oldest is forgotten first).
NAMED_KEPT = 4096

log = logging.getLogger(__name__)

# redis-py's default pool refuses a command when 100 are in flight (MaxConnectionsError): a
# burst of 150 simultaneous turns on one replica failed turns with it. A pool that waits for
# a free connection (BlockingConnectionPool) costs 30-50 us more CPU per command here (about
# 0.4 ms a turn); a larger ordinary pool costs nothing until a burst opens more sockets.
# Redis accepts 10,000 clients by default: three replicas of three clients stay below.
MAX_CONNECTIONS = 1000


def redis_client(url: str, max_connections: int = MAX_CONNECTIONS) -> aioredis.Redis:
    """A client for ``url`` with room for ``max_connections`` commands in flight (the
    store's, the replicas' coordination's, Discord's shared route buckets').

    A command that meets a broken connection is tried again on a new one (three times,
    0.05-0.2 s apart): after Redis restarts, every pooled connection is dead and would fail
    its next command (a turn's session lookup: "something went wrong") though Redis is back.
    The writes are safe to repeat: the journal knows what it holds, leases are fenced."""
    retry = Retry(ExponentialBackoff(cap=0.2, base=0.05), 3)
    pool = aioredis.ConnectionPool.from_url(
        url, max_connections=max_connections, decode_responses=True, retry=retry
    )
    return aioredis.Redis.from_pool(pool)


# KEYS: the session's hash, then its three index sorted sets. ARGV: the ref it may replace
# (ARGV[1] '1': ARGV[2] is it; '0': none), index member, last_active (micros), then the
# hash's field/value pairs. Written when no session is stored or the stored one's ref is the
# one to replace: returns {}; else the stored hash's fields, untouched.
_PUT_NEW = """
local current = redis.call('HGET', KEYS[1], 'session_ref')
if current and (ARGV[1] == '0' or current ~= ARGV[2]) then
  return redis.call('HGETALL', KEYS[1])
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
for i = 2, 4 do redis.call('ZADD', KEYS[i], ARGV[4], ARGV[3]) end
return {}
"""

# KEYS: per session, its hash then its three index sorted sets. ARGV: per session, the time
# of its latest turn (micros), the turns to add, its index member. A session deleted meanwhile
# is not brought back; a later time another replica wrote already is kept.
_TOUCH = """
local n = 0
for s = 0, #ARGV / 3 - 1 do
  local hash, at = KEYS[s * 4 + 1], ARGV[s * 3 + 1]
  if redis.call('EXISTS', hash) == 1 then
    redis.call('HINCRBY', hash, 'turn_count', ARGV[s * 3 + 2])
    if tonumber(redis.call('HGET', hash, 'last_active') or '0') < tonumber(at) then
      redis.call('HSET', hash, 'last_active', at)
      for i = 2, 4 do redis.call('ZADD', KEYS[s * 4 + i], at, ARGV[s * 3 + 3]) end
    end
    n = n + 1
  end
end
return n
"""

# Ids for many payloads at once. KEYS: btn:used, then per payload btn:p:<payload> and
# btn:id:<candidate> for each of its candidates. ARGV: ttl (ms), now (micros), then per
# payload: the payload, its candidate count, the candidates. Returns the ids ('' = none free).
_SHORT_IDS = """
local ttl, now = ARGV[1], ARGV[2]
local out = {}
local k, a = 2, 3
while a <= #ARGV do
  local payload, n = ARGV[a], tonumber(ARGV[a + 1])
  local found = ''
  local existing = redis.call('GET', KEYS[k])
  if existing then
    redis.call('PEXPIRE', KEYS[k], ttl)
    for i = 1, n do
      if ARGV[a + 1 + i] == existing then redis.call('PEXPIRE', KEYS[k + i], ttl) end
    end
    found = existing
  else
    for i = 1, n do
      local cand = ARGV[a + 1 + i]
      local ok = redis.call('SET', KEYS[k + i], payload, 'NX', 'PX', ttl)
      if ok or redis.call('GET', KEYS[k + i]) == payload then
        redis.call('PEXPIRE', KEYS[k + i], ttl)
        redis.call('SET', KEYS[k], cand, 'PX', ttl)
        found = cand
        break
      end
    end
  end
  if found ~= '' then redis.call('ZADD', KEYS[1], now, found) end
  out[#out + 1] = found
  k = k + 1 + n
  a = a + 2 + n
end
return out
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
        fast: PipelinedRedis | None = None,
    ) -> None:
        self._r = client
        # the turn's session read and journal writes (see core.store.redis_pipelined)
        self._fast = fast
        self._p = prefix
        self.button_ttl = button_ttl
        self._closed = False
        self._touch = client.register_script(_TOUCH)
        self._short_ids = client.register_script(_SHORT_IDS)
        self._prune = client.register_script(_PRUNE)
        self._put_new = client.register_script(_PUT_NEW)
        self.journal = RedisJournal(client, prefix, fast)
        # touches not written yet: session -> (last turn's time in micros, turns to add)
        self._touches: dict[ConversationKey, tuple[int, int]] = {}
        self._touch_timer: asyncio.TimerHandle | None = None
        self._touch_flush: asyncio.Task[None] | None = None
        self.touch_flush_delay = TOUCH_FLUSH_DELAY
        # payload -> (short id, when its keys were last written, micros); payloads named from
        # memory whose keys are not renewed yet -> when
        self._named: dict[str, tuple[str, int]] = {}
        self._renewed: dict[str, int] = {}

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        prefix: str = "chatbridge:",
        button_ttl: timedelta = DEFAULT_BUTTON_TTL,
    ) -> RedisStore:
        """Connect and check the server answers (raises ``redis.exceptions.RedisError``)."""
        client = redis_client(url)
        fast = PipelinedRedis.for_url(url)
        store = cls(client, prefix=prefix, button_ttl=button_ttl, fast=fast)
        try:
            await client.ping()
            await store.prune()
        except BaseException:
            await client.aclose()
            if fast is not None:
                await fast.aclose()
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
        if self._fast is not None:
            fields = await self._fast.hgetall(self._hash(key))
        else:
            fields = cast(dict[str, str], await self._r.hgetall(self._hash(key)))
        return self.session_from(key, fields)

    def session_name(self, key: ConversationKey) -> str:
        return self._hash(key)

    def session_from(self, key: ConversationKey, fields: dict[str, str]) -> SessionRecord | None:
        """The session as :meth:`get` returns it from its hash's ``fields`` (read by
        :meth:`get`, or with a message's record: :class:`core.types.Prelude`). Pending
        touches are added: in :meth:`get` nothing runs between the read and this, so a touch
        flushed meanwhile is in the hash, not in _touches (with a record, a flush in between
        leaves this copy's ``turn_count`` short by it; the hash has it)."""
        if not fields:
            return None
        return self._with_touches(self._record(key, fields))

    def _with_touches(self, record: SessionRecord) -> SessionRecord:
        """``record`` as read, plus this replica's touches not written yet."""
        pending = self._touches.get(record.key)
        if pending is None:
            return record
        return dataclasses.replace(
            record,
            last_active=max(record.last_active, from_micros(pending[0])),
            turn_count=record.turn_count + pending[1],
        )

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
        # the record replaces the stored one, touches included (the engine puts what it got)
        self._touches.pop(record.key, None)
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

    async def put_new(self, record: SessionRecord, replacing: str | None = None) -> SessionRecord:
        """:meth:`put` when no other session was stored meanwhile, in one script (see the
        protocol): the compare and the write cannot be split by another replica's."""
        self._check()
        active = to_micros(record.last_active)
        fields: list[str | int] = [
            "backend",
            record.backend,
            "session_ref",
            record.session_ref,
            "created_at",
            to_micros(record.created_at),
            "last_active",
            active,
            "turn_count",
            record.turn_count,
        ]
        if record.language is not None:
            fields += ["language", record.language]
        args: list[str | int] = [
            "0" if replacing is None else "1",
            replacing or "",
            _member(record.key),
            active,
            *fields,
        ]
        keys = [self._hash(record.key), *self._indexes(record.key)]
        stored = cast(list[str], await self._put_new(keys=keys, args=args))
        if not stored:
            self._touches.pop(record.key, None)
            return record
        return self._with_touches(self._record(record.key, hash_fields(stored)))

    async def touch(self, key: ConversationKey) -> None:
        """Counts a turn. Written within TOUCH_FLUSH_DELAY, with every other touch of that
        second, in one script call; this replica's reads see it at once."""
        self._check()
        _, turns = self._touches.get(key, (0, 0))
        self._touches[key] = (to_micros(utcnow()), turns + 1)
        self._flush_later()

    def _flush_later(self) -> None:
        if self._touch_timer is None and self._touch_flush is None:
            loop = asyncio.get_running_loop()
            self._touch_timer = loop.call_later(self.touch_flush_delay, self._start_touch_flush)

    def _start_touch_flush(self) -> None:
        self._touch_timer = None
        self._touch_flush = asyncio.get_running_loop().create_task(self._flush_touches_later())

    async def _flush_touches_later(self) -> None:
        try:
            await self.flush_touches()
        except Exception as exc:  # recency and a turn counter: not worth failing anything
            log.warning("could not record session activity: %s: %s", type(exc).__name__, exc)
        finally:
            self._touch_flush = None
        if (self._touches or self._renewed) and not self._closed:  # touched while we wrote
            loop = asyncio.get_running_loop()
            self._touch_timer = loop.call_later(self.touch_flush_delay, self._start_touch_flush)

    async def flush_touches(self) -> None:
        """Write the touches and button renewals not written yet (at once; normally a timer
        does it)."""
        await self._renew_named()
        pending = builtins.list(self._touches.items())
        self._touches = {}
        for start in range(0, len(pending), 500):  # bounded script calls
            chunk = pending[start : start + 500]
            keys: builtins.list[str] = []
            args: builtins.list[Any] = []
            for key, (at, turns) in chunk:
                keys += [self._hash(key), *self._indexes(key)]
                args += [at, turns, _member(key)]
            try:
                await self._touch(keys=keys, args=args)
            except BaseException:
                for key, (at, turns) in pending[start:]:  # kept for the next flush
                    later_at, more = self._touches.get(key, (0, 0))
                    self._touches[key] = (max(at, later_at), turns + more)
                raise

    async def delete(self, key: ConversationKey) -> bool:
        self._check()
        self._touches.pop(key, None)
        member = _member(key)
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.delete(self._hash(key))
            for index in self._indexes(key):
                pipe.zrem(index, member)
            results = await pipe.execute()
        return bool(results[0])

    async def delete_all(self, bot: str | None = None) -> int:
        self._check()
        for key in [k for k in self._touches if bot is None or k.bot == bot]:
            del self._touches[key]
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
        await self.flush_touches()  # the order is by last activity
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
        """Ids for every payload, in one script call (one round trip). Payloads all named by
        this replica within the memory's horizon cost none: their keys live on (the TTL is
        far longer than the horizon) and are renewed in the background, like touches."""
        self._check()
        unique = list(dict.fromkeys(payloads))
        if not unique:
            return []
        now = to_micros(utcnow())
        named = self._named
        recent = now - self._named_horizon_micros()
        if all(p in named and named[p][1] >= recent for p in unique):
            for p in unique:
                self._renewed[p] = now
            self._flush_later()
            return [named[p][0] for p in payloads]
        ids = await self._name(unique, now)
        for p in unique:
            self._renewed.pop(p, None)  # written now
        return [ids[p] for p in payloads]

    def _named_horizon_micros(self) -> int:
        """How long a payload's id is answered from memory after its keys were written: well
        inside the TTL they were written with, so neither expiry nor prune can have removed
        them (and a removed payload is the only way its id changes)."""
        return min(NAMED_RECENTLY, self.button_ttl / 2) // timedelta(microseconds=1)

    async def _name(self, unique: Sequence[str], now: int) -> dict[str, str]:
        """Names (or renews) ``unique`` payloads in one script call, remembering the ids."""
        ttl_ms = max(1, int(self.button_ttl.total_seconds() * 1000))
        keys = [f"{self._p}btn:used"]
        args: builtins.list[Any] = [ttl_ms, now]
        for payload in unique:
            candidates = short_id_candidates(payload)
            keys += [f"{self._p}btn:p:{payload}", *(f"{self._p}btn:id:{c}" for c in candidates)]
            args += [payload, len(candidates), *candidates]
        results = await self._short_ids(keys=keys, args=args)
        ids: dict[str, str] = {}
        named = self._named
        for payload, result in zip(unique, results, strict=True):
            if not result:
                raise RuntimeError("no free short id for a button payload")  # pragma: no cover
            ids[payload] = str(result)
            named.pop(payload, None)  # (re)inserted last: the oldest go first
            named[payload] = (ids[payload], now)
        while len(named) > NAMED_KEPT:
            del named[next(iter(named))]
        return ids

    async def _renew_named(self) -> None:
        """Renew the keys of the payloads named from memory since the last flush (the same
        script as naming: it renews what exists, so the ids stay what was answered)."""
        pending = builtins.list(self._renewed.items())
        self._renewed = {}
        for start in range(0, len(pending), 100):  # bounded script calls
            chunk = [p for p, _ in pending[start : start + 100]]
            try:
                await self._name(chunk, max(at for _, at in pending[start : start + 100]))
            except BaseException:
                for p, at in pending[start:]:  # kept for the next flush
                    self._renewed[p] = max(at, self._renewed.get(p, 0))
                raise

    async def resolve(self, short_id: str) -> str | None:
        self._check()
        value = await self._r.get(f"{self._p}btn:id:{short_id}")
        return None if value is None else str(value)

    async def prune(self, older_than: timedelta | None = None) -> int:
        """Forget button ids not issued for ``older_than`` (default: the TTL, which Redis also
        enforces on its own by key expiry)."""
        self._check()
        await self._renew_named()  # ids named from memory: renewed before the cutoff applies
        age = self.button_ttl if older_than is None else older_than
        cutoff = to_micros(utcnow() - age)
        self._named.clear()  # a payload pruned here must be written again when named
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
        if self._touch_timer is not None:
            self._touch_timer.cancel()
            self._touch_timer = None
        try:
            if self._touch_flush is not None:
                await asyncio.shield(self._touch_flush)
            await self.flush_touches()
        except Exception as exc:
            log.warning("could not record session activity: %s: %s", type(exc).__name__, exc)
        finally:
            self._closed = True
            await self._r.aclose()
            if self._fast is not None:
                await self._fast.aclose()
