"""Several replicas of one configuration on one Redis: who runs which conversation's turns.

Conversations are hashed into ``partitions``; each partition has a Redis Stream of journaled
messages (see :mod:`core.store.redis_coordination`) and a lease. Any replica *accepts* a
message (a webhook hit, a poll, a gateway event): :meth:`Replicas.submit` writes it to the
journal and to its partition's stream in one step, and the adapter may then tell the platform
it was read. The replica holding the partition's lease *runs* it: it reads the stream in
order and hands each conversation's turns to its engine one at a time, so one conversation's
turns run in arrival order whichever replica received them. The holder takes the messages
it accepts itself in the same step as it records them (no read back; when the turn starts at
once, that step also judges its ``turns_per_minute`` window and reads its session: the
turn's :class:`core.types.Prelude`), and is woken (its bell) only by the entries others
queue.

- Every replica takes free partitions up to its fair share (partitions / live replicas) and,
  when replicas join, hands back idle ones above it; leases are renewed every third of
  ``lease`` seconds (:mod:`core.partition_leases` keeps them).
- A replica that dies stops renewing: its leases and heartbeat expire after ``lease`` seconds,
  the survivors' share grows, they take its partitions and claim its pending stream entries
  (``XAUTOCLAIM``). Each claimed turn resumes by its journal state, with the recovery rules of
  :mod:`core.recovery` (never sent: run; sent: recovered or the user told to resend;
  answered: delivered).
- Graceful shutdown stops starting turns, lets running ones finish (the engine's grace),
  then releases every lease at once: the turns it had read but not started are claimed by the
  others immediately, not after the lease expires.
- Every step on a partition is fenced by its lease in Redis (reading, claiming, starting a
  turn, the journal's writes, acknowledging), so a replica that lost a partition without
  knowing yet (stalled, or a read on its way while it handed the partition back) cannot take
  a message from the holder or run one out of turn. A replica that learns it lost a partition
  drops what it had queued from it: the next holder claims those, oldest first.
- Session commands (``/reset``, a language change, an admin's resets) are queued in the
  conversation's stream like messages (:meth:`Replicas.command`), so they run in order with
  its turns.
- A /cancel cannot wait in that queue (the turn it stops is ahead of it): it is published
  to every replica serving the bot (:meth:`Replicas.cancel`), and the one running the
  conversation's turn stops it.

Leader leases (:meth:`Replicas.leader`) serve what exactly one replica may do at a time
(Telegram long polling).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

from chatbridge.core.errors import best_effort
from chatbridge.core.leaders import Leader, LeaderFlag
from chatbridge.core.partition_leases import Claim, PartitionLeases
from chatbridge.core.protocols import ClaimedTurns, FencedJournal, StoredReplies
from chatbridge.core.replica_cancels import answer_cancels, cancel_everywhere
from chatbridge.core.retry import RetryPolicy, RetryState
from chatbridge.core.store.redis_coordination import (
    OUT_OF_REACH,
    RedisCoordination,
    WorkItem,
    conversation_member,
    partition_of,
)
from chatbridge.core.store.redis_journal import Fence
from chatbridge.core.turns import Turn
from chatbridge.core.types import ConversationKey, Inbound, JournalEntry, Prelude, TurnState

log = logging.getLogger(__name__)

CANCEL_WAIT = 1.5  # seconds a /cancel waits for the replicas' answers (Discord answers in 3)
ATTEMPTS = 5  # tries of one entry whose step failed (Redis out of reach) before leaving it
# seconds a message being accepted waits for an out-of-reach Redis (a restart) before the
# engine answers it unjournaled; the platform's request (a webhook's 200) waits with it
SUBMIT_PATIENCE = 10.0
SUBMIT_RETRY = RetryPolicy(attempts=100, base_delay=0.05, max_delay=1.0)  # bounded by time
WAIT_MS = 200  # longest wait on the bell (partitions new here are read after it at the latest)
# seconds between reads of every owned partition whatever rang (a record by an older version
# rings no bell): not more often, as such a read holds every partition's take lock
SWEEP = 1.0
READ_COUNT = 100  # entries read from one partition at a time


def default_replica_name() -> str:
    """``CHATBRIDGE_REPLICA`` from the environment, else ``<hostname>-<pid>``."""
    return os.environ.get("CHATBRIDGE_REPLICA") or f"{socket.gethostname()}-{os.getpid()}"


@dataclass
class _Conversation:
    items: deque[WorkItem] = field(default_factory=deque)
    task: asyncio.Task[None] | None = None
    running: WorkItem | None = None


class Replicas:
    def __init__(
        self,
        coordination: RedisCoordination,
        *,
        replica: str,
        partitions: int = 16,
        lease: float = 3.0,
    ) -> None:
        if partitions < 1 or lease <= 0:
            raise ValueError("replicas need partitions >= 1 and lease > 0")
        self.redis = coordination
        self.replica = replica
        self.partitions = partitions
        self.lease = lease
        self._engines: dict[str, ClaimedTurns] = {}
        self._replies: dict[str, StoredReplies] = {}
        self._fenced: dict[str, FencedJournal | None] = {}  # bot -> its journal, if fenced
        self._convs: dict[str, _Conversation] = {}
        self._seen: set[tuple[int, str]] = set()
        self._busy: Counter[int] = Counter()  # partition -> entries queued or running here
        # held from taking a partition's entries (a read, a claim, a record that takes) until
        # they are queued here: local order is the stream's order (see _taking)
        self._take_locks = [asyncio.Lock() for _ in range(partitions)]
        self._tasks: list[asyncio.Task[None]] = []
        self._leaders: list[Leader] = []
        self._stopping = False
        # loops end on this flag too: redis-py (8.x) may swallow a cancellation mid-command
        self._closed = False
        self.leases = PartitionLeases(
            coordination,
            replica=replica,
            partitions=partitions,
            lease=lease,
            take=self._take,
            dropped=self._drop_queued,
            busy=lambda partition: self._busy[partition],
            stopping=lambda: self._stopping,
        )
        self.command_wait = 120.0  # seconds a session command's caller waits for its result
        self.submit_patience = SUBMIT_PATIENCE
        self.turns_run = 0

    # --- wiring ---------------------------------------------------------------------------------

    def partition_of(self, key: ConversationKey) -> int:
        return partition_of(key, self.partitions)

    async def submit(self, inbound: Inbound, source: str) -> JournalEntry | None:
        """Journal ``inbound`` and queue it in its partition (None: already recorded).

        When this replica reads that partition, the same step takes the new entries (this
        one, and any older one no read took yet) as a read would, and queues them here: no
        wait for the reader to wake and read it back (two round trips fewer). Redis out of
        reach (restarting): tried again for up to ``submit_patience`` s, the platform's
        request waiting meanwhile, rather than run unjournaled against a store out of reach
        too. Safe: the journal knows a message it holds; entries a lost reply took are
        claimed back later."""

        def waiting(state: RetryState) -> None:
            if state.attempt_number == 1:
                log.warning("replica %s: Redis out of reach (%s); message %s waits for it",
                            self.replica, state.error, source)  # fmt: skip

        return await SUBMIT_RETRY.call(
            lambda: self._submit_once(inbound, source),
            lambda exc: isinstance(exc, OUT_OF_REACH),
            waiting,
            deadline=time.monotonic() + self.submit_patience,
        )

    async def _submit_once(self, inbound: Inbound, source: str) -> JournalEntry | None:
        partition = self.partition_of(inbound.key)
        if self._reading(partition) is not None:
            async with self._taking([partition]):
                lease = self._reading(partition)  # again: it may have moved meanwhile
                if lease is not None:
                    recorded = await self.redis.record_and_take(
                        inbound,
                        source,
                        partition,
                        lease,
                        self.replica,
                        count=READ_COUNT,
                        prelude=self._prelude(inbound.key),
                    )
                    self._dispatch_all(partition, lease, recorded.items)
                    return recorded.entry
        return await self.redis.record_and_queue(inbound, source, partition)

    def _prelude(self, key: ConversationKey) -> Prelude | None:
        """What the turn of a message of ``key`` reads first, to read with its record when its
        turn starts at once: nothing of the conversation is queued or running here (else the
        window is judged, and the session read, when the turn's time comes)."""
        engine = self._engines.get(key.bot)
        if engine is None or conversation_member(key) in self._convs:
            return None
        return engine.prelude(key)

    async def command(self, key: ConversationKey, command: str, arg: str = "") -> str | None:
        """Queue a session command behind ``key``'s messages and wait for the replica that
        runs the conversation to run it (``engine.run_command``): its result, or None when
        it did not come within ``command_wait`` seconds (it still runs, in its place)."""
        reply = await self.redis.queue_command(key, self.partition_of(key), command, arg)
        return await self.redis.wait_reply(reply, self.command_wait)

    async def cancel(self, key: ConversationKey) -> bool:
        """Stop ``key``'s running turn on whichever replica runs it (``engine.cancel_here``
        there); False when none does (or none said so within ``CANCEL_WAIT`` seconds)."""
        return await cancel_everywhere(self.redis, key, self.replica, CANCEL_WAIT)

    def serve(self, engine: ClaimedTurns, replies: StoredReplies) -> None:
        """Run ``engine.bot``'s claimed turns on ``engine``, answering through ``replies``."""
        self._engines[engine.bot] = engine
        self._replies[engine.bot] = replies
        journal = getattr(engine, "journal", None)  # (a protocol check: once, not per turn)
        self._fenced[engine.bot] = journal if isinstance(journal, FencedJournal) else None

    async def check(self) -> None:
        """Refuse a partition count other than the one the replicas on this Redis use."""
        agreed = await self.redis.agree_partitions(self.partitions)
        if agreed != self.partitions:
            # another count would hash a conversation elsewhere and break its order
            raise RuntimeError(
                f"[replicas] partitions = {self.partitions}, but the replicas on this Redis "
                f"use {agreed}: give every replica the same value (or empty the Redis first)"
            )

    async def start(self) -> None:
        await self.check()
        await self.leases.tick()
        self._tasks = [
            asyncio.create_task(self.leases.keep(lambda: self._closed), name="replicas:leases"),
            asyncio.create_task(self._read(), name="replicas:read"),
        ]
        if self._engines:
            self._tasks.append(
                asyncio.create_task(
                    answer_cancels(self.redis, self.replica, self._engines, lambda: self._closed),
                    name="replicas:cancels",
                )
            )
        log.info(
            "replica %s joined (%d live, owns %d of %d partitions)",
            self.replica,
            len(self.leases.live),
            len(self.leases.owned),
            self.partitions,
        )

    def stop_starting(self) -> None:
        """Start no more turns (running ones go on); what is queued stays pending."""
        self._stopping = True
        for leader in self._leaders:
            leader.stop()

    async def stop_leading(self) -> None:
        """Hand every leadership back now (the adapters stopped receiving), so another
        replica polls while this one's running turns finish."""
        leaders, self._leaders = self._leaders, []
        await asyncio.gather(*(leader.close() for leader in leaders), return_exceptions=True)

    async def stop(self) -> None:
        """After running turns ended: hand every partition and leadership back at once."""
        self.stop_starting()
        self._closed = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        convs = [c.task for c in self._convs.values() if c.task is not None]
        for task in convs:
            task.cancel()
        await asyncio.gather(*convs, return_exceptions=True)
        await asyncio.gather(*(leader.close() for leader in self._leaders), return_exceptions=True)
        with best_effort(log, "handing partitions back at shutdown"):
            await self.leases.leave()
        log.info("replica %s left; its partitions are free for the others", self.replica)

    # --- state for /readyz and /metrics -----------------------------------------------------------

    @property
    def healthy(self) -> bool:
        """Redis answered the last heartbeat (so this replica's leases are current)."""
        return self.leases.beat_ok and not self._stopping

    @property
    def owned(self) -> list[int]:
        return self.leases.owned

    @property
    def live(self) -> list[str]:
        return self.leases.live

    @property
    def claimed(self) -> int:
        """Pending entries claimed with the partitions taken (a dead holder's, say)."""
        return self.leases.claimed

    # --- what the lease keeper asks of the reader -------------------------------------------------

    async def _take(self, partition: int, lease: str, claim: Claim) -> list[WorkItem] | None:
        """Claim entries of ``partition`` under ``lease`` (``claim()``) and queue them here, in
        one hold of its take lock (see :meth:`_taking`): what was claimed (None: refused)."""
        async with self._taking([partition]):
            claimed = await claim()
            self._dispatch_all(partition, lease, claimed)
            return claimed

    def _drop_queued(self, partition: int) -> None:
        """``partition`` was lost: the entries queued here from it are dropped (still pending
        in Redis: the next holder claims them, in order); a running one is stopped by the
        fenced journal."""
        for conv in self._convs.values():
            kept: deque[WorkItem] = deque()
            for item in conv.items:
                if item.partition != partition or item is conv.running:
                    kept.append(item)
                else:
                    self._forget(item)
            conv.items = kept

    # --- reading and running ----------------------------------------------------------------------

    def _reading(self, partition: int) -> str | None:
        """The lease under which this replica takes ``partition``'s new entries now (None:
        not ours, handed back once idle, its pending entries being claimed, or stopping)."""
        return None if self._stopping else self.leases.readable(partition)

    @contextlib.asynccontextmanager
    async def _taking(self, partitions: Iterable[int]) -> AsyncIterator[None]:
        """Held while entries of ``partitions`` are taken from Redis and queued here. The
        reader, a claim and a record that takes (:meth:`submit`) take from the same
        consumer-group cursor, so Redis hands each entry out once and in order, but their
        replies come back on different connections in any order: one at a time per
        partition, from the call to the queueing, the order queued here is the stream's."""
        held: list[asyncio.Lock] = []
        try:
            for partition in sorted(partitions):  # one order: no deadlock between readers
                lock = self._take_locks[partition]
                await lock.acquire()
                held.append(lock)
            yield
        finally:
            for lock in held:
                lock.release()

    async def _read(self) -> None:
        known: dict[int, str] = {}  # partition -> the lease it was read under since readable
        bell = "0-0"  # where this replica's bell was heard up to
        due: set[int] | None = None  # partitions with news (None: read them all)
        everything = 0.0  # when every partition was last read
        loop = asyncio.get_running_loop()
        while not self._closed:
            readable = {p: v for p in self.leases.owned if (v := self._reading(p)) is not None}
            if not readable:
                await asyncio.sleep(min(0.2, self.lease / 3))
                continue
            known = {p: v for p, v in known.items() if readable.get(p) == v}
            if loop.time() - everything >= SWEEP:
                due = None  # a safety net, whatever rang (a record that rang no bell)
            leases = readable
            if due is None:
                everything = loop.time()
            else:  # only where something came (and partitions new here)
                leases = {p: v for p, v in leases.items() if p in due or p not in known}
            try:
                async with self._taking(leases):
                    got = await self.redis.read(leases, self.replica, count=READ_COUNT)
                    for partition in got.lost:
                        self.leases.lost(partition, leases[partition])
                    for item in got.items:
                        self._dispatch_all(item.partition, leases[item.partition], [item])
                known.update((p, leases[p]) for p in got.last_ids)
                counts = Counter(item.partition for item in got.items)
                due = {p for p, n in counts.items() if n >= READ_COUNT}
                if due:  # a batch that did not hold them all: read on at once
                    continue
                rang = await self.redis.wait(self.replica, bell, WAIT_MS)
                if rang is not None:
                    bell, due = rang
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("replica %s: reading the streams failed: %s", self.replica, exc)
                due = None
                await asyncio.sleep(0.5)

    def _dispatch_all(self, partition: int, value: str, items: list[WorkItem] | None) -> None:
        """Queue entries taken under lease ``value``: None (refused) or a lease that changed
        while they were on their way means they are not ours to run (they stay pending for
        the holder, who claims them, oldest first)."""
        if items is None:
            self.leases.lost(partition, value)
            return
        if self.leases.lease_of(partition) != value:
            return
        for item in items:
            self._dispatch(item)

    def _dispatch(self, item: WorkItem) -> None:
        if (item.partition, item.id) in self._seen:
            return
        self._seen.add((item.partition, item.id))
        self._busy[item.partition] += 1
        conv = self._convs.setdefault(item.conversation, _Conversation())
        conv.items.append(item)
        if conv.task is None:
            conv.task = asyncio.create_task(self._drain(item.conversation, conv))

    async def _drain(self, name: str, conv: _Conversation) -> None:
        try:
            while conv.items and not self._stopping:
                item = conv.running = conv.items[0]
                try:
                    await self._attempt(item)
                finally:
                    conv.running = None
                if conv.items and conv.items[0] is item:
                    conv.items.popleft()
                    self._forget(item)
        finally:
            conv.task = None
            if self._convs.get(name) is conv and not conv.items:
                del self._convs[name]
            elif conv.items and not self._stopping:
                conv.task = asyncio.create_task(self._drain(name, conv))

    async def _attempt(self, item: WorkItem) -> None:
        """Run ``item`` while its partition is ours; a step that failed (Redis out of reach,
        say) is tried again here, in its place, before anything behind it."""
        for attempt in range(1, ATTEMPTS + 1):
            lease = self.leases.lease_of(item.partition)
            if lease is None or self._stopping:
                return  # not ours: left pending for the partition's holder
            try:
                if await self._run(item, lease, first=attempt == 1):
                    return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("replica %s: claimed entry %s failed", self.replica, item.id)
                if attempt < ATTEMPTS:
                    await asyncio.sleep(min(self.lease, 0.1 * 2**attempt))
                continue
            # fenced out: the lease it ran under is gone. The partition back here under a new
            # lease (it lapsed and was taken again) means it runs again now, still first.
            if self.leases.lease_of(item.partition) in (None, lease):
                return
        # left pending: the periodic reclaim runs it again later
        log.error("replica %s: entry %s left after %d attempts", self.replica, item.id, ATTEMPTS)

    def _forget(self, item: WorkItem) -> None:
        self._seen.discard((item.partition, item.id))
        self._busy[item.partition] -= 1
        if self._busy[item.partition] <= 0:
            del self._busy[item.partition]

    async def _run(self, item: WorkItem, lease: str, *, first: bool = True) -> bool:
        """Run one entry under ``lease``; False when the lease was found gone (fenced).
        ``first``: its first attempt here (its journal entry as read is current)."""
        engine = self._engines.get(item.bot)
        if engine is None:
            log.warning("replica %s runs no bot %s: entry left pending", self.replica, item.bot)
            return True
        if item.command:
            # a session command writes only the session map, which has no fence: ask first
            if not await self.redis.holds(item.partition, lease):
                self.leases.lost(item.partition, lease)
                return False
            result = await engine.run_command(item.key, item.command, item.arg)
            return await self._ack(item, lease, result)
        if first and item.taken_under == lease:
            entry: JournalEntry | Literal[False] | None = item.entry  # stamped when it was read
        else:  # a retry, or under another lease: as it stands now, stamped with this lease
            entry = await self.redis.start_turn(item, lease)
        if entry is False:
            self.leases.lost(item.partition, lease)
            return False
        if entry is None or entry.state.finished:
            return await self._ack(item, lease)
        replies = self._replies[item.bot]
        surface = replies.surface_for(entry.inbound)
        fresh = entry.state is TurnState.RECEIVED
        resume = None if fresh else entry.state
        self.turns_run += 1
        log.debug(
            "replica %s runs %s seq %d (partition %d, lease %s, %s)",
            self.replica,
            item.bot,
            item.seq,
            item.partition,
            lease,
            entry.state,
        )
        journal = self._fenced.get(item.bot)
        # the turn's journal writes carry this run's lease: refused once another run took over;
        # the one that finishes the turn acknowledges the item in the same round trip
        fence: contextlib.AbstractContextManager[Fence | None] = (
            journal.fenced(item.bot, item.seq, lease, self.redis.stream_ack(item))
            if journal is not None
            else contextlib.nullcontext()
        )
        # the prelude read with the record holds for the turn's first start here only
        read = item.read if first and item.taken_under == lease else None
        with fence as run:
            turn = Turn(entry.inbound, surface, entry, resume=resume)
            await engine.run_claimed(turn, fresh=fresh, read=read)
        if run is not None and run.acked:
            return True
        return await self._ack(item, lease)

    async def _ack(self, item: WorkItem, lease: str, result: str = "") -> bool:
        if await self.redis.ack(item, lease, result):
            return True
        log.warning("replica %s: partition %d moved on mid-turn", self.replica, item.partition)
        self.leases.lost(item.partition, lease)
        return False

    # --- leaders ----------------------------------------------------------------------------------

    def leader(
        self,
        name: str,
        on_gain: Callable[[], Awaitable[None]],
        on_lose: Callable[[], Awaitable[None]],
    ) -> LeaderFlag:
        """Call ``on_gain`` whenever this replica becomes the one holding lease ``name`` (taken
        over within ``lease`` seconds of its holder's death), ``on_lose`` when it stops."""
        leader = Leader(self, name, on_gain, on_lose)
        self._leaders.append(leader)
        leader.start()
        return leader
