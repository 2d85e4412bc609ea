"""The record that takes (issue 13's per-turn cost): the replica holding a message's partition
records it and takes it from the stream in one script (:meth:`core.replicas.Replicas.submit`),
instead of waiting for its reader to wake and read it back.

Its danger is order: the reader's fenced read and the record take from the same consumer-group
cursor, so Redis hands each entry out once and in stream order, but the replies come back on
different connections in either order. These tests hold a read's reply back on purpose while
a record takes the next message, and show that every path behaves as the reader did when the
lease is gone.
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from typing import Any

import pytest
from replica_harness import REDIS_SERVER
from test_engine import ScriptedBackend
from test_replicas import answered, key, open_node, wait_for

from chatbridge.core.store.redis_coordination import (
    ReadResult,
    RedisCoordination,
    conversation_member,
)
from chatbridge.core.types import Inbound

pytest.importorskip("redis")
pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server not installed"),
]


class HeldReads:
    """Wraps a coordination's fenced read: a read that took entries has taken them in Redis,
    but its reply is held back here (as if slow on its way) until ``release`` is set."""

    def __init__(self, coordination: RedisCoordination) -> None:
        self.original = coordination.read
        self.in_flight = asyncio.Event()
        self.release = asyncio.Event()
        self.taken: list[int] = []

    async def read(self, leases: Any, consumer: str, *, count: int = 100) -> ReadResult:
        got = await self.original(leases, consumer, count=count)
        if got.items:
            self.taken += [item.seq for item in got.items]
            self.in_flight.set()
            await self.release.wait()
        return got


async def test_a_record_that_takes_never_overtakes_a_read_on_its_way(redis_url: str) -> None:
    """``b`` (not the holder) records m1; ``a``'s reader takes it, and its reply is held back.
    Meanwhile ``a`` accepts m2 of the same conversation, which its record would take at once:
    without one lock per partition from the call to the queueing, m2 ran before m1."""
    log: list[str] = []
    backend = ScriptedBackend()
    async with AsyncExitStack() as stack:
        a = await open_node(stack, redis_url, "a", backend, log, partitions=1, lease=30.0)
        b = await open_node(stack, redis_url, "b", backend, log, partitions=1, lease=30.0)
        held = HeldReads(a.replicas.redis)
        a.replicas.redis.read = held.read
        await a.replicas.start()
        assert a.replicas.owned == [0]
        await b.replicas.redis.record_and_queue(Inbound(key("u1"), "m1"), "s1", 0)
        async with asyncio.timeout(10):
            await held.in_flight.wait()  # a's read took m1; its reply is on its way
        second = asyncio.create_task(a.accept(Inbound(key("u1"), "m2"), source="s2"))
        # the time a record that does not wait would need to take m2 and run it first
        await asyncio.wait({second}, timeout=1.0)
        held.release.set()
        await second
        await wait_for(lambda: len(log) == 2)
        assert answered(log, "u1") == ["m1", "m2"]
        assert held.taken == [1]  # m2 was taken by the record, not by a read
        assert a.replicas.turns_run == 2 and backend.max_parallel_per_session == 1


async def test_the_holder_takes_what_it_records_without_a_read(redis_url: str) -> None:
    """One replica holding every partition: each message is taken by its own record (no read
    takes anything), answered in order; a redelivered message is neither queued nor run."""
    log: list[str] = []
    backend = ScriptedBackend()
    async with AsyncExitStack() as stack:
        a = await open_node(stack, redis_url, "a", backend, log, partitions=2, lease=30.0)
        held = HeldReads(a.replicas.redis)
        a.replicas.redis.read = held.read
        held.release.set()
        await a.replicas.start()
        questions = [f"m{j}" for j in range(6)]
        for j, text in enumerate(questions):
            await a.accept(Inbound(key(f"u{j % 2}"), text), source=f"s{j}")
        await a.accept(Inbound(key("u0"), "m0"), source="s0")  # the platform sent it again
        await wait_for(lambda: len(log) == len(questions))
        assert answered(log, "u0") == ["m0", "m2", "m4"]
        assert answered(log, "u1") == ["m1", "m3", "m5"]
        assert held.taken == []
        assert a.replicas.turns_run == len(questions)
        coordination = a.replicas.redis
        for partition in range(2):  # every entry acknowledged (and deleted) by its turn
            assert await coordination._r.xlen(coordination.stream(partition)) == 0


async def test_a_record_under_a_lease_gone_queues_for_the_holder_and_takes_nothing(
    redis_url: str,
) -> None:
    """``a`` still believes it holds the partition, but its lease lapsed and ``b`` took it:
    ``a``'s record is written and queued (the message is not lost) but takes nothing, and
    ``a`` learns it lost the partition, as when a read is refused; ``b`` runs the message."""
    log: list[str] = []
    backend = ScriptedBackend()
    async with AsyncExitStack() as stack:
        a = await open_node(stack, redis_url, "a", backend, log, partitions=1, lease=30.0)
        await a.replicas.start()
        assert a.replicas.owned == [0]
        await a.store._r.delete(a.replicas.redis.lease_key("p:0"))  # lapsed during a stall
        b = await open_node(stack, redis_url, "b", backend, log, partitions=1, lease=1.0)
        await b.replicas.start()
        assert b.replicas.owned == [0]
        await a.accept(Inbound(key("u1"), "m1"), source="s1")
        assert a.replicas.owned == []  # the record's take was refused: a knows now
        await wait_for(lambda: len(log) == 1)
        assert answered(log, "u1") == ["m1"]
        assert a.replicas.turns_run == 0 and b.replicas.turns_run == 1


async def test_an_entry_queued_without_a_bell_is_read_all_the_same(redis_url: str) -> None:
    """A replica of an older version queues a message without ringing the holder's bell (it
    XADDs to the stream alone): the holder's reader reads every partition each ``SWEEP`` seconds
    whatever rang, so the message runs all the same."""
    log: list[str] = []
    backend = ScriptedBackend()
    async with AsyncExitStack() as stack:
        a = await open_node(stack, redis_url, "a", backend, log, partitions=1, lease=30.0)
        await a.replicas.start()
        inbound = Inbound(key("u1"), "m1")
        entry = await a.store.journal.record(inbound, "s1")
        assert entry is not None
        coordination = a.replicas.redis
        fields = {"bot": "shop", "seq": entry.seq, "conv": conversation_member(inbound.key)}
        await coordination._r.xadd(coordination.stream(0), fields)
        await wait_for(lambda: len(log) == 1)
        assert answered(log, "u1") == ["m1"]
