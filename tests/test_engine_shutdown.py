"""Graceful shutdown with a journal: running turns get the grace, journaled turns not started
stay in the journal for the next start (no notice), a turn cut after the grace keeps the state
it reached; with several replicas the work item of a turn left behind is not acknowledged."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from test_engine import RecordingSurface, ScriptedBackend, key

from chatbridge.core.engine import Engine
from chatbridge.core.protocols import Surface
from chatbridge.core.store import SQLiteStore
from chatbridge.core.turns import Turn
from chatbridge.core.types import Inbound, TurnState


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = await SQLiteStore.open(tmp_path / "engine.db")
    yield s
    await s.close()


def prepared(inbound: Inbound, surface: Surface):  # type: ignore[no-untyped-def]
    async def prepare() -> tuple[Inbound, Surface]:
        return inbound, surface

    return prepare


async def test_queued_turns_stay_journaled_and_a_cut_turn_keeps_its_state(
    store: SQLiteStore,
) -> None:
    engine = Engine(
        bot="b",
        backend=ScriptedBackend(delay=5),
        backend_name="ai",
        store=store,
        journal=store.journal,
    )
    running, queued = RecordingSurface(), RecordingSurface()
    f1 = await engine.accept(key(), prepared(Inbound(key=key(), text="slow"), running), source="1")
    f2 = await engine.accept(key(), prepared(Inbound(key=key(), text="next"), queued), source="2")
    assert f1 is not None and f2 is not None
    await asyncio.sleep(0.1)  # the first is with the backend, the second waits behind it
    await engine.aclose(grace=0.1)
    assert (await f1).outcome == "interrupted" and (await f2).outcome == "deferred"
    # nobody is told anything: the next start answers both
    assert not [e for e in running.events if e[0] in ("fail", "notice", "finish")]
    assert queued.events == []
    entries = await store.journal.unfinished("b")
    assert [(e.inbound.text, e.state) for e in entries] == [
        ("slow", TurnState.SENT),
        ("next", TurnState.RECEIVED),
    ]
    late = await engine.accept(key(), prepared(Inbound(key=key(), text="late"), queued), source="3")
    assert late is not None and (await late).outcome == "deferred"
    assert len(await store.journal.unfinished("b")) == 3


async def test_with_replicas_a_turn_left_behind_is_not_acknowledged(store: SQLiteStore) -> None:
    engine = Engine(
        bot="b",
        backend=ScriptedBackend(delay=5),
        backend_name="ai",
        store=store,
        journal=store.journal,
        work=object(),  # type: ignore[arg-type]
    )
    first = await store.journal.record(Inbound(key=key(), text="slow"), "1")
    other = await store.journal.record(Inbound(key=key("u2"), text="later"), "2")
    assert first is not None and other is not None
    cut = engine.run_claimed(Turn(first.inbound, RecordingSurface(), first), fresh=True)
    await asyncio.sleep(0.1)
    closing = asyncio.create_task(engine.aclose(grace=0.2))
    await asyncio.sleep(0)
    # claimed just as the replica stops: never started
    left = engine.run_claimed(Turn(other.inbound, RecordingSurface(), other), fresh=True)
    await closing
    # a cancelled result makes the replica leave the work item pending for the next owner
    for future in (cut, left):
        with pytest.raises(asyncio.CancelledError):
            await future
    assert len(await store.journal.unfinished("b")) == 2
