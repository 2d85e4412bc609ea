"""The engine with a shared ``turns_per_minute`` gate (several replicas: the gate lives in
Redis). The gate is judged as each turn starts, not when its message arrives; the session the
turn needs next is read meanwhile (one wait for both round trips), and a refused turn or a
read that fails behaves as before the read ahead.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator

import pytest
from engine_doubles import RecordingSurface
from test_engine import ScriptedBackend

from chatbridge.core.engine import Engine
from chatbridge.core.protocols import SharedFloodGate
from chatbridge.core.store import MemoryStore
from chatbridge.core.types import ConversationKey, Inbound, SessionRecord

KEY = ConversationKey("shop", "telegram", "c1", "u1")


class Gate:
    """A shared gate that lets ``allow`` turns through, then refuses; it logs each check."""

    def __init__(self, events: list[str], allow: int = 100) -> None:
        self.events = events
        self.allow = allow

    async def check_shared(self, key: ConversationKey) -> float | None:
        self.events.append("check")
        await asyncio.sleep(0)  # a round trip to Redis
        if self.allow <= 0:
            return 30.0
        self.allow -= 1
        return None

    def window_of(self, key: ConversationKey) -> tuple[str, int, float] | None:
        return None  # judged by check_shared only (no Redis to read it with a record)


class CountingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.reads = 0
        self.fail_reads = False
        self.reading = asyncio.Event()

    async def get(self, key: ConversationKey) -> SessionRecord | None:
        self.reads += 1
        self.reading.set()
        await asyncio.sleep(0)
        if self.fail_reads:
            raise ConnectionError("Redis went away")
        return await super().get(key)


class LoggedSurface(RecordingSurface):
    def __init__(self, events: list[str]) -> None:
        super().__init__(events, "u1")


@pytest.fixture
async def store() -> AsyncIterator[CountingStore]:
    s = CountingStore()
    yield s
    await s.close()


def engine_with(store: CountingStore, gate: Gate, delay: float = 0.0) -> Engine:
    assert isinstance(gate, SharedFloodGate)
    return Engine(
        bot="shop",
        backend=ScriptedBackend(delay=delay),
        backend_name="scripted",
        store=store,
        flood=gate,
    )


async def test_the_gate_is_judged_as_each_turn_starts(store: CountingStore) -> None:
    """Three messages at once: each is checked when the one before it has finished, and each
    turn reads its session once (read ahead beside the check)."""
    events: list[str] = []
    engine = engine_with(store, Gate(events), delay=0.05)
    results = [engine.submit(Inbound(KEY, f"m{i}"), LoggedSurface(events)) for i in range(3)]
    await asyncio.gather(*results)
    finished = [f"u1:finish:echo m{i} (s1)" for i in range(3)]
    assert events == ["check", finished[0], "check", finished[1], "check", finished[2]]
    assert store.reads == 3
    assert all(r.result().outcome == "ok" for r in results)


async def test_a_refused_turn_says_so_and_leaves_no_read_unretrieved(
    store: CountingStore, caplog: pytest.LogCaptureFixture
) -> None:
    events: list[str] = []
    engine = engine_with(store, Gate(events, allow=0))
    store.fail_reads = True  # the read ahead fails, and nobody awaits it
    surface = LoggedSurface(events)
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        result = await engine.handle(Inbound(KEY, "hi"), surface)
        await asyncio.sleep(0)
        gc.collect()
    assert result.outcome == "refused"
    assert len(surface.of("fail")) == 1 and "30" in surface.of("fail")[0]
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]


async def test_a_session_read_that_fails_ends_in_a_plain_error(store: CountingStore) -> None:
    events: list[str] = []
    engine = engine_with(store, Gate(events))
    store.fail_reads = True
    surface = LoggedSurface(events)
    result = await engine.handle(Inbound(KEY, "hi"), surface)
    assert result.outcome == "failed"
    assert surface.of("finish") == [] and len(surface.of("fail")) == 1
    store.fail_reads = False
    result = await engine.handle(Inbound(KEY, "again"), surface)
    assert result.outcome == "ok" and surface.of("finish") == ["echo again (s1)"]


async def test_the_session_is_read_while_the_gate_is_judged(store: CountingStore) -> None:
    """The gate answers only once the session's read has started: one wait for both (a read
    after the gate's answer would never start here)."""
    events: list[str] = []

    class Waiting(Gate):
        async def check_shared(self, key: ConversationKey) -> float | None:
            async with asyncio.timeout(5):
                await store.reading.wait()
            return await super().check_shared(key)

    engine = engine_with(store, Waiting(events))
    result = await engine.handle(Inbound(KEY, "hi"), LoggedSurface(events))
    assert result.outcome == "ok" and store.reads == 1


async def test_a_refusal_is_in_the_users_language(store: CountingStore) -> None:
    """As the in-process gate's: a Portuguese user is told in Portuguese (the shared gate's
    refusal was always in English)."""
    events: list[str] = []
    engine = engine_with(store, Gate(events, allow=0))
    surface = LoggedSurface(events)
    result = await engine.handle(Inbound(KEY, "olá", language="pt-PT"), surface)
    assert result.outcome == "refused"
    [told] = surface.of("fail")
    assert "demasiado depressa" in told and "30" in told
