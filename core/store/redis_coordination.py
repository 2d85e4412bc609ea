"""Redis primitives for several replicas of one configuration (see :mod:`core.replicas`).

Nothing here is home-made coordination: each piece is a Redis primitive, wrapped in a Lua
script where two steps must happen together.

- **Work queue**: one Redis Stream per partition (``q:<p>``) with one consumer group
  (``turns``). A journaled message is recorded *and* queued in one script (the journal's
  own record script with an ``XADD`` appended), so a crash cannot leave one without the
  other. The partition's owner reads with ``XREADGROUP``; a new owner takes the pending
  entries of a dead or departed one with ``XAUTOCLAIM``.
- **Leases with fencing**: ``lease:<name>`` holds ``"<replica> <token>"``, set only when
  absent (``SET NX PX`` semantics) with a token from an ever-growing counter, renewed and
  released only by its holder. Acknowledging a stream entry checks the lease in the same
  script: a replica that lost its partition cannot acknowledge work it no longer owns.
- **Membership**: ``replicas``, a sorted set of replica names scored by their last
  heartbeat (milliseconds of Redis's clock), so every replica computes the same fair share.
- **Shared windows**: ``w:<name>``, a sorted set of grant times per limit (a sliding log),
  taken for several limits at once or not at all.

Times come from Redis's ``TIME`` so replicas with skewed clocks agree.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from chatbridge.core.store._common import to_micros, utcnow
from chatbridge.core.store._journal_codec import dump_inbound
from chatbridge.core.store.redis_journal import _RECORD, entry_from_fields, received_entry
from chatbridge.core.types import ConversationKey, Inbound, JournalEntry

GROUP = "turns"

# The journal's record script, then the XADD of the same message into its partition's
# stream (KEYS[5]; ARGV[7] bot, ARGV[8] conversation member). One script: both or neither.
_RECORD_TAIL = "return seq"
if not _RECORD.rstrip().endswith(_RECORD_TAIL):  # pragma: no cover - guards the composition
    raise ImportError("the journal's record script no longer ends with 'return seq'")
_RECORD_AND_QUEUE = (
    _RECORD.rstrip()[: -len(_RECORD_TAIL)]
    + "redis.call('XADD', KEYS[5], '*', 'bot', ARGV[7], 'seq', seq, 'conv', ARGV[8])\n"
    + "return seq\n"
)

# KEYS: lease, fencing counter. ARGV: replica, period (ms). The lease value, or false.
_ACQUIRE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local value = ARGV[1] .. ' ' .. redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], value, 'PX', ARGV[2])
return value
"""

# KEYS: lease. ARGV: value, period (ms).
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

# KEYS: lease. ARGV: value.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: lease, stream. ARGV: lease value, group, entry id. Fenced: only the lease holder.
_ACK = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('XACK', KEYS[2], ARGV[2], ARGV[3])
redis.call('XDEL', KEYS[2], ARGV[3])
return 1
"""

# KEYS: replicas zset. ARGV: replica, period (ms); 'leave' as ARGV[3] removes it.
# Returns the live replicas (heartbeat within the period), oldest name first.
_HEARTBEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[3] == 'leave' then
  redis.call('ZREM', KEYS[1], ARGV[1])
else
  redis.call('ZADD', KEYS[1], now, ARGV[1])
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""

# KEYS: one sorted set per window. ARGV: a unique member, then limit and period (ms) per key.
# Takes a place in every window, or in none: returns 0, or the milliseconds until one frees.
_WINDOWS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local wait = 0
for i = 1, #KEYS do
  local limit = tonumber(ARGV[2 * i])
  local period = tonumber(ARGV[2 * i + 1])
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - period)
  if redis.call('ZCARD', KEYS[i]) >= limit then
    local oldest = redis.call('ZRANGE', KEYS[i], 0, 0, 'WITHSCORES')
    wait = math.max(wait, tonumber(oldest[2]) + period - now)
  end
end
if wait > 0 then return tostring(math.max(wait, 1)) end
for i = 1, #KEYS do
  redis.call('ZADD', KEYS[i], now, ARGV[1] .. now)
  redis.call('PEXPIRE', KEYS[i], math.ceil(tonumber(ARGV[2 * i + 1])))
end
return '0'
"""


def conversation_member(key: ConversationKey) -> str:
    return json.dumps([key.bot, key.platform, key.chat_id, key.user_id, key.thread_id])


@dataclass(frozen=True)
class WorkItem:
    """One stream entry: a journaled message waiting in its partition."""

    partition: int
    id: str
    bot: str
    seq: int
    conversation: str


class RedisCoordination:
    """The Redis side of :class:`core.replicas.Replicas` (its own client, same server)."""

    def __init__(self, client: aioredis.Redis, *, prefix: str = "chatbridge:") -> None:
        self._r = client
        self._p = prefix
        self._record = client.register_script(_RECORD_AND_QUEUE)
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
        self._ack = client.register_script(_ACK)
        self._heartbeat = client.register_script(_HEARTBEAT)
        self._windows = client.register_script(_WINDOWS)
        self._groups: set[int] = set()

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "chatbridge:") -> RedisCoordination:
        return cls(aioredis.Redis.from_url(url, decode_responses=True), prefix=prefix)

    async def close(self) -> None:
        await self._r.aclose()

    async def ping(self) -> bool:
        try:
            return bool(await self._r.ping())
        except Exception:
            return False

    def stream(self, partition: int) -> str:
        return f"{self._p}q:{partition}"

    def lease_key(self, name: str) -> str:
        return f"{self._p}lease:{name}"

    # --- the work queue -------------------------------------------------------------------------

    async def record_and_queue(
        self, inbound: Inbound, source: str, partition: int
    ) -> JournalEntry | None:
        """The journal's ``record`` (same keys, same result) plus the XADD, atomically."""
        bot = inbound.key.bot
        now = to_micros(utcnow())
        seq = await self._record(
            keys=[
                f"{self._p}j:seq:{bot}",
                f"{self._p}j:src:{bot}",
                f"{self._p}j:open:{bot}",
                f"{self._p}j:chat:{bot}",
                self.stream(partition),
            ],
            args=[
                f"{self._p}j:e:{bot}:",
                source,
                dump_inbound(inbound),
                now,
                inbound.key.chat_id,
                inbound.message_id or "",
                bot,
                conversation_member(inbound.key),
            ],
        )
        if not seq:
            return None
        return received_entry(int(seq), source, inbound, now)

    async def ensure_group(self, partition: int) -> None:
        if partition in self._groups:
            return
        try:
            await self._r.xgroup_create(self.stream(partition), GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._groups.add(partition)

    async def read(
        self, partitions: Sequence[int], consumer: str, *, block_ms: int, count: int = 100
    ) -> list[WorkItem]:
        """New entries of ``partitions`` for ``consumer`` (XREADGROUP ... >)."""
        if not partitions:
            return []
        streams: dict[Any, Any] = {self.stream(p): ">" for p in partitions}
        try:
            reply = await self._r.xreadgroup(GROUP, consumer, streams, count=count, block=block_ms)
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            # Redis lost its data (restarted without persistence): groups again, then read
            self._groups.clear()
            for partition in partitions:
                await self.ensure_group(partition)
            reply = await self._r.xreadgroup(GROUP, consumer, streams, count=count, block=block_ms)
        by_name = {self.stream(p): p for p in partitions}
        items: list[WorkItem] = []
        for name, entries in cast(list[Any], reply or []):
            items.extend(self._items(by_name[name], entries))
        return items

    async def claim(self, partition: int, consumer: str, min_idle_ms: int = 0) -> list[WorkItem]:
        """Every pending entry of ``partition`` idle at least ``min_idle_ms``, whoever read
        it, now ``consumer``'s (XAUTOCLAIM; the caller holds the partition's lease)."""
        items: list[WorkItem] = []
        start = "0-0"
        while True:
            reply = await self._r.xautoclaim(
                self.stream(partition),
                GROUP,
                consumer,
                min_idle_time=min_idle_ms,
                start_id=start,
                count=500,
            )
            start, entries = reply[0], reply[1]
            items.extend(self._items(partition, entries))
            if start == "0-0":
                return items

    @staticmethod
    def _items(partition: int, entries: Sequence[Any]) -> list[WorkItem]:
        out = []
        for entry_id, fields in entries:
            if not fields:  # deleted meanwhile
                continue
            out.append(
                WorkItem(partition, entry_id, fields["bot"], int(fields["seq"]), fields["conv"])
            )
        return out

    async def ack(self, item: WorkItem, lease: str) -> bool:
        """Acknowledge and delete ``item``, if ``lease`` still holds its partition."""
        keys = [self.lease_key(f"p:{item.partition}"), self.stream(item.partition)]
        return bool(await self._ack(keys=keys, args=[lease, GROUP, item.id]))

    async def entry(self, bot: str, seq: int) -> JournalEntry | None:
        """The journal entry (the journal's own layout), or None once pruned."""
        f = cast(dict[str, str], await self._r.hgetall(f"{self._p}j:e:{bot}:{seq}"))
        if not f:
            return None
        return entry_from_fields(seq, f)

    async def agree_partitions(self, partitions: int) -> int:
        """The partition count every replica uses: the first replica's, kept in Redis."""
        await self._r.set(f"{self._p}partitions", partitions, nx=True)
        return int(await self._r.get(f"{self._p}partitions") or partitions)

    # --- leases and membership --------------------------------------------------------------------

    async def acquire(self, name: str, replica: str, period_ms: int) -> str | None:
        value = await self._acquire(
            keys=[self.lease_key(name), f"{self._p}lease-fence"], args=[replica, period_ms]
        )
        return str(value) if value else None

    async def renew(self, name: str, value: str, period_ms: int) -> bool:
        return bool(await self._renew(keys=[self.lease_key(name)], args=[value, period_ms]))

    async def release(self, name: str, value: str) -> bool:
        return bool(await self._release(keys=[self.lease_key(name)], args=[value]))

    async def holder(self, name: str) -> str | None:
        value = await self._r.get(self.lease_key(name))
        return None if value is None else str(value).rsplit(" ", 1)[0]

    async def heartbeat(self, replica: str, period_ms: int, *, leave: bool = False) -> list[str]:
        live = await self._heartbeat(
            keys=[f"{self._p}replicas"], args=[replica, period_ms, "leave" if leave else ""]
        )
        return [str(r) for r in live]

    # --- shared windows ---------------------------------------------------------------------------

    async def take(self, windows: Sequence[tuple[str, int, float]]) -> float:
        """A place in every ``(name, limit, period seconds)`` window at once: 0.0, or the
        seconds until asking again may succeed (nothing taken then)."""
        keys = [f"{self._p}w:{name}" for name, _, _ in windows]
        args: list[Any] = [uuid.uuid4().hex[:12] + ":"]
        for _, limit, period in windows:
            args += [limit, period * 1000.0]
        wait_ms = float(await self._windows(keys=keys, args=args))
        return wait_ms / 1000.0
