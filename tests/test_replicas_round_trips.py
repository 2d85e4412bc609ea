"""Round trips to Redis of one turn with several replicas (issue 13: "Redis coordination adds
<= 2 ms p99 per turn"; each round trip costs this process ~0.06-0.13 ms of CPU and a wait),
counted at the client's sockets on a real redis-server, so a change that adds one back fails
here.

The turn's own work, per turn, on the replica holding its partition: the record script,
which also takes the message from its stream (no read back) and, its turn starting at once,
judges the ``turns_per_minute`` window and reads the session; the journal's three writes
(sent, answered, delivered), the last of which also acknowledges the
work item; the answer's button ids only the first time a payload is named (here by a first
turn, which also opens the session and the connections). The reader is not woken: a record
that takes rings no bell. (The reader's read of every partition each ``SWEEP`` seconds is timing:
put off here; the lease keeping runs per second, not per turn; opening a connection is once
per connection.)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import pytest
from engine_doubles import AnswerBackend
from replica_harness import REDIS_SERVER, RoundTrips

from chatbridge.core import replicas as replicas_module
from chatbridge.core.budget import SharedFlood
from chatbridge.core.engine import Engine
from chatbridge.core.errors import FencedOut
from chatbridge.core.flood import FloodControl
from chatbridge.core.protocols import Surface
from chatbridge.core.replicas import Replicas
from chatbridge.core.store.redis import RedisStore
from chatbridge.core.store.redis_coordination import RedisCoordination, WorkItem
from chatbridge.core.types import (
    Button,
    ConversationKey,
    Event,
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
        self.failed: list[str] = []

    async def begin(self) -> None: ...
    async def append(self, text: str) -> None: ...
    async def replace(self, text: str) -> None: ...
    async def notice(self, text: str) -> None: ...

    async def finish(self, messages: Sequence[ReplyMessage]) -> None:
        self.finished.append(messages)

    async def fail(self, text: str) -> None:
        self.failed.append(text)


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


class Held(AnswerBackend):
    """Answers at once, except a message saying "hold", which waits for ``release``."""

    def __init__(self) -> None:
        super().__init__(ANSWER, name="buttons")
        self.release = asyncio.Event()
        self.holding = asyncio.Event()

    async def turn(self, session_ref: str, inbound: Inbound) -> AsyncIterator[Event]:
        if inbound.text == "hold":
            self.holding.set()
            await self.release.wait()
        async for event in super().turn(session_ref, inbound):
            yield event


@dataclass
class OneReplica:
    engine: Engine
    replicas: Finishing
    coordination: RedisCoordination
    store: RedisStore
    trips: RoundTrips
    replies: Replies

    async def send(self, text: str, source: str) -> None:
        inbound = Inbound(CONVERSATION, text, message_id=source)

        async def prepare() -> tuple[Inbound, Surface]:
            return inbound, Quiet()

        await self.engine.accept(CONVERSATION, prepare, source=source)

    async def until_finished(self, n: int) -> None:
        async with asyncio.timeout(20):
            while self.replicas.finished < n:
                await asyncio.sleep(0.005)

    def per_turn(self) -> dict[str, int]:
        # opening a connection (HELLO, CLIENT SETINFO): once per connection, not per turn
        return {n: k for n, k in self.trips.sends.items() if n not in {"HELLO", "CLIENT"}}


CONVERSATION = ConversationKey("shop", "telegram", "c1", "u1")


@asynccontextmanager
async def one_replica(
    redis_url: str,
    backend: AnswerBackend,
    turns_per_minute: int = 1_000,
    *,
    shared_budgets: bool = True,
) -> AsyncIterator[OneReplica]:
    async with AsyncExitStack() as stack:
        store = await RedisStore.open(redis_url)
        stack.push_async_callback(store.close)
        coordination = RedisCoordination.from_url(redis_url)
        stack.push_async_callback(coordination.close)
        replicas = Finishing(coordination, replica="a", partitions=4, lease=5.0)
        stack.push_async_callback(replicas.stop)
        engine = Engine(
            bot="shop",
            backend=backend,
            backend_name="buttons",
            store=store,
            journal=store.journal,
            work=replicas,
            # turns_per_minute, as deployed
            flood=SharedFlood(coordination, turns_per_minute)
            if shared_budgets
            else FloodControl(turns_per_minute),
        )
        replies = Replies()
        replicas.serve(engine, replies)
        await replicas.start()
        trips = RoundTrips(on=True)
        trips.name_scripts(coordination, store, store.journal)
        yield OneReplica(engine, replicas, coordination, store, trips, replies)


async def test_a_turn_costs_its_round_trips_and_no_more(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(replicas_module, "SWEEP", 60.0)  # no timed read of everything
    async with one_replica(redis_url, AnswerBackend(ANSWER, name="buttons")) as one:
        # the first turn opens the session, the connections and loads the scripts
        await one.send("question 0", "m0")
        await one.until_finished(1)
        with one.trips.counting():
            for i in range(1, TURNS + 1):
                await one.send(f"question {i}", f"m{i}")
                await one.until_finished(i + 1)
        assert one.per_turn() == {
            # recorded, queued and taken at once; its turn starting now (nothing of the
            # conversation queued here), the same step judges the turns_per_minute window
            # and reads the session (a new session each turn would show as put_new here)
            "RedisCoordination.record": TURNS,
            "RedisJournal.advance": 3 * TURNS,  # sent, answered, delivered + acknowledged
            # the payload named by the first turn: from memory since (renewed off the path)
        }
        assert len(one.replies.surfaces) == TURNS + 1
        assert all(s.finished and s.finished[0][0].buttons[0].id for s in one.replies.surfaces)
        assert await one.store.journal.unfinished("shop") == []
        # every work item acknowledged and deleted, by the journal's delivered writes
        for partition in range(4):
            assert await one.coordination._r.xlen(one.coordination.stream(partition)) == 0
        assert TurnState.DELIVERED.finished


async def test_a_turn_queued_behind_another_reads_its_window_and_session_when_it_starts(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Judged at arrival, a message waiting behind a running turn of its conversation would
    take its window's place before its turn: it is judged, and its session read, when its
    turn starts (the session may change meanwhile, by the turn ahead of it)."""
    monkeypatch.setattr(replicas_module, "SWEEP", 60.0)
    backend = Held()
    async with one_replica(redis_url, backend) as one:

        async def behind_a_held_one(n: int) -> None:
            backend.release.clear()
            backend.holding.clear()
            await one.send("hold", f"h{n}")
            async with asyncio.timeout(20):
                await backend.holding.wait()
            await one.send(f"question {n}", f"q{n}")  # queued here behind "hold"
            backend.release.set()
            await one.until_finished(2 * n + 2)

        await behind_a_held_one(0)  # opens the session, loads the scripts
        with one.trips.counting():
            await behind_a_held_one(1)
        assert one.per_turn() == {
            "RedisCoordination.record": 2,  # the first with its prelude, the second without
            "RedisCoordination.windows": 1,  # ...so it is judged as its turn starts
            "HGETALL": 1,  # ...and reads its session then
            "RedisJournal.advance": 6,
        }
        assert [s.finished[0][0].text for s in one.replies.surfaces] == ["found it"] * 4


async def test_a_flooded_turn_is_refused_by_the_window_read_with_its_record(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """turns_per_minute = 2: the third message's record reads a full window; it is refused
    in plain words, and not counted (the window holds the two that ran)."""
    monkeypatch.setattr(replicas_module, "SWEEP", 60.0)
    async with one_replica(redis_url, AnswerBackend(ANSWER), turns_per_minute=2) as one:
        with one.trips.counting():
            for i in range(3):
                await one.send(f"question {i}", f"m{i}")
                await one.until_finished(i + 1)
        assert "RedisCoordination.windows" not in one.trips.sends  # judged with the record
        ran, ran_too, refused = one.replies.surfaces
        assert ran.finished and ran_too.finished and not refused.finished
        assert len(refused.failed) == 1 and "too quickly" in refused.failed[0]
        window = f"chatbridge:w:flood:shop:{CONVERSATION.user_id}"
        assert await one.coordination._r.zcard(window) == 2
        # the refused one is finished too (told, not left open)
        assert await one.store.journal.unfinished("shop") == []


async def test_with_budgets_per_process_the_session_is_still_read_with_the_record(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``shared_budgets = false``: turns_per_minute is this process's to count, and the
    record still reads the session for a turn starting at once."""
    monkeypatch.setattr(replicas_module, "SWEEP", 60.0)
    backend = AnswerBackend(ANSWER)
    async with one_replica(redis_url, backend, 2, shared_budgets=False) as one:
        with one.trips.counting():
            for i in range(3):
                await one.send(f"question {i}", f"m{i}")
                await one.until_finished(i + 1)
        assert "HGETALL" not in one.trips.sends and "RedisCoordination.windows" not in (
            one.trips.sends
        )
        ran, ran_too, refused = one.replies.surfaces
        assert ran.finished and ran_too.finished and not refused.finished
        assert len(refused.failed) == 1 and "too quickly" in refused.failed[0]


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
