"""The engine with a journal: states per turn, redeliveries run once, arrival order kept
whatever the adapter's preparation takes, every failure ends in a reply, and recovery after a
restart by the state each turn was left in."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
from test_engine import RecordingSurface, ScriptedBackend, key

from chatbridge.core.engine import Engine
from chatbridge.core.errors import DeliveryRefused
from chatbridge.core.protocols import Journal, Surface
from chatbridge.core.store import SQLiteStore
from chatbridge.core.types import Event, Final, Inbound, ReplyMessage, TurnState


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = await SQLiteStore.open(tmp_path / "engine.db")
    yield s
    await s.close()


def ready(inbound: Inbound, surface: Surface, delay: float = 0.0):  # type: ignore[no-untyped-def]
    async def prepare() -> tuple[Inbound, Surface]:
        await asyncio.sleep(delay)
        return inbound, surface

    return prepare


async def states(journal: Journal, bot: str = "b") -> list[TurnState]:
    return [e.state for e in await journal.unfinished(bot)]


def engine_for(store: SQLiteStore, backend: object | None = None) -> Engine:
    return Engine(
        bot="b",
        backend=backend or ScriptedBackend(),  # type: ignore[arg-type]
        backend_name="ai",
        store=store,
        journal=store.journal,
    )


class Replies:
    """The adapter capability recovery uses: a surface per journaled message."""

    def __init__(self) -> None:
        self.surfaces: dict[str, RecordingSurface] = {}

    def surface_for(self, inbound: Inbound) -> Surface:
        surface = self.surfaces[inbound.text] = RecordingSurface()
        return surface


async def test_a_journaled_turn_ends_delivered_with_its_answer(store: SQLiteStore) -> None:
    engine = engine_for(store)
    surface = RecordingSurface()
    future = await engine.accept(key(), ready(Inbound(key(), "hello"), surface), source="u:1")
    assert future is not None
    (written,) = await store.journal.unfinished("b")  # written down before accept returned
    assert written.inbound.text == "hello"
    assert (await future).outcome == "ok"
    assert surface.events[-1] == ("finish", "echo hello (s1)")
    assert await store.journal.unfinished("b") == []
    rows = await store._fetch("SELECT state, answer FROM journal")
    assert rows[0][0] == "delivered" and "echo hello" in rows[0][1]


async def test_a_redelivered_message_runs_once(store: SQLiteStore) -> None:
    engine = engine_for(store)
    first, again = RecordingSurface(), RecordingSurface()
    future = await engine.accept(key(), ready(Inbound(key(), "hi"), first), source="u:7")
    assert await engine.accept(key(), ready(Inbound(key(), "hi"), again), source="u:7") is None
    assert future is not None and (await future).outcome == "ok"
    assert again.events == []


async def test_arrival_order_survives_slow_preparation(store: SQLiteStore) -> None:
    engine = engine_for(store, ScriptedBackend(delay=0.01))
    log: list[str] = []
    slow = asyncio.create_task(
        engine.accept(
            key(), ready(Inbound(key(), "1"), RecordingSurface(log, "1"), 0.2), source="1"
        )
    )
    fast = asyncio.create_task(
        engine.accept(key(), ready(Inbound(key(), "2"), RecordingSurface(log, "2")), source="2")
    )
    futures = await asyncio.gather(slow, fast)
    await asyncio.gather(*(f for f in futures if f is not None))
    assert [line.split(":")[0] for line in log] == ["1", "2"]
    seqs = {e.inbound.text: e.seq for e in await store.journal.unfinished("b")}
    assert seqs == {}  # both delivered


async def test_declined_and_crashed_preparation_keep_the_lane_moving(store: SQLiteStore) -> None:
    engine = engine_for(store)

    async def declined() -> None:
        return None

    async def crashed() -> tuple[Inbound, Surface]:
        raise RuntimeError("adapter bug")

    assert await engine.accept(key(), declined, source="a") is None
    with pytest.raises(RuntimeError):
        await engine.accept(key(), crashed, source="b")
    surface = RecordingSurface()
    assert (await engine.handle(Inbound(key(), "after"), surface)).outcome == "ok"


class BrokenStore(SQLiteStore):
    async def touch(self, k: object) -> None:
        raise OSError("disk full")


async def test_a_store_failure_inside_a_turn_ends_in_a_reply(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = await BrokenStore.open(tmp_path / "broken.db")
    try:
        engine = engine_for(store)
        surface = RecordingSurface()
        with caplog.at_level(logging.ERROR):
            future = await engine.accept(key(), ready(Inbound(key(), "x"), surface), source="s")
            assert future is not None
            result = await future
        assert result.outcome == "failed"
        assert surface.events[0] == ("begin", "")
        assert surface.events[-1] == ("fail", engine.texts.internal)
        crashes = [r for r in caplog.records if "crashed" in r.getMessage()]
        assert len(crashes) == 1 and crashes[0].exc_info is not None  # once, with traceback
        rows = await store._fetch("SELECT state FROM journal")
        assert rows[0][0] == "failed_notified"
    finally:
        await store.close()


class RefusingSurface(RecordingSurface):
    async def finish(self, messages: Sequence[ReplyMessage]) -> None:
        raise DeliveryRefused("bot was blocked by the user")


async def test_a_refused_answer_is_journaled_refused(store: SQLiteStore) -> None:
    engine = engine_for(store)
    future = await engine.accept(key(), ready(Inbound(key(), "x"), RefusingSurface()), source="s")
    assert future is not None and (await future).outcome == "refused"
    rows = await store._fetch("SELECT state FROM journal")
    assert rows[0][0] == "refused"


# --- recovery -------------------------------------------------------------------------------


async def leave(store: SQLiteStore, text: str, state: TurnState, answer: str | None = None) -> None:
    """Journal a message as a crashed process would have left it."""
    entry = await store.journal.record(Inbound(key(), text, message_id=text), f"src-{text}")
    assert entry is not None
    if answer is not None:
        await store.journal.answer("b", entry.seq, [ReplyMessage(answer)])
    elif state is not TurnState.RECEIVED:
        await store.journal.advance("b", entry.seq, state)


class RecoveringBackend(ScriptedBackend):
    """A backend with a history: it knows the answer to "known", never got "unknown"."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[str] = []
        self.turns: list[str] = []

    async def recover(self, session_ref: str, inbound: Inbound) -> Final | None:
        self.asked.append(inbound.text)
        if inbound.text == "known":
            return Final((ReplyMessage("answer from history"),))
        return None

    async def turn(self, session_ref: str, inbound: Inbound) -> AsyncIterator[Event]:
        self.turns.append(inbound.text)
        async for event in super().turn(session_ref, inbound):
            yield event


async def wait_journal_empty(journal: Journal) -> None:
    async with asyncio.timeout(10):
        while await journal.unfinished("b"):
            await asyncio.sleep(0.01)


async def test_recovery_by_state_with_a_backend_that_keeps_history(store: SQLiteStore) -> None:
    await leave(store, "never-sent", TurnState.RECEIVED)
    await leave(store, "known", TurnState.SENT)
    await leave(store, "unknown", TurnState.SENT)
    await leave(store, "answered", TurnState.ANSWERED, answer="stored answer")
    backend = RecoveringBackend()
    engine = engine_for(store, backend)
    replies = Replies()
    assert await engine.recover(replies) == 4
    await wait_journal_empty(store.journal)
    s = replies.surfaces
    assert s["never-sent"].events[-1] == ("finish", "echo never-sent (s1)")
    assert s["known"].events[-1] == ("finish", "answer from history")
    assert s["unknown"].events[-1] == ("finish", "echo unknown (s1)")  # resent
    assert s["answered"].events[-1] == ("finish", "stored answer")
    assert backend.asked == ["known", "unknown"]
    assert backend.turns == ["never-sent", "unknown"]  # nothing answered twice by the backend


async def test_recovery_without_history_tells_the_user_to_resend(store: SQLiteStore) -> None:
    await leave(store, "mid-call", TurnState.SENT)
    await leave(store, "queued", TurnState.RECEIVED)
    backend = ScriptedBackend()
    engine = engine_for(store, backend)
    replies = Replies()
    await engine.recover(replies)
    await wait_journal_empty(store.journal)
    assert replies.surfaces["mid-call"].events[-1] == ("fail", engine.texts.resend_after_restart)
    assert replies.surfaces["queued"].events[-1] == ("finish", "echo queued (s1)")
    rows = await store._fetch("SELECT inbound, state FROM journal ORDER BY seq")
    assert [r[1] for r in rows] == ["failed_notified", "delivered"]


async def test_recovered_turns_go_before_new_messages(store: SQLiteStore) -> None:
    await leave(store, "old", TurnState.RECEIVED)
    engine = engine_for(store, ScriptedBackend(delay=0.02))
    log: list[str] = []

    class LoggingReplies:
        def surface_for(self, inbound: Inbound) -> Surface:
            return RecordingSurface(log, inbound.text)

    await engine.recover(LoggingReplies())
    future = await engine.accept(
        key(), ready(Inbound(key(), "new"), RecordingSurface(log, "new")), source="n"
    )
    assert future is not None
    await future
    assert [line.split(":")[0] for line in log] == ["old", "new"]


class SlowToDeliver(RecordingSurface):
    async def finish(self, messages: Sequence[ReplyMessage]) -> None:
        await asyncio.sleep(0.5)  # e.g. the platform asks to retry after a while
        await super().finish(messages)


async def test_delivery_is_not_cut_by_the_turn_timeout(store: SQLiteStore) -> None:
    engine = Engine(
        bot="b",
        backend=ScriptedBackend(),
        backend_name="ai",
        store=store,
        journal=store.journal,
        turn_timeout=0.2,  # bounds the backend's part; the surface has its own deadline
    )
    surface = SlowToDeliver()
    future = await engine.accept(key(), ready(Inbound(key(), "x"), surface), source="s")
    assert future is not None and (await future).outcome == "ok"
    assert surface.events[-1] == ("finish", "echo x (s1)")
    rows = await store._fetch("SELECT state FROM journal")
    assert rows[0][0] == "delivered"
