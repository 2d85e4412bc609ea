"""The delivery journal on Redis, beside :class:`~core.store.redis.RedisStore`'s sessions.

Layout (under the store's prefix, per bot ``<b>``):

- ``j:seq:<b>``: the arrival counter; ``j:src:<b>``: a hash platform source id -> seq, so a
  redelivered message is recorded once
- ``j:e:<b>:<seq>``: a hash per entry (source, inbound, state, answer, times)
- ``j:open:<b>``: a sorted set of unfinished seqs (score = seq)
- ``j:chat:<b>``: a hash chat id -> ``"<received micros> <seq> <message id>"`` of the chat's
  latest message, for catching up after downtime
- ``j:e:<b>:<seq>`` fields ``fence_key``/``fence``: with several replicas, the partition lease
  the turn last started under; every state write checks that the writer runs under it and
  that it is still held (a stale run's write raises :class:`~core.errors.FencedOut`)
- ``j:done``: finished entries (``<b> <seq>``) scored by the time they finished, for pruning

Every change is one Lua script, so it is atomic across replicas.
"""

from __future__ import annotations

import builtins
import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from chatbridge.core.errors import FencedOut
from chatbridge.core.store._common import from_micros, to_micros, utcnow
from chatbridge.core.store._journal_codec import (
    dump_answer,
    dump_inbound,
    load_answer,
    load_inbound,
)
from chatbridge.core.store.redis_pipelined import PipelinedRedis, hot_script
from chatbridge.core.types import Inbound, JournalEntry, ReplyMessage, TurnState

if TYPE_CHECKING:
    import redis.asyncio as aioredis

# KEYS: seq counter, source hash, open zset, chat hash. ARGV: prefix for entries ("j:e:<b>:"),
# source, inbound, now, chat id, message id ('' = none). Returns the new seq, or 0.
_RECORD = """
if redis.call('HEXISTS', KEYS[2], ARGV[2]) == 1 then return 0 end
local seq = redis.call('INCR', KEYS[1])
redis.call('HSET', KEYS[2], ARGV[2], seq)
redis.call('HSET', ARGV[1] .. seq, 'source', ARGV[2], 'inbound', ARGV[3], 'state', 'received',
  'received_at', ARGV[4], 'updated_at', ARGV[4])
redis.call('ZADD', KEYS[3], seq, seq)
if ARGV[6] ~= '' then
  redis.call('HSET', KEYS[4], ARGV[5], ARGV[4] .. ' ' .. seq .. ' ' .. ARGV[6])
end
return seq
"""

# KEYS: entry hash, open zset, done zset, and with several replicas optionally the partition's
# lease and stream. ARGV: state, now, seq, done member, answer ('' = keep), the partition lease
# the writer runs the turn under ('' = none), then with the two optional keys the stream's group
# and the turn's stream entry id. Returns 1, 0 when the entry is gone, -1 when fenced: the entry
# was last started by a replica under a partition lease (``fence_key`` = ``fence``, see
# core.store.redis_coordination), and the writer's lease is not that one, or that one is not
# held any more. A finishing state with the optional keys also acknowledges and deletes the
# turn's stream entry when the writer's lease still holds the partition (the check the
# coordination's own ack script makes), and then returns 2: the turn's last write and its
# acknowledgement in one round trip.
_ADVANCE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local fence = redis.call('HMGET', KEYS[1], 'fence_key', 'fence')
if fence[1] then
  if ARGV[6] ~= '' and ARGV[6] ~= fence[2] then return -1 end
  if redis.call('GET', fence[1]) ~= fence[2] then return -1 end
end
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'updated_at', ARGV[2])
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'answer', ARGV[5]) end
if ARGV[1] == 'delivered' or ARGV[1] == 'refused' or ARGV[1] == 'failed_notified' then
  redis.call('ZREM', KEYS[2], ARGV[3])
  redis.call('ZADD', KEYS[3], ARGV[2], ARGV[4])
  if KEYS[5] and ARGV[6] ~= '' and redis.call('GET', KEYS[4]) == ARGV[6] then
    redis.call('XACK', KEYS[5], ARGV[7], ARGV[8])
    redis.call('XDEL', KEYS[5], ARGV[8])
    return 2
  end
end
return 1
"""

# KEYS: done zset. ARGV: cutoff, key prefix. Deletes finished entries and their source ids.
_PRUNE = """
local doomed = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
for _, member in ipairs(doomed) do
  local sep = string.find(member, ' [^ ]*$')
  local bot = string.sub(member, 1, sep - 1)
  local seq = string.sub(member, sep + 1)
  local entry = ARGV[2] .. 'j:e:' .. bot .. ':' .. seq
  local source = redis.call('HGET', entry, 'source')
  if source then redis.call('HDEL', ARGV[2] .. 'j:src:' .. bot, source) end
  redis.call('DEL', entry)
  redis.call('ZREM', KEYS[1], member)
end
return #doomed
"""


@dataclass(frozen=True)
class StreamAck:
    """The work item a fenced turn's finishing journal write acknowledges in the same script
    (see :meth:`RedisJournal.fenced`): its partition's lease key, stream, group, entry id."""

    lease_key: str
    stream: str
    group: str
    entry_id: str


@dataclass
class Fence:
    """One fenced run of a turn; ``acked``: its work item was acknowledged with the journal's
    finishing write (so the caller need not acknowledge it again)."""

    lease: str
    ack: StreamAck | None = None
    acked: bool = False


class RedisJournal:
    """``core.protocols.Journal`` on Redis (shares the store's client)."""

    def __init__(
        self, client: aioredis.Redis, prefix: str, fast: PipelinedRedis | None = None
    ) -> None:
        self._r = client
        self._p = prefix
        # a turn's record and writes: on the pipelined connection (the store's, when it has one)
        self._record = hot_script(client, fast, _RECORD)
        self._advance = hot_script(client, fast, _ADVANCE)
        self._prune = client.register_script(_PRUNE)
        self._fences: dict[tuple[str, int], Fence] = {}  # (bot, seq) -> its run, see fenced()

    def _entry_key(self, bot: str, seq: int | str) -> str:
        return f"{self._p}j:e:{bot}:{seq}"

    async def record(self, inbound: Inbound, source: str) -> JournalEntry | None:
        bot = inbound.key.bot
        now = to_micros(utcnow())
        seq = await self._record(
            keys=[
                f"{self._p}j:seq:{bot}",
                f"{self._p}j:src:{bot}",
                f"{self._p}j:open:{bot}",
                f"{self._p}j:chat:{bot}",
            ],
            args=[
                self._entry_key(bot, ""),
                source,
                dump_inbound(inbound),
                now,
                inbound.key.chat_id,
                inbound.message_id or "",
            ],
        )
        if not seq:
            return None
        return received_entry(int(seq), source, inbound, now)

    @contextlib.contextmanager
    def fenced(
        self, bot: str, seq: int, lease: str, ack: StreamAck | None = None
    ) -> Iterator[Fence]:
        """Several replicas: while this block runs, the journal's writes for ``seq`` are this
        replica's run of the turn under partition lease ``lease`` (the value
        ``RedisCoordination.start_turn`` stamped on the entry): refused with
        :class:`FencedOut` once another run started it or the lease is gone. With ``ack``,
        the write that finishes the turn also acknowledges its work item, under the same
        lease (the yielded :class:`Fence` says whether it did)."""
        fence = Fence(lease, ack)
        self._fences[(bot, seq)] = fence
        try:
            yield fence
        finally:
            if self._fences.get((bot, seq)) is fence:
                del self._fences[(bot, seq)]

    async def _move(self, bot: str, seq: int, state: TurnState, answer: str = "") -> None:
        fence = self._fences.get((bot, seq))
        keys = [self._entry_key(bot, seq), f"{self._p}j:open:{bot}", f"{self._p}j:done"]
        args: list[Any] = [state.value, to_micros(utcnow()), seq, f"{bot} {seq}", answer]
        args.append(fence.lease if fence else "")
        ack = fence.ack if fence and state.finished else None
        if ack is not None:
            keys += [ack.lease_key, ack.stream]
            args += [ack.group, ack.entry_id]
        moved = await self._advance(keys=keys, args=args)
        if moved == -1:
            raise FencedOut(f"journal entry {seq} of {bot}: the lease this run held has passed on")
        if moved == 2 and fence is not None:
            fence.acked = True

    async def advance(self, bot: str, seq: int, state: TurnState) -> None:
        await self._move(bot, seq, state)

    async def answer(self, bot: str, seq: int, messages: Sequence[ReplyMessage]) -> None:
        await self._move(bot, seq, TurnState.ANSWERED, dump_answer(messages))

    async def unfinished(self, bot: str) -> builtins.list[JournalEntry]:
        seqs = cast(builtins.list[str], await self._r.zrange(f"{self._p}j:open:{bot}", 0, -1))
        if not seqs:
            return []
        async with self._r.pipeline(transaction=False) as pipe:
            for seq in seqs:
                pipe.hgetall(self._entry_key(bot, seq))
            rows: builtins.list[dict[str, str]] = await pipe.execute()
        return [self._entry(int(seq), row) for seq, row in zip(seqs, rows, strict=True) if row]

    @staticmethod
    def _entry(seq: int, f: dict[str, Any]) -> JournalEntry:
        return entry_from_fields(seq, f)

    async def last_messages(self, bot: str, since: datetime) -> dict[str, str]:
        chats = cast(dict[str, str], await self._r.hgetall(f"{self._p}j:chat:{bot}"))
        cutoff = to_micros(since)
        out: dict[str, str] = {}
        for chat, value in chats.items():
            when, _seq, message_id = value.split(" ", 2)
            if int(when) >= cutoff:
                out[chat] = message_id
        return out

    async def prune(self, older_than: timedelta) -> int:
        cutoff = to_micros(utcnow() - older_than)
        return int(await self._prune(keys=[f"{self._p}j:done"], args=[cutoff, self._p]))


# The entry layout shared with core.store.redis_coordination, which records into the same hash.


def received_entry(seq: int, source: str, inbound: Inbound, now_micros: int) -> JournalEntry:
    """The entry :meth:`RedisJournal.record` (or the replicas' intake) just wrote."""
    when = from_micros(now_micros)
    return JournalEntry(
        seq=seq,
        source=source,
        inbound=inbound,
        state=TurnState.RECEIVED,
        received_at=when,
        updated_at=when,
    )


def entry_from_fields(seq: int, f: dict[str, Any]) -> JournalEntry:
    """An entry read back from its hash."""
    answer = f.get("answer")
    return JournalEntry(
        seq=seq,
        source=f["source"],
        inbound=load_inbound(f["inbound"]),
        state=TurnState(f["state"]),
        answer=load_answer(answer) if answer else None,
        received_at=from_micros(int(f["received_at"])),
        updated_at=from_micros(int(f["updated_at"])),
    )
