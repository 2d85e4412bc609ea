"""Partition leases for :class:`core.replicas.Replicas`: which partitions this replica holds.

- Every replica takes free partitions up to its fair share (partitions / live replicas) and,
  when replicas join, hands back idle ones above it; leases are renewed every third of
  ``lease`` seconds, with the heartbeat.
- A partition taken is not read until its pending entries (a dead holder's, or ones handed
  back) are claimed (``XAUTOCLAIM``) and queued: they go before any newer one.
- A lease found lost is forgotten at once, and the replica drops what it had queued from
  that partition: the next holder claims those, oldest first.

:class:`PartitionLeases` only holds the leases; the replica reads and runs the partitions'
entries, and the two meet at the callbacks the replica passes in: ``take`` (run a claim
under the partition's take lock and queue what it returned, so claimed entries keep the
stream's order), ``dropped`` (a partition was lost: drop what is queued from it), ``busy``
(entries of a partition queued or running: a partition is handed back only idle) and
``stopping`` (starting no more turns: then no partition is taken or handed back).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import zlib
from collections.abc import Awaitable, Callable

from chatbridge.core.errors import best_effort
from chatbridge.core.store.redis_coordination import RedisCoordination, WorkItem

log = logging.getLogger(__name__)

RECLAIM_EVERY = 30  # lease ticks (three a lease) between sweeps for stuck pending entries

Claim = Callable[[], Awaitable[list[WorkItem] | None]]
# (partition, lease, claim): run ``claim`` under the partition's take lock and queue what it
# returned under that lease; returns it (None: the lease no longer holds the partition)
Take = Callable[[int, str, Claim], Awaitable[list[WorkItem] | None]]


class PartitionLeases:
    def __init__(
        self,
        redis: RedisCoordination,
        *,
        replica: str,
        partitions: int,
        lease: float,
        take: Take,
        dropped: Callable[[int], None],
        busy: Callable[[int], int],
        stopping: Callable[[], bool],
    ) -> None:
        self.redis = redis
        self.replica = replica
        self.partitions = partitions
        self.lease = lease
        self.lease_ms = max(1, int(lease * 1000))
        self._take = take
        self._dropped = dropped
        self._busy = busy
        self._stopping = stopping
        self._owned: dict[int, str] = {}  # partition -> lease value
        self._draining: set[int] = set()  # owned, no longer read: handed back once idle
        self._claiming: set[int] = set()  # owned, its pending entries being claimed
        self._live: list[str] = []
        self._beat_ok = False
        self._ticks = 0
        self.reclaim_idle = max(lease, 10.0)  # seconds an entry of ours waits before a retry
        self.reclaim_every = RECLAIM_EVERY
        self.claimed = 0

    @property
    def beat_ok(self) -> bool:
        """Redis answered the last heartbeat (so this replica's leases are current)."""
        return self._beat_ok

    @property
    def owned(self) -> list[int]:
        return sorted(self._owned)

    @property
    def live(self) -> list[str]:
        return list(self._live)

    def lease_of(self, partition: int) -> str | None:
        """The lease this replica holds ``partition`` under (None: not ours)."""
        return self._owned.get(partition)

    def readable(self, partition: int) -> str | None:
        """The lease under which ``partition``'s new entries may be taken now (None: not
        ours, handed back once idle, or its pending entries being claimed)."""
        if partition in self._draining or partition in self._claiming:
            return None
        return self._owned.get(partition)

    async def keep(self, closed: Callable[[], bool]) -> None:
        """Tick every third of a lease until ``closed()``; a failed tick (Redis out of
        reach) makes the replica unhealthy until the next one succeeds."""
        while not closed():
            await asyncio.sleep(self.lease / 3)
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._beat_ok = False
                log.warning("replica %s: Redis unreachable: %s", self.replica, exc)

    async def tick(self) -> None:
        # the heartbeat and every renewal in one round trip: renewed one by one, each behind
        # a busy event loop, the last ones lapsed before their turn came (lease lost under load)
        held = dict(self._owned)
        self._live, lost = await self.redis.beat_and_renew(
            self.replica, self.lease_ms, {f"p:{p}": v for p, v in held.items()}
        )
        self._beat_ok = True
        for name in lost:
            partition = int(name.removeprefix("p:"))
            self.lost(partition, held[partition])
        self._ticks += 1
        if self._ticks % self.reclaim_every == 0:
            await self._reclaim()
        if self._stopping():
            return
        share = math.ceil(self.partitions / max(1, len(self._live)))
        if len(self._owned) < share:
            self._draining.clear()
            await self._take_free(share)
        elif len(self._owned) > share:
            await self._give_back(len(self._owned) - share)
        else:
            self._draining.clear()

    async def _take_free(self, share: int) -> None:
        # start at a place of our own, so replicas starting together try different partitions
        start = zlib.crc32(self.replica.encode()) % self.partitions
        for i in range(self.partitions):
            if len(self._owned) >= share:
                return
            partition = (start + i) % self.partitions
            if partition in self._owned:
                continue
            value = await self.redis.acquire(f"p:{partition}", self.replica, self.lease_ms)
            if value is None:
                continue
            self._owned[partition] = value
            log.debug("replica %s holds partition %d (lease %s)", self.replica, partition, value)
            # not read until its pending entries are queued: they go before any newer one
            self._claiming.add(partition)
            claimed = await self._take(
                partition, value, functools.partial(self._claim_pending, partition, value)
            )
            if claimed:
                self.claimed += len(claimed)
                log.info(
                    "replica %s took partition %d with %d pending turns",
                    self.replica,
                    partition,
                    len(claimed),
                )

    async def _claim_pending(self, partition: int, value: str) -> list[WorkItem] | None:
        """The pending entries of ``partition``, just taken under ``value``, now ours (a
        failure hands the partition back)."""
        try:
            return await self.redis.claim(partition, value, self.replica)
        except Exception:
            # never read a partition whose older entries were not claimed: hand it back
            self._owned.pop(partition, None)
            with best_effort(log, f"handing back partition {partition}"):
                await self.redis.release(f"p:{partition}", value)
            raise
        finally:
            self._claiming.discard(partition)

    async def _reclaim(self) -> None:
        """Entries of our partitions left pending here by a step that failed (Redis out of
        reach mid-turn, say) run again; those still queued or running here are skipped."""
        idle_ms = int(self.reclaim_idle * 1000)
        for partition, value in list(self._owned.items()):
            claim = functools.partial(self.redis.claim, partition, value, self.replica, idle_ms)
            await self._take(partition, value, claim)

    async def _give_back(self, excess: int) -> None:
        """Hand back ``excess`` partitions (replicas joined): stop reading the least busy
        ones, and release each once the turns already read from it have finished."""
        while len(self._draining) > excess:
            self._draining.pop()
        if len(self._draining) < excess:
            candidates = sorted(set(self._owned) - self._draining, key=self._busy)
            self._draining.update(candidates[: excess - len(self._draining)])
        for partition in sorted(self._draining):
            if self._busy(partition):
                continue
            self._draining.discard(partition)
            value = self._owned.pop(partition, None)
            if value is not None:
                await self.redis.release(f"p:{partition}", value)

    def lost(self, partition: int, value: str) -> None:
        """The lease ``value`` no longer holds ``partition``: stop running its entries. Those
        queued here are dropped (``dropped``); a running one is stopped by the fenced
        journal."""
        if self._owned.get(partition) != value:
            return  # already known (and perhaps taken again since)
        log.warning("replica %s lost partition %d", self.replica, partition)
        del self._owned[partition]
        self._draining.discard(partition)
        self._dropped(partition)

    async def leave(self) -> None:
        """Hand every partition back at once and leave the live replicas (shutdown): the
        entries read here but not run are claimed by the others now, not after the lease."""
        for partition, value in list(self._owned.items()):
            await self.redis.release(f"p:{partition}", value)
        self._owned.clear()
        await self.redis.heartbeat(self.replica, self.lease_ms, leave=True)
