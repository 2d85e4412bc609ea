"""SQLiteStore: the SessionStore contract on a real file, plus persistence and migrations."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from store_contract import SessionStoreContract, key, record

from chatbridge.core.store import (
    MemoryStore,
    SchemaTooNew,
    SQLiteStore,
    StoreURLError,
    open_store,
    sqlite_path,
)
from chatbridge.core.store.sqlite import SCHEMA_VERSION


class TestSQLiteStoreContract(SessionStoreContract):
    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[SQLiteStore]:
        s = await SQLiteStore.open(tmp_path / "sessions.db")
        yield s
        await s.close()


class TestSQLiteMemoryContract(SessionStoreContract):
    """``:memory:`` (no WAL) behaves the same."""

    @pytest.fixture
    async def store(self) -> AsyncIterator[SQLiteStore]:
        s = await SQLiteStore.open(":memory:")
        yield s
        await s.close()


async def test_session_survives_restart(tmp_path: Path) -> None:
    path = tmp_path / "data" / "chatbridge.db"  # parent directory is created
    first = await SQLiteStore.open(path)
    await first.put(record(key(thread="t"), ref="loopos-session-uuid", turns=1))
    await first.touch(key(thread="t"))
    short = await first.short_id("Confirmar")
    await first.close()

    second = await SQLiteStore.open(path)
    try:
        got = await second.get(key(thread="t"))
        assert got is not None
        assert got.session_ref == "loopos-session-uuid"
        assert got.turn_count == 2
        assert got.key.thread_id == "t"
        assert await second.resolve(short) == "Confirmar"
        assert await second.short_id("Confirmar") == short
    finally:
        await second.close()


async def test_wal_mode_and_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = await SQLiteStore.open(path)
    try:
        assert await store.schema_version() == SCHEMA_VERSION
    finally:
        await store.close()
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"sessions", "buttons"} <= tables


async def test_migrations_are_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    for i in range(3):
        store = await SQLiteStore.open(path)
        await store.put(record(key(user=f"u{i}")))
        assert await store.count() == i + 1
        assert await store.schema_version() == SCHEMA_VERSION
        await store.close()


async def test_two_stores_open_the_same_new_file_concurrently(tmp_path: Path) -> None:
    # Two processes (bot + admin CLI) may race to create the schema; both must succeed.
    path = tmp_path / "race.db"
    a, b = await asyncio.gather(SQLiteStore.open(path), SQLiteStore.open(path))
    try:
        await a.put(record(key(), ref="from-a"))
        got = await b.get(key())
        assert got is not None and got.session_ref == "from-a"
        assert await b.delete(key()) is True  # e.g. the admin CLI resets while the bot runs
        assert await a.get(key()) is None
    finally:
        await a.close()
        await b.close()


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    with sqlite3.connect(path) as raw:
        raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(SchemaTooNew, match="newer"):
        await SQLiteStore.open(path)


async def test_failed_migration_rolls_back(tmp_path: Path) -> None:
    # A table in the way makes migration 1 fail half-way: nothing of it may remain applied.
    path = tmp_path / "broken.db"
    with sqlite3.connect(path) as raw:
        raw.execute("CREATE TABLE buttons (x INTEGER)")
    with pytest.raises(sqlite3.OperationalError):
        await SQLiteStore.open(path)
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == 0
        names = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "sessions" not in names


async def test_open_prunes_expired_buttons(tmp_path: Path) -> None:
    from datetime import timedelta

    path = tmp_path / "s.db"
    store = await SQLiteStore.open(path)
    short = await store.short_id("stale")
    await store.close()
    await asyncio.sleep(0.2)
    store = await SQLiteStore.open(path, button_ttl=timedelta(milliseconds=100))
    try:
        assert await store.resolve(short) is None
    finally:
        await store.close()


async def test_batch_ids_survive_a_hash_collision(tmp_path: Path) -> None:
    """A payload whose first candidate id is taken by another payload gets the next one."""
    from chatbridge.core.store._common import short_id_candidates

    path = tmp_path / "s.db"
    store = await SQLiteStore.open(path)
    await store.close()
    with sqlite3.connect(path) as raw:
        raw.execute(
            "INSERT INTO buttons VALUES (?, 'squatter', 0, 9999999999999999)",
            (short_id_candidates("Sim")[0],),
        )
    store = await SQLiteStore.open(path)
    try:
        ids = await store.short_ids(["Sim", "Não"])
        assert ids[0] == short_id_candidates("Sim")[1]
        assert ids[1] == short_id_candidates("Não")[0]
        assert [await store.resolve(i) for i in ids] == ["Sim", "Não"]
        assert await store.short_id("Sim") == ids[0]
    finally:
        await store.close()


# --- open_store(url) ----------------------------------------------------------------------------


def test_sqlite_path_forms() -> None:
    assert sqlite_path("sqlite:///chatbridge.db") == "chatbridge.db"
    assert sqlite_path("sqlite:///data/x.db") == "data/x.db"
    assert sqlite_path("sqlite:////var/lib/chatbridge/x.db") == "/var/lib/chatbridge/x.db"
    assert sqlite_path("sqlite:///:memory:") == ":memory:"
    assert sqlite_path(":memory:") == ":memory:"
    assert sqlite_path("plain/path.db") == "plain/path.db"
    for bad in ("sqlite://", "sqlite:///", "sqlite://host/x.db", "postgres:///x", ""):
        with pytest.raises(StoreURLError):
            sqlite_path(bad)


async def test_open_store_relative_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = await open_store("sqlite:///rel/sessions.db")
    try:
        assert isinstance(store, SQLiteStore)
        await store.put(record(key()))
    finally:
        await store.close()
    assert (tmp_path / "rel" / "sessions.db").is_file()


async def test_open_store_absolute_url_memory_and_bad_scheme(tmp_path: Path) -> None:
    absolute = tmp_path / "abs.db"
    store = await open_store(f"sqlite:///{absolute}")  # f"sqlite:///" + "/tmp/..." = 4 slashes
    await store.close()
    assert absolute.is_file()

    mem = await open_store("sqlite:///:memory:")
    assert isinstance(mem, SQLiteStore) and await mem.ping()
    await mem.close()

    plain = await open_store("memory://")
    assert isinstance(plain, MemoryStore)
    await plain.close()

    with pytest.raises(StoreURLError, match="mongodb"):
        await open_store("mongodb://localhost/x")


def _file_turns(path: Path) -> list[int]:
    with sqlite3.connect(path) as conn:
        return [row[0] for row in conn.execute("SELECT turn_count FROM sessions ORDER BY user_id")]


async def test_touches_reach_the_file_in_one_write_off_the_turn(tmp_path: Path) -> None:
    # a turn's touch returns without waiting for the database; the touches of many turns
    # are written together soon after, where another process (the admin CLI) reads them
    path = tmp_path / "touch.db"
    store = await SQLiteStore.open(path)
    try:
        await store.put(record(key(user="a"), ref="a"))
        await store.put(record(key(user="b"), ref="b"))
        statements: list[str] = []
        store._db.conn.set_trace_callback(lambda sql: statements.append(sql.split()[0]))
        for _ in range(3):
            await store.touch(key(user="a"))
        await store.touch(key(user="b"))
        assert statements == []  # nothing written on the turns' path
        got = await store.get(key(user="a"))
        assert got is not None and got.turn_count == 3  # this process sees them at once
        async with asyncio.timeout(10):
            while _file_turns(path) != [3, 1]:
                await asyncio.sleep(0.05)
        # one transaction, one UPDATE per conversation
        writes = [s for s in statements if s != "SELECT"]  # the reads of get() and this loop
        assert writes == ["BEGIN", "UPDATE", "UPDATE", "COMMIT"]
        got = await store.get(key(user="a"))
        assert got is not None and got.turn_count == 3  # not counted twice once written
    finally:
        await store.close()


async def test_a_put_or_delete_drops_touches_not_written_yet(tmp_path: Path) -> None:
    path = tmp_path / "touch.db"
    store = await SQLiteStore.open(path)
    await store.put(record(key(user="a"), ref="a", turns=5))
    await store.touch(key(user="a"))
    await store.put(record(key(user="a"), ref="new", turns=0))  # a new session replaces it
    await store.put(record(key(user="b"), ref="b", turns=0))
    await store.touch(key(user="b"))
    await store.delete(key(user="b"))
    await store.put(record(key(user="b"), ref="b2", turns=0))
    await store.close()  # writes what is pending
    assert _file_turns(path) == [0, 0]


async def test_payloads_named_again_cost_no_statement_and_stay_alive(tmp_path: Path) -> None:
    # the same buttons answer after answer: named once by a statement; then from memory,
    # their last use written in the background with the touches
    path = tmp_path / "buttons.db"
    store = await SQLiteStore.open(path)
    try:
        first = await store.short_ids(["Sim", "Não"])
        statements: list[str] = []
        store._db.conn.set_trace_callback(lambda sql: statements.append(sql.split()[0]))
        assert await store.short_ids(["Não", "Sim"]) == first[::-1]
        assert statements == []
        await store.short_ids(["Sim", "Talvez"])  # one new payload: one statement for both
        assert statements == ["INSERT"]
        statements.clear()
        with sqlite3.connect(path) as raw:
            (before,) = raw.execute(
                "SELECT last_used FROM buttons WHERE payload = 'Não'"
            ).fetchone()
        await asyncio.sleep(0.01)
        assert await store.short_ids(["Não"]) == [first[1]]
        assert statements == []
        await store.prune(timedelta(days=1))  # writes what is pending first
        with sqlite3.connect(path) as raw:
            (after,) = raw.execute("SELECT last_used FROM buttons WHERE payload = 'Não'").fetchone()
        assert after > before
        assert statements == ["BEGIN", "UPDATE", "COMMIT", "DELETE"]  # "Não" only: "Sim" was
        # written by the statement that named "Talvez"
    finally:
        await store.close()
