"""The Journal contract over the memory and SQLite journals (Redis: tests/test_store_redis.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from journal_contract import JournalContract, inbound

from chatbridge.core.protocols import Journal
from chatbridge.core.store import MemoryStore, SQLiteStore, journal_of, open_store
from chatbridge.core.types import TurnState


class TestMemoryJournal(JournalContract):
    @pytest.fixture
    async def journal(self) -> AsyncIterator[Journal]:
        store = await MemoryStore.open()
        yield store.journal
        await store.close()


class TestSQLiteJournal(JournalContract):
    @pytest.fixture
    async def journal(self, tmp_path: Path) -> AsyncIterator[Journal]:
        store = await SQLiteStore.open(tmp_path / "j.db")
        yield store.journal
        await store.close()


async def test_sqlite_journal_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    store = await open_store(f"sqlite:///{path}")
    journal = journal_of(store)
    assert journal is not None
    entry = await journal.record(inbound("before the crash"), "u:1")
    assert entry is not None
    await journal.advance("sellers", entry.seq, TurnState.SENT)
    await store.close()

    again = await open_store(f"sqlite:///{path}")
    try:
        reopened = journal_of(again)
        assert reopened is not None
        (left,) = await reopened.unfinished("sellers")
        assert (left.inbound.text, left.state, left.seq) == (
            "before the crash",
            TurnState.SENT,
            entry.seq,
        )
        assert await reopened.record(inbound("redelivered"), "u:1") is None
        later = await reopened.record(inbound("next"), "u:2")
        assert later is not None and later.seq > entry.seq
    finally:
        await again.close()


async def test_sqlite_schema_migrates_a_version_1_file(tmp_path: Path) -> None:
    import sqlite3

    from chatbridge.core.store.sqlite import MIGRATIONS, SCHEMA_VERSION

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    for statement in MIGRATIONS[0]:
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    store = await SQLiteStore.open(path)
    try:
        assert await store.schema_version() == SCHEMA_VERSION >= 2
        assert await store.journal.record(inbound(), "s") is not None
    finally:
        await store.close()


async def test_sqlite_writes_of_concurrent_turns_keep_their_order_and_fail_alone(
    tmp_path: Path,
) -> None:
    import asyncio
    import sqlite3

    store = await SQLiteStore.open(tmp_path / "g.db")
    try:
        journal = store.journal
        first = [journal.record(inbound(f"t{i}"), f"s{i}") for i in range(3)]
        bad = store._db.run(lambda c: c.execute("INSERT INTO no_such_table VALUES (1)"))
        then = [journal.record(inbound(f"t{i}"), f"s{i}") for i in range(3, 5)]
        results = await asyncio.gather(*first, bad, *then, return_exceptions=True)
        assert isinstance(results[3], sqlite3.OperationalError)
        assert all(r is not None and not isinstance(r, BaseException) for r in results[:3])
        assert all(r is not None and not isinstance(r, BaseException) for r in results[4:])
        assert [e.inbound.text for e in await journal.unfinished("sellers")] == [
            "t0",
            "t1",
            "t2",
            "t3",
            "t4",
        ]
    finally:
        await store.close()
