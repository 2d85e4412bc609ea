"""SQLiteStore on the event loop's thread: a turn's statements run inline (no thread hop, no
suspension); a write lock held by another process is waited for off the loop, in order; the
checkpointer keeps the WAL small; a killed process loses no commit."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import sys
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
from test_engine import RecordingSurface, ScriptedBackend

from chatbridge.core.engine import Engine
from chatbridge.core.protocols import Surface
from chatbridge.core.store import SQLiteStore
from chatbridge.core.store import sqlite_connection as loop_connection
from chatbridge.core.types import (
    Button,
    ConversationKey,
    Inbound,
    ReplyMessage,
    SessionRecord,
    TurnState,
)

ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")


def key(user: str = "u1") -> ConversationKey:
    return ConversationKey(bot="b", platform="test", chat_id="c-" + user, user_id=user)


def at_once(coro: Coroutine[Any, Any, T]) -> T:
    """The coroutine's result if it finishes without ever suspending (it awaited nothing
    that waits: no thread, no timer, no other task); fails otherwise."""
    try:
        coro.send(None)
    except StopIteration as done:
        result: T = done.value
        return result
    coro.close()
    raise AssertionError("the call suspended: it waited for something")


class Probe:
    """Counts event-loop turns: it only advances while the loop is free to run tasks."""

    def __init__(self) -> None:
        self.ticks = 0
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            self.ticks += 1
            await asyncio.sleep(0)

    async def advance(self, ticks: int) -> None:
        target = self.ticks + ticks
        while self.ticks < target:
            await asyncio.sleep(0)

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    # a long patience, so that the lock tests never depend on how fast this machine is
    s = await SQLiteStore.open(tmp_path / "loop.db", busy_timeout_ms=60_000)
    yield s
    await s.close()


def engine_for(store: SQLiteStore) -> Engine:
    return Engine(
        bot="b",
        backend=ScriptedBackend(),
        backend_name="ai",
        store=store,
        journal=store.journal,
    )


def ready(inbound: Inbound, surface: Surface):  # type: ignore[no-untyped-def]
    async def prepare() -> tuple[Inbound, Surface]:
        return inbound, surface

    return prepare


# --- inline --------------------------------------------------------------------------------------


async def test_every_call_of_a_turn_completes_without_suspending(store: SQLiteStore) -> None:
    journal = store.journal
    record = SessionRecord(
        key=key(),
        backend="ai",
        session_ref="s1",
        language=None,
        created_at=datetime.now(UTC),
        last_active=datetime.now(UTC),
    )
    at_once(store.put(record))
    entry = at_once(journal.record(Inbound(key(), "hello", message_id="1"), "src-1"))
    assert entry is not None
    at_once(journal.advance("b", entry.seq, TurnState.SENT))
    got = at_once(store.get(key()))
    assert got is not None and got.session_ref == "s1"
    ids = at_once(store.short_ids(["yes", "no", "yes"]))
    assert ids[0] == ids[2] != ids[1]
    answer = (ReplyMessage("ok", (Button("Yes", payload="yes"),)),)
    at_once(journal.answer("b", entry.seq, answer))
    at_once(journal.advance("b", entry.seq, TurnState.DELIVERED))
    at_once(store.touch(key()))
    assert at_once(store.resolve(ids[1])) == "no"
    assert store._db.waited == 0
    assert await journal.unfinished("b") == []


async def test_an_engine_turn_runs_its_statements_on_the_loop_thread(store: SQLiteStore) -> None:
    engine = engine_for(store)
    warm = await engine.accept(
        key(), ready(Inbound(key(), "first"), RecordingSurface()), source="s0"
    )
    assert warm is not None and (await warm).outcome == "ok"  # the session exists now
    threads: list[tuple[int, str]] = []
    store._db.conn.set_trace_callback(
        lambda sql: threads.append((threading.get_ident(), sql.split()[0]))
    )
    surface = RecordingSurface()
    future = await engine.accept(key(), ready(Inbound(key(), "hello"), surface), source="s1")
    assert future is not None and (await future).outcome == "ok"
    store._db.conn.set_trace_callback(None)
    # the journal's record, the session read, and the journal's sent, answer and delivered
    assert [sql for _, sql in threads] == ["INSERT", "SELECT", "UPDATE", "UPDATE", "UPDATE"]
    assert {thread for thread, _ in threads} == {threading.get_ident()}


# --- another process holds the write lock ----------------------------------------------------

HOLDER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
conn.execute("UPDATE sessions SET turn_count = turn_count")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("COMMIT")
print("released", flush=True)
"""


@pytest.fixture
async def holder(store: SQLiteStore) -> AsyncIterator[asyncio.subprocess.Process]:
    """Another process (as the admin CLI would) holding the write lock until told."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        HOLDER,
        store.path,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    assert await proc.stdout.readline() == b"locked\n"
    yield proc
    if proc.returncode is None:
        proc.kill()
    await proc.wait()


async def release(proc: asyncio.subprocess.Process) -> None:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(b"go\n")
    await proc.stdin.drain()
    assert await proc.stdout.readline() == b"released\n"


async def test_a_turn_waits_for_another_process_lock_off_the_loop(
    store: SQLiteStore, holder: asyncio.subprocess.Process
) -> None:
    engine = engine_for(store)
    probe = Probe()
    try:
        surfaces = [RecordingSurface() for _ in range(3)]
        users = ["u1", "u2", "u3"]
        accepted = [
            asyncio.create_task(
                engine.accept(key(u), ready(Inbound(key(u), f"hi {u}"), s), source=f"m-{u}")
            )
            for u, s in zip(users, surfaces, strict=True)
        ]
        # the loop keeps running other tasks while the journal waits for the lock
        await probe.advance(500)
        assert not any(task.done() for task in accepted)
        assert store._db.waited == 1  # the first write; the others queue behind it
        await release(holder)
        futures = await asyncio.gather(*accepted)
        results = await asyncio.gather(*(f for f in futures if f is not None))
        assert [r.outcome for r in results] == ["ok", "ok", "ok"]
        for user, surface in zip(users, surfaces, strict=True):
            assert surface.events[-1][0] == "finish" and f"hi {user}" in surface.events[-1][1]
        rows = await store._fetch("SELECT source, state FROM journal ORDER BY seq")
        # written in the order the messages arrived, though all of them waited
        assert rows == [("m-u1", "delivered"), ("m-u2", "delivered"), ("m-u3", "delivered")]
    finally:
        await probe.stop()


async def test_a_lock_held_past_the_patience_fails_the_write_not_the_loop(
    tmp_path: Path,
) -> None:
    path = tmp_path / "patience.db"
    store = await SQLiteStore.open(path, busy_timeout_ms=300)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        HOLDER,
        str(path),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    probe = Probe()
    try:
        assert proc.stdout is not None and await proc.stdout.readline() == b"locked\n"
        write = asyncio.create_task(store.journal.record(Inbound(key(), "x"), "x"))
        ticks = probe.ticks
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            await write
        assert probe.ticks > ticks + 10  # the loop ran meanwhile
        await release(proc)
        # the store works again once the lock is gone
        assert await store.journal.record(Inbound(key(), "x"), "x") is not None
    finally:
        await probe.stop()
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        await store.close()


# --- checkpoints ---------------------------------------------------------------------------------


def size_of(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return -1


@pytest.fixture
def small_wal(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    limit = 64 * 1024
    monkeypatch.setattr(loop_connection, "WAL_CHECKPOINT_BYTES", limit)
    monkeypatch.setattr(loop_connection, "WAL_RESTART_BYTES", limit * 4)
    monkeypatch.setattr(loop_connection, "CHECKPOINT_POLL", 0.005)
    monkeypatch.setattr(loop_connection, "CHECKPOINT_INTERVAL", 0.005)
    yield limit


async def test_checkpoints_keep_the_wal_small(tmp_path: Path, small_wal: int) -> None:
    path = tmp_path / "wal.db"
    store = await SQLiteStore.open(path)
    wal = Path(str(path) + "-wal")
    page = 4096
    try:
        journal = store.journal
        page = (await store._fetch("PRAGMA page_size"))[0][0]
        commits, largest = 0, 0
        answer = (ReplyMessage("an answer " * 40),)
        for round_ in range(100):
            # counted before the round's writes: the checkpointer may already have run after its
            # last one by the time the loop looks again (then nothing new would wake it)
            seen = store.checkpoints
            for i in range(10):
                n = round_ * 10 + i
                entry = await journal.record(Inbound(key(), f"m{n}"), f"s{n}")
                assert entry is not None
                await journal.answer("b", entry.seq, answer)
                await journal.advance("b", entry.seq, TurnState.DELIVERED)
                commits += 3
            largest = max(largest, size_of(wal))
            async with asyncio.timeout(30):  # a bound for a broken checkpointer, not a figure
                while store.checkpoints <= seen:
                    await asyncio.sleep(0.005)
        written = commits * (page + 24)  # every commit appended at least one page
        # without checkpoints the WAL would hold all of it (about 3 times this lower bound);
        # with them, it holds a few rounds at most, however many rounds run
        assert written > 150 * small_wal
        assert largest < written / 4
        assert store.checkpoints >= 100
    finally:
        await store.close()
    assert size_of(wal) == -1  # the last connection to close checkpoints it and removes it


# --- a killed process ----------------------------------------------------------------------------

WRITER = """
import asyncio, json, os, signal, sys
from datetime import UTC, datetime
from chatbridge.core.store import SQLiteStore
from chatbridge.core.types import ConversationKey, Inbound, SessionRecord, TurnState

async def main() -> None:
    path, how = sys.argv[1], sys.argv[2]
    store = await SQLiteStore.open(path)
    key = ConversationKey(bot="b", platform="test", chat_id="c", user_id="u")
    now = datetime.now(UTC)
    await store.put(SessionRecord(key, "ai", "session-ref", "pt", now, now, 4))
    for i in range(200):
        entry = await store.journal.record(Inbound(key, f"message {i}", message_id=str(i)), f"m{i}")
        await store.journal.advance("b", entry.seq, TurnState.SENT)
    ids = await store.short_ids(["yes", "no"])
    print(json.dumps(ids), flush=True)  # every await above returned: committed
    if how == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    os._exit(3)

asyncio.run(main())
"""


@pytest.mark.parametrize("how", ["sigkill", "exit"])
async def test_what_was_committed_survives_a_killed_process(tmp_path: Path, how: str) -> None:
    path = tmp_path / "crash.db"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", WRITER, str(path), how, stdout=asyncio.subprocess.PIPE, env=env
    )
    out, _ = await proc.communicate()
    assert proc.returncode == (-signal.SIGKILL if how == "sigkill" else 3)
    ids = json.loads(out)
    store = await SQLiteStore.open(path)
    try:
        left = await store.journal.unfinished("b")
        assert [e.inbound.text for e in left] == [f"message {i}" for i in range(200)]
        assert {e.state for e in left} == {TurnState.SENT}
        got = await store.get(ConversationKey(bot="b", platform="test", chat_id="c", user_id="u"))
        assert got is not None and (got.session_ref, got.turn_count) == ("session-ref", 4)
        assert [await store.resolve(i) for i in ids] == ["yes", "no"]
    finally:
        await store.close()
