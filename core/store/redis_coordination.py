"""Redis primitives for several replicas of one configuration (see :mod:`core.replicas`).

Nothing here is home-made coordination: each piece is a Redis primitive, wrapped in a Lua
script where two steps must happen together.

- **Work queue**: one Redis Stream per partition (``q:<p>``) with one consumer group
  (``turns``). A journaled message is recorded *and* queued in one script (the journal's
  own record script with an ``XADD`` appended), so a crash cannot leave one without the
  other. The partition's owner reads with ``XREADGROUP``; a new owner takes the pending
  entries of a dead or departed one with ``XAUTOCLAIM``. When the owner itself records a
  message, the same script also reads the partition (:meth:`record_and_take`): the message
  is taken without a read back.
- **Bells**: whoever queues an entry it does not take rings the partition's holder (named in
  its lease) on ``bell:<replica>``, a capped stream of partition numbers; the holder waits on
  its bell alone, so what it took itself never wakes it.
- **Leases with fencing**: ``lease:<name>`` holds ``"<replica> <token>"``, set only when
  absent (``SET NX PX`` semantics) with a token from an ever-growing counter, renewed and
  released only by its holder. Every step on a partition's stream checks its lease in the
  same script as the step: reading, claiming, starting a turn, acknowledging (a message's
  acknowledgement rides on the journal's write that finishes its turn). So a replica
  that lost a partition (dead, stalled, or a read still on its way when it handed the
  partition back) can neither take a newer message away from the holder nor run one: the
  stream hands each message to the lease holder, in order. Reads are never blocking
  ``XREADGROUP`` calls (a blocked read outlives the lease it was issued under); a plain
  ``XREAD BLOCK`` on the bell only waits for something new, then a fenced script reads it.
- **Fenced journal writes**: taking a message (reading or claiming it) stamps its journal
  entry with the partition's lease (``fence_key``, ``fence``) and returns the entry, in the
  same script; a turn run again under another lease is stamped again (:meth:`start_turn`).
  The journal's state writes carry the lease of the run making them and are refused unless
  it is that stamp and still held (:meth:`core.store.redis_journal.RedisJournal.fenced`), so
  a replica that resumes after a stall past its lease cannot mark the message sent (and send
  it to the backend again), nor write or deliver an answer. (A message already on its way to
  the backend when the replica froze still arrives there once more: fencing needs the
  resource to check the token, and the backends do not.)
- **Session commands** (``/reset``, a language change) go through the conversation's stream
  too, so they run in order with its turns on the partition's holder; the caller waits for
  the result on ``reply:<id>``.
- **Membership**: ``replicas``, a sorted set of replica names scored by their last
  heartbeat (milliseconds of Redis's clock), so every replica computes the same fair share.
- **Cancels**: a user's /cancel is published on ``cancel:<bot>``; every replica serving
  the bot listens, the one running that conversation's turn stops it, and each answers on
  the caller's ``reply:<id>`` list whether it did.
- **Shared windows**: ``w:<name>``, a sorted set of grant times per limit (a sliding log),
  taken for several limits at once or not at all.

Times come from Redis's ``TIME`` so replicas with skewed clocks agree.
"""

from __future__ import annotations

import asyncio
import json
import uuid
import zlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, cast

import redis.asyncio as aioredis
import redis.exceptions

from chatbridge.core.store._common import to_micros, utcnow
from chatbridge.core.store._journal_codec import dump_inbound, load_key
from chatbridge.core.store.redis import redis_client
from chatbridge.core.store.redis_journal import (
    StreamAck,
    entry_from_fields,
    received_entry,
)
from chatbridge.core.store.redis_pipelined import PipelinedRedis, hash_fields, hot_script
from chatbridge.core.store.redis_scripts import (
    ACK,
    ACQUIRE,
    BEAT_AND_RENEW,
    CLAIM,
    HEARTBEAT,
    QUEUE,
    READ,
    RECORD_AND_QUEUE,
    RELEASE,
    RENEW,
    TAKE,
    WINDOWS,
)
from chatbridge.core.types import ConversationKey, Inbound, JournalEntry, Prelude, PreludeRead

GROUP = "turns"


# Redis is out of reach (down, restarting, still loading its data): worth trying again
OUT_OF_REACH: tuple[type[Exception], ...] = (
    redis.exceptions.ConnectionError,  # BusyLoadingError (still loading the AOF) included
    redis.exceptions.TimeoutError,
)


def conversation_member(key: ConversationKey) -> str:
    return json.dumps([key.bot, key.platform, key.chat_id, key.user_id, key.thread_id])


def partition_of(key: ConversationKey, partitions: int) -> int:
    """The partition (of ``partitions``) whose holder runs ``key``'s turns."""
    return zlib.crc32(conversation_member(key).encode()) % partitions


@dataclass(frozen=True)
class WorkItem:
    """One stream entry: a journaled message (``seq``) or a session command waiting in its
    partition."""

    partition: int
    id: str
    bot: str
    seq: int
    conversation: str
    command: str = ""  # "": a journaled message; else a session command (reset, language)
    arg: str = ""
    reply: str = ""  # the command's reply list, where its caller waits
    # a message's journal entry as it was taken, stamped with lease ``taken_under`` (None:
    # a command, or the entry is gone)
    entry: JournalEntry | None = field(default=None, compare=False, repr=False)
    taken_under: str = ""
    # the turn's prelude, read with the message's record (see RedisCoordination.record_and_take)
    read: PreludeRead | None = field(default=None, compare=False, repr=False)

    @property
    def key(self) -> ConversationKey:
        return load_key(json.loads(self.conversation))


@dataclass(frozen=True)
class Recorded:
    """What :meth:`RedisCoordination.record_and_take` did: the message's journal entry (None:
    recorded before, nothing queued or taken), and the entries taken under the caller's lease
    (None: the lease is not the caller's any more; the message waits in its stream for the
    holder)."""

    entry: JournalEntry | None
    items: list[WorkItem] | None


@dataclass(frozen=True)
class ReadResult:
    """What a fenced read found: new entries, partitions no longer ours, and per partition
    read, its last entry read (or its newest: every newer one is new)."""

    items: list[WorkItem]
    lost: list[int]
    last_ids: dict[int, str]


class RedisCoordination:
    """The Redis side of :class:`core.replicas.Replicas` (its own client, same server)."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = "chatbridge:",
        fast: PipelinedRedis | None = None,
    ) -> None:
        self._r = client
        self._fast = fast
        self._p = prefix
        # a turn's steps on the pipelined connection (core.store.redis_pipelined), when given
        self._record = hot_script(client, fast, RECORD_AND_QUEUE)
        self._queue = client.register_script(QUEUE)
        self._acquire = client.register_script(ACQUIRE)
        self._renew = client.register_script(RENEW)
        self._release = client.register_script(RELEASE)
        self._ack = hot_script(client, fast, ACK)
        self._read = client.register_script(READ)
        self._claim = client.register_script(CLAIM)
        self._start = hot_script(client, fast, TAKE)
        self._heartbeat = client.register_script(HEARTBEAT)
        self._beat_and_renew = client.register_script(BEAT_AND_RENEW)
        self._windows = hot_script(client, fast, WINDOWS)

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "chatbridge:") -> RedisCoordination:
        # the store's pool: room for as many commands in flight as the store (redis-py's
        # default pool holds 100, and raises past it)
        return cls(redis_client(url), prefix=prefix, fast=PipelinedRedis.for_url(url))

    async def close(self) -> None:
        await self._r.aclose()
        if self._fast is not None:
            await self._fast.aclose()

    async def ping(self) -> bool:
        try:
            return bool(await self._r.ping())
        except Exception:
            return False

    def stream(self, partition: int) -> str:
        return f"{self._p}q:{partition}"

    def lease_key(self, name: str) -> str:
        return f"{self._p}lease:{name}"

    def _partition_lease(self, partition: int) -> str:
        return self.lease_key(f"p:{partition}")

    # --- the work queue -------------------------------------------------------------------------

    async def record_and_queue(
        self, inbound: Inbound, source: str, partition: int
    ) -> JournalEntry | None:
        """The journal's ``record`` (same keys, same result) plus the XADD, atomically; the
        partition's holder is told (its bell)."""
        return (await self.record_and_take(inbound, source, partition, "", "", count=0)).entry

    async def record_and_take(
        self,
        inbound: Inbound,
        source: str,
        partition: int,
        lease: str,
        consumer: str,
        *,
        count: int = 100,
        prelude: Prelude | None = None,
    ) -> Recorded:
        """:meth:`record_and_queue`, then, in the same step, what :meth:`read` does for
        ``partition`` under ``lease``: the partition's holder records a message and takes it
        (with any older entry no read took yet) without waiting to read it back. With
        ``prelude``, when the new message is all it took (its turn starts now), the same step
        also takes its place in the turn's window and reads its session (the taken item's
        ``read``): the turn needs no other round trip to start. (``lease`` "": only record
        and queue, ringing the holder's bell.)"""
        bot = inbound.key.bot
        now = to_micros(utcnow())
        keys = [
            f"{self._p}j:seq:{bot}",
            f"{self._p}j:src:{bot}",
            f"{self._p}j:open:{bot}",
            f"{self._p}j:chat:{bot}",
            self.stream(partition),
            self._partition_lease(partition),
        ]
        args: list[Any] = [
            f"{self._p}j:e:{bot}:",
            source,
            dump_inbound(inbound),
            now,
            inbound.key.chat_id,
            inbound.message_id or "",
            bot,
            conversation_member(inbound.key),
            self._p,
            partition,
            lease,
            GROUP,
            consumer,
            count,
        ]
        if prelude is not None:
            window = prelude.window
            keys += [f"{self._p}w:{window[0]}" if window else "", prelude.session]
            args += [_window_member(), window[1], window[2] * 1000.0] if window else ["", 0, 0]
        reply = await self._record(keys=keys, args=args)
        if not reply:
            return Recorded(None, [])
        seq, got, *read = cast(list[Any], reply)
        entry = received_entry(int(seq), source, inbound, now)
        if got == -1:  # not asked to take
            return Recorded(entry, [])
        if got == 0:  # the lease is not the caller's
            return Recorded(entry, None)
        items = self._items(partition, got, lease)
        if read:  # the prelude, read for the one item taken: the new message
            wait_ms, session = float(read[0]), hash_fields(read[1])
            verdict = PreludeRead(wait_ms / 1000.0 if wait_ms > 0 else None, session)
            items = [replace(items[0], read=verdict)]
        return Recorded(entry, items)

    async def queue_command(
        self, key: ConversationKey, partition: int, command: str, arg: str = ""
    ) -> str:
        """Queue a session command behind the conversation's messages; returns the reply id
        to wait on with :meth:`wait_reply`."""
        reply = uuid.uuid4().hex
        fields: dict[Any, Any] = {
            "bot": key.bot,
            "seq": 0,
            "conv": conversation_member(key),
            "cmd": command,
            "arg": arg,
            "reply": reply,
        }
        pairs = [x for field_value in fields.items() for x in field_value]
        keys = [self.stream(partition), self._partition_lease(partition)]
        await self._queue(keys=keys, args=[self._p, partition, *pairs])
        return reply

    async def wait_reply(self, reply: str, timeout: float) -> str | None:
        """The result of a queued command, or None when it did not come within ``timeout``."""
        got = await self._r.blpop([f"{self._p}reply:{reply}"], timeout=max(0.01, timeout))
        return None if got is None else str(got[1])

    async def read(
        self, leases: Mapping[int, str], consumer: str, *, count: int = 100
    ) -> ReadResult:
        """New entries of the partitions whose lease ``leases`` holds (partition -> lease
        value), for ``consumer``; never blocks (see :meth:`wait`)."""
        partitions = list(leases)
        if not partitions:
            return ReadResult([], [], {})
        keys: list[str] = []
        for p in partitions:
            keys += [self._partition_lease(p), self.stream(p)]
        args: list[Any] = [GROUP, consumer, count, self._p, *(leases[p] for p in partitions)]
        reply = cast(list[Any], await self._read(keys=keys, args=args))
        out = ReadResult([], [], {})
        for p, got in zip(partitions, reply, strict=True):
            if not got:
                out.lost.append(p)
                continue
            out.last_ids[p] = str(got[0])
            out.items.extend(self._items(p, got[1], leases[p]))
        return out

    def bell(self, replica: str) -> str:
        """The key of ``replica``'s bell (rung in Lua by ``RING``)."""
        return f"{self._p}bell:{replica}"

    async def wait(self, replica: str, since: str, block_ms: int) -> tuple[str, set[int]] | None:
        """Until ``replica``'s bell rings after ``since`` (an id of its bell stream; "0-0" at
        first), or ``block_ms``: where it rang up to and the partitions it rang for (None: the
        time ran out). Rung by whoever queues an entry in a partition ``replica`` holds and
        does not take it at once. A plain XREAD: a wait that outlives a lease takes nothing."""
        bell = self.bell(replica)
        reply = await self._r.xread({bell: since}, count=1000, block=max(1, block_ms))
        if not reply:
            return None
        entries = cast(list[Any], reply)[0][1]
        return str(entries[-1][0]), {int(fields["p"]) for _, fields in entries}

    async def claim(
        self, partition: int, lease: str, consumer: str, min_idle_ms: int = 0
    ) -> list[WorkItem] | None:
        """Every pending entry of ``partition`` idle at least ``min_idle_ms``, whoever read
        it, now ``consumer``'s (XAUTOCLAIM); None when ``lease`` no longer holds it."""
        keys = [self._partition_lease(partition), self.stream(partition)]
        reply = await self._claim(keys=keys, args=[lease, GROUP, consumer, min_idle_ms, self._p])
        if reply == 0:
            return None
        return self._items(partition, cast(list[Any], reply), lease)

    @staticmethod
    def _items(partition: int, entries: Sequence[Any], lease: str) -> list[WorkItem]:
        """Entries as ``taken`` returns them: id, stream fields, journal fields."""
        out = []
        for entry_id, raw, data in entries:
            fields = hash_fields(raw)
            seq = int(fields["seq"])
            journal = hash_fields(data) if data else None
            out.append(
                WorkItem(
                    partition,
                    entry_id,
                    fields["bot"],
                    seq,
                    fields["conv"],
                    fields.get("cmd", ""),
                    fields.get("arg", ""),
                    fields.get("reply", ""),
                    entry=entry_from_fields(seq, journal) if journal else None,
                    taken_under=lease,
                )
            )
        return out

    async def ack(self, item: WorkItem, lease: str, result: str = "") -> bool:
        """Acknowledge and delete ``item``, if ``lease`` still holds its partition; a command's
        ``result`` goes to its caller in the same step."""
        reply = f"{self._p}reply:{item.reply}" if item.reply else ""
        keys = [self._partition_lease(item.partition), self.stream(item.partition), reply]
        return bool(await self._ack(keys=keys, args=[lease, GROUP, item.id, result]))

    def stream_ack(self, item: WorkItem) -> StreamAck:
        """What the journal needs to acknowledge ``item`` with the write that finishes its turn
        (:meth:`core.store.redis_journal.RedisJournal.fenced`): the same lease check and the
        same XACK and XDEL as :meth:`ack`, one round trip fewer per turn. (A command's reply
        needs :meth:`ack`.)"""
        return StreamAck(
            self._partition_lease(item.partition), self.stream(item.partition), GROUP, item.id
        )

    async def start_turn(self, item: WorkItem, lease: str) -> JournalEntry | Literal[False] | None:
        """A claimed message's turn starts: its journal entry, stamped with ``lease`` (the
        journal's writes for it are fenced by that lease from now on); None when the entry is
        gone (pruned); False when ``lease`` no longer holds the partition."""
        keys = [self._partition_lease(item.partition), f"{self._p}j:e:{item.bot}:{item.seq}"]
        reply = await self._start(keys=keys, args=[lease])
        if reply == 0:
            return False
        raw = cast(list[str], reply)
        if not raw:
            return None
        return entry_from_fields(item.seq, hash_fields(raw))

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

    async def holds(self, partition: int, lease: str) -> bool:
        """Whether ``lease`` still holds ``partition`` (a check before a step that cannot be
        fenced in the same script)."""
        return bool(await self._r.get(self._partition_lease(partition)) == lease)

    async def holder(self, name: str) -> str | None:
        value = await self._r.get(self.lease_key(name))
        return None if value is None else str(value).rsplit(" ", 1)[0]

    async def heartbeat(self, replica: str, period_ms: int, *, leave: bool = False) -> list[str]:
        live = await self._heartbeat(
            keys=[f"{self._p}replicas"], args=[replica, period_ms, "leave" if leave else ""]
        )
        return [str(r) for r in live]

    async def beat_and_renew(
        self, replica: str, period_ms: int, leases: Mapping[str, str]
    ) -> tuple[list[str], list[str]]:
        """:meth:`heartbeat` and :meth:`renew` of every lease in ``leases`` (name -> value
        held) in one script call: the live replicas, and the names of the leases lost."""
        names = list(leases)
        live, lost = cast(
            list[Any],
            await self._beat_and_renew(
                keys=[f"{self._p}replicas", *(self.lease_key(n) for n in names)],
                args=[replica, period_ms, *(leases[n] for n in names)],
            ),
        )
        return [str(r) for r in live], [names[int(i) - 1] for i in lost]

    # --- cancels ---------------------------------------------------------------------------------

    def cancel_channel(self, bot: str) -> str:
        return f"{self._p}cancel:{bot}"

    async def publish_cancel(self, key: ConversationKey) -> tuple[str, int]:
        """Ask every replica serving ``key.bot`` to stop ``key``'s running turn: the reply id
        their answers come to, and how many replicas were listening."""
        reply = uuid.uuid4().hex
        message = json.dumps([conversation_member(key), reply])
        listening = await self._r.publish(self.cancel_channel(key.bot), message)
        return reply, int(listening)

    async def answer_cancel(self, reply: str, cancelled: bool) -> None:
        name = f"{self._p}reply:{reply}"
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.rpush(name, "1" if cancelled else "0")
            pipe.expire(name, 60)
            await pipe.execute()

    async def cancel_answered(self, reply: str, replicas: int, timeout: float) -> bool:
        """Whether one of the ``replicas`` that heard the cancel stopped a turn: True at the
        first that did, False once all said no (or ``timeout`` seconds passed)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        for _ in range(replicas):
            left = deadline - loop.time()
            if left <= 0:
                break
            got = await self._r.blpop([f"{self._p}reply:{reply}"], timeout=max(0.01, left))
            if got is None:
                break
            if str(got[1]) == "1":
                return True
        return False

    async def cancels(
        self, bots: Sequence[str], listening: Callable[[], bool]
    ) -> AsyncIterator[tuple[ConversationKey, str]]:
        """The cancels published for ``bots`` (conversation, reply id), as they come, while
        ``listening()`` (asked at least every second: redis-py may swallow a cancellation)."""
        pubsub = self._r.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(*(self.cancel_channel(bot) for bot in bots))
            while listening():
                message = await pubsub.get_message(timeout=1.0)
                if message is None:
                    continue
                member, reply = json.loads(message["data"])
                yield load_key(json.loads(member)), str(reply)
        finally:
            await pubsub.aclose()

    # --- shared windows ---------------------------------------------------------------------------

    async def take(self, windows: Sequence[tuple[str, int, float]]) -> float:
        """A place in every ``(name, limit, period seconds)`` window at once: 0.0, or the
        seconds until asking again may succeed (nothing taken then)."""
        keys = [f"{self._p}w:{name}" for name, _, _ in windows]
        args: list[Any] = [_window_member()]
        for _, limit, period in windows:
            args += [limit, period * 1000.0]
        wait_ms = float(await self._windows(keys=keys, args=args))
        return wait_ms / 1000.0


def _window_member() -> str:
    """A prefix for the places one step takes in windows (the time is added to it)."""
    return uuid.uuid4().hex[:12] + ":"
