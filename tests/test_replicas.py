"""Replicas on a real redis-server, in one process: two engines, each with its own Redis
clients and :class:`core.replicas.Replicas`, as two processes would have.

Turns accepted by either replica run one at a time per conversation in arrival order, on
whichever replica holds the conversation's partition; leases are fenced; graceful shutdown
frees the partitions at once; shared windows and the per-user turn limit count across
replicas.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from typing import Any, cast

import pytest
from replica_harness import REDIS_SERVER
from test_engine import RecordingSurface, ScriptedBackend

from chatbridge.core.budget import SharedFlood, SharedWindows
from chatbridge.core.engine import Engine
from chatbridge.core.errors import BackendError, FencedOut, failure_from_text, failure_to_text
from chatbridge.core.protocols import Surface
from chatbridge.core.replicas import Replicas
from chatbridge.core.store.redis import RedisStore
from chatbridge.core.store.redis_coordination import RedisCoordination, WorkItem
from chatbridge.core.turns import Turn
from chatbridge.core.types import (
    ConversationKey,
    Failure,
    FailureKind,
    FailureReason,
    Inbound,
    ReplyMessage,
    TurnState,
)

pytest.importorskip("redis")
pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server not installed"),
]


class Replies:
    """StoredReplies: every answer goes to one shared log, tagged by conversation."""

    def __init__(self, log: list[str]) -> None:
        self.log = log

    def surface_for(self, inbound: Inbound) -> Surface:
        return RecordingSurface(self.log, inbound.key.user_id)


class Node:
    """One replica: its store, coordination client, engine and Replicas."""

    def __init__(
        self, name: str, store: RedisStore, replicas: Replicas, engine: Engine, log: list[str]
    ) -> None:
        self.name = name
        self.log = log  # every replica's answers, in the order they were finished
        self.store = store
        self.replicas = replicas
        self.engine = engine

    async def accept(self, inbound: Inbound, source: str) -> None:
        async def prepare() -> tuple[Inbound, Surface]:
            return inbound, RecordingSurface()

        await self.engine.accept(inbound.key, prepare, source=source)


@pytest.fixture
async def nodes(redis_url: str) -> AsyncIterator[list[Node]]:
    log: list[str] = []
    backend = ScriptedBackend(delay=0.02)
    async with AsyncExitStack() as stack:
        out = [await open_node(stack, redis_url, name, backend, log) for name in ("a", "b")]
        yield out
        for node in out:
            await node.replicas.stop()


async def open_node(
    stack: AsyncExitStack,
    redis_url: str,
    name: str,
    backend: ScriptedBackend,
    log: list[str],
    *,
    partitions: int = 4,
    lease: float = 1.0,
) -> Node:
    store = await RedisStore.open(redis_url)
    stack.push_async_callback(store.close)
    coordination = RedisCoordination.from_url(redis_url)
    stack.push_async_callback(coordination.close)
    replicas = Replicas(coordination, replica=name, partitions=partitions, lease=lease)
    stack.push_async_callback(replicas.stop)
    engine = Engine(
        bot="shop",
        backend=backend,
        backend_name="scripted",
        store=store,
        journal=store.journal,
        work=replicas,
    )
    replicas.serve(engine, Replies(log))
    return Node(name, store, replicas, engine, log)


def key(user: str) -> ConversationKey:
    return ConversationKey("shop", "telegram", user, user)


async def wait_for(check: Callable[[], bool], timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.02)


async def test_turns_accepted_anywhere_run_in_arrival_order_per_conversation(
    nodes: list[Node],
) -> None:
    a, b = nodes
    log = a.log
    await a.replicas.start()
    await b.replicas.start()
    await wait_for(lambda: len(a.replicas.owned) == 2 and len(b.replicas.owned) == 2)
    users, per_user = [f"u{i}" for i in range(8)], 4
    for j in range(per_user):
        for i, user in enumerate(users):
            node = nodes[(i + j) % 2]  # the same conversation lands on both replicas
            await node.accept(Inbound(key(user), f"{user}-{j}"), source=f"{user}:{j}")
    await wait_for(lambda: len(log) == len(users) * per_user)
    for user in users:
        mine = [line.split(":")[-1] for line in log if line.startswith(f"{user}:finish")]
        assert [text.split(" ")[1] for text in mine] == [f"{user}-{j}" for j in range(per_user)]
    assert a.replicas.turns_run > 0 and b.replicas.turns_run > 0


async def test_slow_preparation_keeps_arrival_order_in_the_queue(nodes: list[Node]) -> None:
    a, _ = nodes

    async def slow() -> tuple[Inbound, Surface]:
        await asyncio.sleep(0.2)  # a photo downloading
        return Inbound(key("u1"), "first"), RecordingSurface()

    async def fast() -> tuple[Inbound, Surface]:
        return Inbound(key("u1"), "second"), RecordingSurface()

    await asyncio.gather(
        a.engine.accept(key("u1"), slow, source="s1"),
        a.engine.accept(key("u1"), fast, source="s2"),
    )
    partition = a.replicas.partition_of(key("u1"))
    entries = cast(list[Any], await a.store._r.xrange(a.replicas.redis.stream(partition)))
    assert [int(fields["seq"]) for _, fields in entries] == [1, 2]
    first = await a.replicas.redis.entry("shop", 1)
    assert first is not None and first.inbound.text == "first"


async def test_a_redelivered_message_is_queued_once(nodes: list[Node]) -> None:
    a, b = nodes
    await a.accept(Inbound(key("u1"), "hi"), source="u42")
    await b.accept(Inbound(key("u1"), "hi"), source="u42")  # the webhook retried elsewhere
    stream = a.replicas.redis.stream(a.replicas.partition_of(key("u1")))
    assert await a.store._r.xlen(stream) == 1
    assert len(await a.store.journal.unfinished("shop")) == 1


async def test_graceful_stop_frees_every_partition_at_once(nodes: list[Node]) -> None:
    a, b = nodes
    await a.replicas.start()
    assert len(a.replicas.owned) == 4
    await a.replicas.stop()
    # released, not left to expire: the lease keys are gone the moment stop returns
    for partition in range(4):
        assert await a.replicas.redis.holder(f"p:{partition}") is None
    await b.replicas.start()
    assert len(b.replicas.owned) == 4


async def test_work_of_a_dead_replica_is_claimed_and_finished(nodes: list[Node]) -> None:
    a, b = nodes
    log = a.log
    await a.replicas.start()
    # a dies: its tasks stop, its leases are neither renewed nor released
    for task in a.replicas._tasks:
        task.cancel()
    a.replicas._stopping = True
    for i in range(6):
        await a.accept(Inbound(key(f"d{i}"), f"d{i}"), source=f"d{i}")
    await b.replicas.start()  # finds every partition still leased to a
    assert b.replicas.owned == []
    await wait_for(lambda: len(log) == 6)  # a's leases expired; b claimed and ran the turns
    assert b.replicas.turns_run == 6


async def test_an_ack_without_the_lease_is_refused(redis_url: str) -> None:
    coordination = RedisCoordination.from_url(redis_url)
    try:
        old = await coordination.acquire("p:0", "a", 60_000)
        assert old is not None
        assert await coordination.acquire("p:0", "b", 60_000) is None  # held
        assert await coordination.release("p:0", old)
        new = await coordination.acquire("p:0", "b", 60_000)
        assert new is not None and new != old  # a new fencing token
        inbound = Inbound(key("u1"), "hi")
        await coordination.record_and_queue(inbound, "src", 0)
        assert (await coordination.read({0: old}, "a")).lost == [0]  # nor read
        [item] = (await coordination.read({0: new}, "b")).items
        assert not await coordination.ack(item, old)  # the old holder cannot
        assert await coordination.ack(item, new)
    finally:
        await coordination.close()


async def test_a_wait_on_its_way_while_the_partition_is_handed_back_takes_nothing(
    redis_url: str,
) -> None:
    """The exact window of the webhook e2e's reordering: the old holder's blocking read was
    still waiting when it handed the partition back, and took the next message from the new
    holder. Now waiting changes nothing; only a read under the lease takes entries."""
    one, two = RedisCoordination.from_url(redis_url), RedisCoordination.from_url(redis_url)
    try:
        old = await one.acquire("p:0", "a", 60_000)
        assert old is not None
        first = await one.read({0: old}, "a")
        assert first.items == [] and first.lost == []
        waiting = asyncio.create_task(one.wait("a", "0-0", 10_000))
        await asyncio.sleep(0.1)  # a's wait is on its way
        await two.record_and_queue(Inbound(key("u1"), "m0"), "m0", 0)  # rings a: the holder
        rang = await asyncio.wait_for(waiting, 5)
        assert rang is not None and rang[1] == {0}  # a woke up...
        assert await one.release("p:0", old)  # ...and hands the partition back before reading
        new = await two.acquire("p:0", "b", 60_000)
        assert new is not None
        assert await two.claim(0, new, "b") == []  # m0 was handed to nobody yet
        assert (await one.read({0: old}, "a")).lost == [0]  # a cannot take m0
        await two.record_and_queue(Inbound(key("u1"), "m1"), "m1", 0)  # rings b now
        rang = await two.wait("b", "0-0", 5_000)
        assert rang is not None and rang[1] == {0}
        got = await two.read({0: new}, "b")
        assert [item.seq for item in got.items] == [1, 2]
    finally:
        await one.close()
        await two.close()


async def test_shared_windows_count_across_replicas(redis_url: str) -> None:
    one, two = RedisCoordination.from_url(redis_url), RedisCoordination.from_url(redis_url)
    try:
        windows = [("bot", 3, 30.0), ("chat", 2, 30.0)]
        assert await one.take(windows) == 0
        assert await two.take(windows) == 0
        assert await one.take(windows) > 0  # the chat's 2 are used, by both together
        assert await two.take([("bot", 3, 30.0)]) == 0  # a refusal took nothing
        assert await one.take([("bot", 3, 30.0)]) > 0
        pacing = SharedWindows(two, "tg:x")
        await asyncio.wait_for(pacing.take([("other", 1, 30.0)]), 5)  # a free window: at once
    finally:
        await one.close()
        await two.close()


async def test_turns_per_minute_hold_across_replicas(redis_url: str) -> None:
    one, two = RedisCoordination.from_url(redis_url), RedisCoordination.from_url(redis_url)
    try:
        flood_one, flood_two = SharedFlood(one, 2), SharedFlood(two, 2)
        assert await flood_one.check_shared(key("u1")) is None
        assert await flood_two.check_shared(key("u1")) is None
        wait = await flood_one.check_shared(key("u1"))
        assert wait is not None and 0 < wait <= 60
        assert await flood_two.check_shared(key("u2")) is None  # another user
    finally:
        await one.close()
        await two.close()


class FlakyReplies(Replies):
    """The first answer cannot even be set up (as if Redis dropped mid-step)."""

    def __init__(self, log: list[str]) -> None:
        super().__init__(log)
        self.failures = 1

    def surface_for(self, inbound: Inbound) -> Surface:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("lost")
        return super().surface_for(inbound)


async def test_a_turn_whose_step_failed_runs_again_later(nodes: list[Node]) -> None:
    a, _ = nodes
    a.replicas.serve(a.engine, FlakyReplies(a.log))
    a.replicas.leases.reclaim_idle = 0.2
    a.replicas.leases.reclaim_every = 1
    await a.replicas.start()
    await a.accept(Inbound(key("u1"), "hello"), source="f1")
    await wait_for(lambda: len(a.log) == 1)
    assert a.log[0].startswith("u1:finish:echo hello")


async def test_reading_survives_a_redis_that_lost_its_groups(redis_url: str) -> None:
    coordination = RedisCoordination.from_url(redis_url)
    try:
        value = await coordination.acquire("p:0", "a", 60_000)
        assert value is not None
        assert (await coordination.read({0: value}, "a")).items == []  # the group made
        await coordination._r.flushdb()  # a restart without persistence
        value = await coordination.acquire("p:0", "a", 60_000)
        assert value is not None
        await coordination.record_and_queue(Inbound(key("u1"), "hi"), "src", 0)
        got = await coordination.read({0: value}, "a")
        assert [item.seq for item in got.items] == [1]
    finally:
        await coordination.close()


async def test_one_leader_at_a_time_and_leadership_handed_back_at_once(
    nodes: list[Node],
) -> None:
    a, b = nodes
    events: list[str] = []

    def elect(node: Node) -> None:
        async def gain() -> None:
            events.append(f"{node.name}+")

        async def lose() -> None:
            events.append(f"{node.name}-")

        node.replicas.leader("poll", gain, lose)

    elect(a)
    await wait_for(lambda: events == ["a+"])
    elect(b)
    await asyncio.sleep(0.7)  # two of b's attempts: the lease is a's
    assert events == ["a+"]
    await a.replicas.stop_leading()
    assert await a.replicas.redis.holder("leader:poll") is None  # released, not expired
    await wait_for(lambda: events == ["a+", "a-", "b+"])


async def test_a_replica_with_another_partition_count_refuses_to_start(redis_url: str) -> None:
    one, two = RedisCoordination.from_url(redis_url), RedisCoordination.from_url(redis_url)
    first = Replicas(one, replica="a", partitions=4, lease=1.0)
    try:
        await first.start()
        with pytest.raises(RuntimeError, match="partitions = 8, but the replicas on this Redis"):
            await Replicas(two, replica="b", partitions=8, lease=1.0).start()
    finally:
        await first.stop()
        await one.close()
        await two.close()


async def test_a_dead_replicas_pending_turns_run_before_newer_ones(nodes: list[Node]) -> None:
    a, b = nodes
    coordination = a.replicas.redis
    partition = a.replicas.partition_of(key("u1"))
    # "x" held the partition, read m0 and died: m0 is pending under x, m1 and m2 are new
    held = await coordination.acquire(f"p:{partition}", "x", 1000)
    assert held is not None
    await a.accept(Inbound(key("u1"), "m0"), source="m0")
    assert len((await coordination.read({partition: held}, "x")).items) == 1
    await a.accept(Inbound(key("u1"), "m1"), source="m1")
    await a.accept(Inbound(key("u1"), "m2"), source="m2")
    claim = b.replicas.redis.claim

    async def slow_claim(
        p: int, lease: str, consumer: str, min_idle_ms: int = 0
    ) -> list[WorkItem] | None:
        await asyncio.sleep(0.5)  # the reader has time to run meanwhile
        return await claim(p, lease, consumer, min_idle_ms)

    b.replicas.redis.claim = slow_claim  # type: ignore[method-assign,assignment]
    await b.replicas.start()  # reading at once; the partition is taken when x's lease expires
    assert partition not in b.replicas.owned
    await wait_for(lambda: len(b.log) == 3)
    assert [line.split(" ")[1] for line in b.log] == ["m0", "m1", "m2"]


def answered(log: list[str], user: str) -> list[str]:
    """The questions answered to ``user``, in the order the answers were finished."""
    return [line.split(" ")[1] for line in log if line.startswith(f"{user}:finish")]


async def test_a_holder_that_lost_its_lease_unawares_takes_and_runs_nothing(
    redis_url: str,
) -> None:
    """The window of the webhook e2e's reordering (issue 13): a replica's read still on its way
    after its partition went to another (handed back, or its lease lapsed while it stalled)
    took a new message; the holder ran the newer ones, and that one 10 s later. Here ``a``
    renews only every 10 s and its lease is gone (expired during a stall), so ``a`` still
    believes it owns the partition while ``b`` holds it."""
    log: list[str] = []
    backend = ScriptedBackend(delay=0.02)
    async with AsyncExitStack() as stack:
        a = await open_node(stack, redis_url, "a", backend, log, partitions=1, lease=30.0)
        b = await open_node(stack, redis_url, "b", backend, log, partitions=1, lease=1.0)
        await a.replicas.start()
        assert a.replicas.owned == [0]
        await a.store._r.delete(a.replicas.redis.lease_key("p:0"))  # expired meanwhile
        await b.replicas.start()
        assert b.replicas.owned == [0]  # a learns it only when Redis refuses it something
        questions = [f"m{j}" for j in range(8)]
        for j, text in enumerate(questions):
            node = (a, b)[j % 2]
            await node.accept(Inbound(key("u1"), text), source=f"s{j}")
            await asyncio.sleep(0.05)  # both readers are waiting again for the next one
        await wait_for(lambda: len(log) == len(questions))
        assert answered(log, "u1") == questions
        assert a.replicas.turns_run == 0 and b.replicas.turns_run == len(questions)
        assert a.replicas.owned == []  # its read was refused: it knows now
        assert backend.max_parallel_per_session == 1


async def test_a_stale_holders_journal_writes_are_refused_and_its_turn_stops_quietly(
    nodes: list[Node],
) -> None:
    """A replica stalls mid-turn past its lease; another takes the partition and runs the turn
    again. When the first one resumes, its writes for that turn are refused, even though the
    entry's lease is held (by the other): its turn stops without a word to the user."""
    a, b = nodes
    backend = cast(ScriptedBackend, a.engine.backend)
    journal_a, journal_b = a.store.journal, b.store.journal
    coordination = a.replicas.redis
    partition = a.replicas.partition_of(key("u1"))
    old = await coordination.acquire(f"p:{partition}", "a", 60_000)
    assert old is not None
    await a.accept(Inbound(key("u1"), "hello"), source="h1")
    [item] = (await coordination.read({partition: old}, "a")).items
    entry = await coordination.start_turn(item, old)
    assert entry and entry.inbound.text == "hello"
    with journal_a.fenced("shop", item.seq, old):
        await journal_a.advance("shop", item.seq, TurnState.SENT)  # a holds it: written
    # a stalls; its lease expires; b takes the partition and starts the turn again
    await a.store._r.delete(coordination.lease_key(f"p:{partition}"))
    new = await b.replicas.redis.acquire(f"p:{partition}", "b", 60_000)
    assert new is not None
    assert await coordination.start_turn(item, old) is False
    claimed = await b.replicas.redis.claim(partition, new, "b")
    assert claimed is not None and [i.id for i in claimed] == [item.id]
    assert await b.replicas.redis.start_turn(item, new)
    # a resumes: its writes are refused, though the entry's (b's) lease is held
    with journal_a.fenced("shop", item.seq, old), pytest.raises(FencedOut):
        await journal_a.answer("shop", item.seq, [ReplyMessage("a's late answer")])
    surface = RecordingSurface()
    with journal_a.fenced("shop", item.seq, old):
        result = await a.engine.run_claimed(Turn(entry.inbound, surface, entry), fresh=True)
    assert result.outcome == "interrupted"
    assert backend.running == {}  # a did not send the message to the backend again
    assert [kind for kind, _ in surface.events if kind in {"finish", "fail"}] == []
    [unfinished] = await journal_b.unfinished("shop")
    assert unfinished.state is TurnState.SENT and unfinished.answer is None
    # b's run writes
    with journal_b.fenced("shop", item.seq, new):
        await journal_b.answer("shop", item.seq, [ReplyMessage("b's answer")])
        await journal_b.advance("shop", item.seq, TurnState.DELIVERED)
    assert await journal_b.unfinished("shop") == []


async def test_a_reset_on_another_replica_runs_in_order_with_the_conversations_turns(
    nodes: list[Node],
) -> None:
    a, b = nodes
    backend = cast(ScriptedBackend, a.engine.backend)
    await a.replicas.start()
    await b.replicas.start()
    await wait_for(lambda: len(a.replicas.owned) == 2 and len(b.replicas.owned) == 2)
    user = next(
        u
        for u in (f"r{i}" for i in range(100))
        if a.replicas.partition_of(key(u)) in a.replicas.owned
    )
    backend.delay = 0.5
    await a.accept(Inbound(key(user), "m0"), source="r0")
    await wait_for(lambda: sum(backend.running.values()) == 1)  # m0 is being answered on a
    # the reset arrives at b, which does not run this conversation: it waits for m0
    assert await b.engine.reset(key(user)) is True
    assert answered(a.log, user) == ["m0"]
    assert backend.closed == ["s1"]
    await b.accept(Inbound(key(user), "m1"), source="r1")
    await wait_for(lambda: len(a.log) == 2)
    assert a.log[1].endswith("echo m1 (s2)")  # a new session after the reset
    assert await b.engine.reset(key("nobody")) is False


async def test_a_language_change_crosses_to_the_conversations_replica_failures_too(
    nodes: list[Node],
) -> None:
    a, b = nodes
    await a.replicas.start()  # a runs every conversation; b only takes the commands
    await b.engine.set_language(key("u1"), "pt-PT")
    record = await a.store.get(key("u1"))
    assert record is not None and record.language == "pt-PT"
    with pytest.raises(BackendError) as refused:
        await b.engine.set_language(key("bad-license"), "en")  # the backend refuses a session
    assert refused.value.failure.kind is FailureKind.AUTH
    assert refused.value.failure.detail == "license refused"

    async def unreachable(*_: object) -> str | None:
        raise ConnectionError("Redis is down")

    b.replicas.command = unreachable  # type: ignore[method-assign,assignment]
    await b.engine.set_language(key("u2"), "en")  # done here, rather than not at all
    record = await b.store.get(key("u2"))
    assert record is not None and record.language == "en"


def test_a_failure_crosses_replicas_whole() -> None:
    busy = Failure(
        FailureKind.UNAVAILABLE, "429", True, reason=FailureReason.BUSY, fields={"seconds": 3}
    )
    assert failure_from_text(failure_to_text(busy)) == busy
    plain = Failure(FailureKind.AUTH, "license refused")
    assert failure_from_text(failure_to_text(plain)) == plain


async def test_reset_all_resets_every_conversation_where_it_runs(nodes: list[Node]) -> None:
    a, b = nodes
    await a.replicas.start()  # a runs every conversation
    for user in ("u1", "u2", "u3"):
        await b.accept(Inbound(key(user), "hi"), source=f"{user}-hi")
    await wait_for(lambda: len(a.log) == 3)
    assert await b.engine.reset_all() == 3
    assert await a.store.count("shop") == 0


async def test_a_lapsed_lease_taken_again_reruns_the_running_turn_before_the_next(
    nodes: list[Node],
) -> None:
    """Renewals fail for a while (the lease lapses) and the replica takes the partition again
    under a new lease while a turn runs: that turn's writes are fenced, so it runs again
    first, under the new lease; the message queued behind it waits."""
    a, _ = nodes
    backend = cast(ScriptedBackend, a.engine.backend)
    backend.delay = 1.0
    await a.replicas.start()
    partition = a.replicas.partition_of(key("u1"))
    await a.accept(Inbound(key("u1"), "m0"), source="l0")
    await a.accept(Inbound(key("u1"), "m1"), source="l1")
    await wait_for(lambda: sum(backend.running.values()) == 1)  # m0 at the backend
    before = a.replicas.leases.lease_of(partition)
    await a.store._r.delete(a.replicas.redis.lease_key(f"p:{partition}"))  # lapsed
    await wait_for(lambda: a.replicas.leases.lease_of(partition) not in (None, before))
    backend.delay = 0.02
    await wait_for(lambda: len(a.log) == 2)
    # m0 was sent before the lapse: its rerun cannot ask this backend again (not idempotent)
    # and tells the user to send it again; then m1 is answered
    assert a.log[0].startswith("u1:fail:") and "again" in a.log[0]
    assert a.log[1] == "u1:finish:echo m1 (s1)"
    assert backend.max_parallel_per_session == 1


async def test_a_session_opened_meanwhile_by_another_replica_is_kept(nodes: list[Node]) -> None:
    """A replica stalled while opening a conversation's first backend session; the holder
    ran the turn meanwhile with a session of its own. Waking, the first keeps the holder's
    session rather than writing its own over it (the conversation went on in that one)."""
    a, b = nodes
    backend = cast(ScriptedBackend, a.engine.backend)
    first_open = backend.open
    meanwhile: list[str] = []

    async def open_while_b_opens(k: ConversationKey, language: str | None) -> str:
        ref = await first_open(k, language)
        if not meanwhile:  # a's open: b opens and stores its own before a's comes back
            meanwhile.append(ref)
            record, _ = await b.engine.turns.session_for(k, language)
            assert record is not None
        return ref

    backend.open = open_while_b_opens
    record, failure = await a.engine.turns.session_for(key("u1"), "en")
    assert failure is None and record is not None and record.session_ref == "s2"
    stored = await a.store.get(key("u1"))
    assert stored is not None and stored.session_ref == "s2"
    assert backend.closed == ["s1"]  # a's own, opened for nothing
