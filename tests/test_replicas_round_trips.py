"""Round trips to Redis of one turn with several replicas (issue 13: "Redis coordination adds
<= 2 ms p99 per turn"; each round trip costs ~0.2-0.3 ms of CPU), counted at the client's
socket on a real redis-server, so a change that adds one back fails here.

The turn's own work, per turn, on the replica holding its partition: the record script,
which also takes the message from its stream (no read back); the ``turns_per_minute``
window and the session read (sent together: one wait); the
journal's three writes (sent, answered, delivered), the last of which also acknowledges the
work item; the answer's button ids only the first time a payload is named (here by a first
turn, which also opens the session and the connections). The reader is not woken: a record
that takes rings no bell. (The reader's read of every partition each ``SWEEP`` seconds is timing:
put off here; the lease keeping runs per second, not per turn; opening a connection is once
per connection.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from contextlib import AsyncExitStack

import pytest
from engine_doubles import AnswerBackend
from replica_harness import REDIS_SERVER, RoundTrips

from chatbridge.core import replicas as replicas_module
from chatbridge.core.budget import SharedFlood
from chatbridge.core.engine import Engine
from chatbridge.core.errors import FencedOut
from chatbridge.core.protocols import Surface
from chatbridge.core.replicas import Replicas
from chatbridge.core.store.redis import RedisStore
from chatbridge.core.store.redis_coordination import RedisCoordination, WorkItem
from chatbridge.core.types import (
    Button,
    ConversationKey,
    Inbound,
    ReplyMessage,
    TurnState,
)

pytest.importorskip("redis")
pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server not installed"),
]

ANSWER = (ReplyMessage("found it", buttons=(Button("Show more", payload="more:1"),)),)
TURNS = 6


class Quiet:
    def __init__(self) -> None:
        self.finished: list[Sequence[ReplyMessage]] = []

    async def begin(self) -> None: ...
    async def append(self, text: str) -> None: ...
    async def replace(self, text: str) -> None: ...
    async def notice(self, text: str) -> None: ...

    async def finish(self, messages: Sequence[ReplyMessage]) -> None:
        self.finished.append(messages)

    async def fail(self, text: str) -> None: ...


class Replies:
    def __init__(self) -> None:
        self.surfaces: list[Quiet] = []

    def surface_for(self, inbound: Inbound) -> Surface:
        surface = Quiet()
        self.surfaces.append(surface)
        return surface


class Finishing(Replicas):
    """Counts work items done with (acknowledged or left), their very last step."""

    finished = 0

    async def _attempt(self, item: WorkItem) -> None:
        try:
            await super()._attempt(item)
        finally:
            self.finished += 1


async def test_a_turn_costs_its_round_trips_and_no_more(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(replicas_module, "SWEEP", 60.0)  # no timed read of everything
    replies = Replies()
    async with AsyncExitStack() as stack:
        store = await RedisStore.open(redis_url)
        stack.push_async_callback(store.close)
        coordination = RedisCoordination.from_url(redis_url)
        stack.push_async_callback(coordination.close)
        replicas = Finishing(coordination, replica="a", partitions=4, lease=5.0)
        stack.push_async_callback(replicas.stop)
        engine = Engine(
            bot="shop",
            backend=AnswerBackend(ANSWER, name="buttons"),
            backend_name="buttons",
            store=store,
            journal=store.journal,
            work=replicas,
            flood=SharedFlood(coordination, 1_000),  # turns_per_minute, as deployed
        )
        replicas.serve(engine, replies)
        await replicas.start()
        trips = RoundTrips(on=True)
        trips.name_scripts(coordination, store, store.journal)
        conversation = ConversationKey("shop", "telegram", "c1", "u1")

        async def turn(i: int) -> None:
            inbound = Inbound(conversation, f"question {i}", message_id=f"m{i}")

            async def prepare() -> tuple[Inbound, Surface]:
                return inbound, Quiet()

            await engine.accept(conversation, prepare, source=f"m{i}")
            async with asyncio.timeout(20):
                while replicas.finished < i + 1:
                    await asyncio.sleep(0.005)

        # the first turn opens the session, the connections and loads the scripts
        await turn(0)
        with trips.counting():
            for i in range(1, TURNS + 1):
                await turn(i)
        # opening a connection (HELLO, CLIENT SETINFO): once per connection, not per turn
        per_turn = {n: k for n, k in trips.sends.items() if n not in {"HELLO", "CLIENT"}}
        assert per_turn == {
            "RedisCoordination.record": TURNS,  # recorded, queued and taken at once
            "RedisCoordination.windows": TURNS,  # turns_per_minute as the turn starts...
            "HGETALL": TURNS,  # ...and the session, read meanwhile
            "RedisJournal.advance": 3 * TURNS,  # sent, answered, delivered + acknowledged
            # the payload named by the first turn: from memory since (renewed off the path)
        }
        assert len(replies.surfaces) == TURNS + 1
        assert all(s.finished and s.finished[0][0].buttons[0].id for s in replies.surfaces)
        assert await store.journal.unfinished("shop") == []
        # every work item acknowledged and deleted, by the journal's delivered writes
        for partition in range(4):
            assert await coordination._r.xlen(coordination.stream(partition)) == 0
        assert TurnState.DELIVERED.finished


async def test_the_finishing_write_acknowledges_only_under_the_partitions_lease(
    redis_url: str,
) -> None:
    """The fold keeps the ack's fence: a stale run's delivered write neither finishes the
    entry nor acknowledges the work item, which stays pending for the new holder; the new
    holder's write does both, at once."""
    async with AsyncExitStack() as stack:
        store = await RedisStore.open(redis_url)
        stack.push_async_callback(store.close)
        coordination = RedisCoordination.from_url(redis_url)
        stack.push_async_callback(coordination.close)
        journal, r = store.journal, coordination._r
        conversation = ConversationKey("shop", "telegram", "c1", "u1")
        old = await coordination.acquire("p:0", "a", 60_000)
        assert old is not None
        await coordination.record_and_queue(Inbound(conversation, "hi"), "m1", 0)
        [item] = (await coordination.read({0: old}, "a")).items
        stream = coordination.stream(0)
        with journal.fenced("shop", item.seq, old, coordination.stream_ack(item)) as run:
            await journal.advance("shop", item.seq, TurnState.SENT)
            assert not run.acked  # not a finishing state
            await r.delete(coordination.lease_key("p:0"))  # a stalls past its lease
            new = await coordination.acquire("p:0", "b", 60_000)
            assert new is not None
            with pytest.raises(FencedOut):
                await journal.advance("shop", item.seq, TurnState.DELIVERED)
            assert not run.acked
        assert (await r.xpending(stream, "turns"))["pending"] == 1
        [unfinished] = await journal.unfinished("shop")
        assert unfinished.state is TurnState.SENT
        claimed = await coordination.claim(0, new, "b")
        assert claimed is not None and [i.id for i in claimed] == [item.id]
        with journal.fenced("shop", item.seq, new, coordination.stream_ack(item)) as run:
            await journal.advance("shop", item.seq, TurnState.DELIVERED)
            assert run.acked
        assert (await r.xpending(stream, "turns"))["pending"] == 0
        assert await r.xlen(stream) == 0
        assert await journal.unfinished("shop") == []
