"""The embedded default SessionStore: one SQLite file via aiosqlite.

One aiosqlite connection (one worker thread) carries every statement; an ``asyncio.Lock``
makes each multi-statement transaction atomic with respect to other coroutines, which would
otherwise interleave their statements on the shared connection. WAL mode lets the admin CLI
read (and write, waiting up to ``busy_timeout``) while the bots run.
"""

from __future__ import annotations

import asyncio
import builtins
import dataclasses
import logging
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiosqlite

from chatbridge.core.store._common import (
    DEFAULT_BUTTON_TTL,
    from_micros,
    short_id_candidates,
    to_micros,
    utcnow,
)
from chatbridge.core.types import ConversationKey, SessionRecord

if TYPE_CHECKING:
    from chatbridge.core.store.sqlite_journal import SQLiteJournal

# Numbered migrations, applied in order, each in its own transaction; PRAGMA user_version holds
# the number of the last one applied. Append only: never edit a released migration.
MIGRATIONS: Sequence[Sequence[str]] = (
    # 1: sessions and button short ids. thread_id is '' (not NULL) when absent so that the
    # primary key is unique (SQLite treats NULLs in a key as distinct). Times are integer
    # microseconds since the epoch, UTC.
    (
        """CREATE TABLE sessions (
            bot TEXT NOT NULL,
            platform TEXT NOT NULL,
            chat_id TEXT NOT NULL,
            user_id TEXT NOT NULL,
            thread_id TEXT NOT NULL DEFAULT '',
            backend TEXT NOT NULL,
            session_ref TEXT NOT NULL,
            language TEXT,
            created_at INTEGER NOT NULL,
            last_active INTEGER NOT NULL,
            turn_count INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (bot, platform, chat_id, user_id, thread_id)
        )""",
        "CREATE INDEX sessions_bot_active ON sessions (bot, last_active DESC)",
        "CREATE INDEX sessions_active ON sessions (last_active DESC)",
        "CREATE INDEX sessions_user ON sessions (bot, user_id)",
        """CREATE TABLE buttons (
            short_id TEXT PRIMARY KEY,
            payload TEXT NOT NULL UNIQUE,
            created_at INTEGER NOT NULL,
            last_used INTEGER NOT NULL
        )""",
        "CREATE INDEX buttons_last_used ON buttons (last_used)",
    ),
    # 2: the delivery journal (core.store.sqlite_journal). seq is the arrival order; (bot,
    # source) makes a redelivered platform message a no-op. inbound and answer are the JSON of
    # core.store._journal_codec. The partial index keeps the unfinished work cheap to list.
    (
        """CREATE TABLE journal (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            bot TEXT NOT NULL,
            source TEXT NOT NULL,
            chat_id TEXT NOT NULL,
            message_id TEXT,
            inbound TEXT NOT NULL,
            state TEXT NOT NULL,
            answer TEXT,
            received_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL,
            UNIQUE (bot, source)
        )""",
        """CREATE INDEX journal_open ON journal (bot, seq)
            WHERE state IN ('received', 'sent_to_backend', 'answered')""",
        "CREATE INDEX journal_chat ON journal (bot, received_at)",
        """CREATE INDEX journal_finished ON journal (updated_at)
            WHERE state IN ('delivered', 'refused', 'failed_notified')""",
    ),
)

SCHEMA_VERSION = len(MIGRATIONS)

# touch() is called at the end of every turn; its write waits this long so that touches of
# many turns go to the database in one transaction, off the turns' path.
TOUCH_FLUSH_DELAY = 1.0

#: Seconds between WAL checkpoints (see SQLiteStore._checkpoints).
CHECKPOINT_INTERVAL = 1.0

log = logging.getLogger(__name__)

_KEY_WHERE = "bot = ? AND platform = ? AND chat_id = ? AND user_id = ? AND thread_id = ?"
_COLUMNS = (
    "bot, platform, chat_id, user_id, thread_id, backend, session_ref, language, "
    "created_at, last_active, turn_count"
)


async def _wal_mode(conn: aiosqlite.Connection, patience_ms: int) -> None:
    """Switch the file to WAL. SQLite does not wait on a lock for this pragma (no busy
    handler): another process creating the same file at the same moment makes it fail at
    once, so it is retried for up to ``patience_ms``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + patience_ms / 1000
    while True:
        try:
            await conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or loop.time() >= deadline:
                raise
            await asyncio.sleep(0.02)


class SchemaTooNew(RuntimeError):
    """The file was written by a newer chatbridge; refusing to guess its layout."""


def _key_params(key: ConversationKey) -> tuple[str, str, str, str, str]:
    return (key.bot, key.platform, key.chat_id, key.user_id, key.thread_id or "")


def _record(row: Sequence[Any]) -> SessionRecord:
    key = ConversationKey(
        bot=row[0], platform=row[1], chat_id=row[2], user_id=row[3], thread_id=row[4] or None
    )
    return SessionRecord(
        key=key,
        backend=row[5],
        session_ref=row[6],
        language=row[7],
        created_at=from_micros(row[8]),
        last_active=from_micros(row[9]),
        turn_count=row[10],
    )


class SQLiteStore:
    """``core.protocols.SessionStore`` on one SQLite file (or ``":memory:"``)."""

    def __init__(
        self,
        conn: aiosqlite.Connection,
        *,
        path: str,
        button_ttl: timedelta = DEFAULT_BUTTON_TTL,
    ) -> None:
        # Use SQLiteStore.open(); the constructor takes an already configured connection.
        self._conn = conn
        self._lock = asyncio.Lock()
        self._closed = False
        self._journal: SQLiteJournal | None = None
        self._checkpointer: asyncio.Task[None] | None = None
        self.path = path
        self.button_ttl = button_ttl
        # touches not written yet: key params -> (last_active in microseconds, turns to add)
        self._touches: dict[tuple[str, str, str, str, str], tuple[int, int]] = {}
        self._touch_timer: asyncio.TimerHandle | None = None
        self._touch_flush: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls,
        path: str | Path,
        *,
        button_ttl: timedelta = DEFAULT_BUTTON_TTL,
        busy_timeout_ms: int = 5000,
    ) -> SQLiteStore:
        """Open (creating if needed) and migrate the database; prunes expired button ids."""
        location = str(path)
        if location != ":memory:":
            Path(location).parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: autocommit; transactions are opened explicitly below.
        conn = await aiosqlite.connect(location, isolation_level=None)
        try:
            await conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            if location != ":memory:":
                await _wal_mode(conn, busy_timeout_ms)
                # NORMAL is durable across application crashes in WAL mode (only an OS crash
                # may lose the last transactions), and much faster than FULL.
                await conn.execute("PRAGMA synchronous = NORMAL")
                # Checkpoints (the only fsyncs in this mode) run on a connection of their own
                # (see _checkpoints): inline, one commit in a few hundred would wait for one,
                # which made the journal's p99 per turn ~10 ms instead of well under 1 ms.
                await conn.execute("PRAGMA wal_autocheckpoint = 0")
            store = cls(conn, path=location, button_ttl=button_ttl)
            await store._migrate()
            await store.prune()
            if location != ":memory:":
                store._checkpointer = asyncio.create_task(
                    store._checkpoints(busy_timeout_ms), name=f"sqlite-checkpoint:{location}"
                )
        except BaseException:
            await conn.close()
            raise
        return store

    # --- schema -------------------------------------------------------------------------------

    async def _user_version(self) -> int:
        rows = await self._conn.execute_fetchall("PRAGMA user_version")
        return int(next(iter(rows))[0])

    async def schema_version(self) -> int:
        async with self._lock:
            return await self._user_version()

    async def _migrate(self) -> None:
        for number, statements in enumerate(MIGRATIONS, start=1):
            async with self._transaction():
                # Read inside the (IMMEDIATE) transaction so that two processes opening the
                # same new file do not both apply a migration.
                current = await self._user_version()
                if current > SCHEMA_VERSION:
                    raise SchemaTooNew(
                        f"{self.path}: schema version {current} is newer than this chatbridge "
                        f"supports ({SCHEMA_VERSION})"
                    )
                if current >= number:
                    continue
                for statement in statements:
                    await self._conn.execute(statement)
                await self._conn.execute(f"PRAGMA user_version = {number}")

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[None]:
        async with self._lock:
            await self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                await self._conn.execute("ROLLBACK")
                raise
            await self._conn.execute("COMMIT")

    @property
    def journal(self) -> SQLiteJournal:
        """The delivery journal in the same file (and on the same connection)."""
        from chatbridge.core.store.sqlite_journal import SQLiteJournal

        if self._journal is None:
            self._journal = SQLiteJournal(self)
        return self._journal

    async def _fetch(self, sql: str, params: Sequence[Any] = ()) -> builtins.list[Sequence[Any]]:
        async with self._lock:
            return list(await self._conn.execute_fetchall(sql, params))

    async def _batch(
        self, statements: Sequence[tuple[str, Sequence[Any], bool]]
    ) -> builtins.list[Any]:
        """Several statements in one transaction and one trip to the worker thread; for each,
        its rows (``fetch``) or its row count. All or nothing."""

        def work(conn: sqlite3.Connection) -> builtins.list[Any]:
            conn.execute("BEGIN IMMEDIATE")
            try:
                out: builtins.list[Any] = []
                for sql, params, fetch in statements:
                    cursor = conn.execute(sql, params)
                    out.append(cursor.fetchall() if fetch else cursor.rowcount)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return out

        async with self._lock:
            # aiosqlite runs one function in its worker thread this way (the public API sends
            # statements one by one, a thread hop each)
            return await self._conn._execute(work, self._conn._conn)

    async def _write(self, sql: str, params: Sequence[Any] = ()) -> int:
        """One autocommitted statement; returns the number of rows changed."""
        async with self._lock:
            cursor = await self._conn.execute(sql, params)
            return cursor.rowcount

    # --- sessions -----------------------------------------------------------------------------

    async def get(self, key: ConversationKey) -> SessionRecord | None:
        params = _key_params(key)
        rows = await self._fetch(f"SELECT {_COLUMNS} FROM sessions WHERE {_KEY_WHERE}", params)
        if not rows:
            return None
        # no await since the read: a touch flushed meanwhile is in the row, not in _touches
        pending = self._touches.get(params)
        record = _record(rows[0])
        if pending is not None:
            record = dataclasses.replace(
                record,
                last_active=from_micros(pending[0]),
                turn_count=record.turn_count + pending[1],
            )
        return record

    async def put(self, record: SessionRecord) -> None:
        # the record replaces the stored one, touches included (the engine puts what it got)
        self._touches.pop(_key_params(record.key), None)
        await self._write(
            f"""INSERT INTO sessions ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (bot, platform, chat_id, user_id, thread_id) DO UPDATE SET
                backend = excluded.backend, session_ref = excluded.session_ref,
                language = excluded.language, created_at = excluded.created_at,
                last_active = excluded.last_active, turn_count = excluded.turn_count""",
            (
                *_key_params(record.key),
                record.backend,
                record.session_ref,
                record.language,
                to_micros(record.created_at),
                to_micros(record.last_active),
                record.turn_count,
            ),
        )

    async def touch(self, key: ConversationKey) -> None:
        """Counts a turn. Written within TOUCH_FLUSH_DELAY, with every other touch of that
        second, in one transaction; this process's reads see it at once, other processes
        (the admin CLI) within the delay."""
        params = _key_params(key)
        _, turns = self._touches.get(params, (0, 0))
        self._touches[params] = (to_micros(utcnow()), turns + 1)
        if self._touch_timer is None and self._touch_flush is None and not self._closed:
            loop = asyncio.get_running_loop()
            self._touch_timer = loop.call_later(TOUCH_FLUSH_DELAY, self._start_touch_flush)

    def _start_touch_flush(self) -> None:
        self._touch_timer = None
        self._touch_flush = asyncio.get_running_loop().create_task(self._flush_touches_later())

    async def _flush_touches_later(self) -> None:
        try:
            await self._flush_touches()
        except Exception as exc:  # recency and a turn counter: not worth failing anything
            log.warning("could not record session activity: %s: %s", type(exc).__name__, exc)
        finally:
            self._touch_flush = None
        if self._touches and not self._closed:  # touched while we wrote
            loop = asyncio.get_running_loop()
            self._touch_timer = loop.call_later(TOUCH_FLUSH_DELAY, self._start_touch_flush)

    async def _flush_touches(self) -> None:
        if not self._touches:
            return
        async with self._transaction():
            # taken under the lock: a read holding it has merged these already, one waiting
            # for it will find them in the rows
            touches, self._touches = self._touches, {}
            await self._conn.executemany(
                "UPDATE sessions SET last_active = ?, turn_count = turn_count + ? "
                f"WHERE {_KEY_WHERE}",
                [(at, turns, *params) for params, (at, turns) in touches.items()],
            )

    async def delete(self, key: ConversationKey) -> bool:
        self._touches.pop(_key_params(key), None)
        changed = await self._write(f"DELETE FROM sessions WHERE {_KEY_WHERE}", _key_params(key))
        return changed > 0

    async def delete_all(self, bot: str | None = None) -> int:
        for params in [p for p in self._touches if bot is None or p[0] == bot]:
            del self._touches[params]
        if bot is None:
            return await self._write("DELETE FROM sessions")
        return await self._write("DELETE FROM sessions WHERE bot = ?", (bot,))

    async def list(
        self, bot: str | None = None, user_id: str | None = None, limit: int = 50
    ) -> builtins.list[SessionRecord]:
        await self._flush_touches()  # the order is by last activity
        where, params = self._filters(bot, user_id)
        rows = await self._fetch(
            f"SELECT {_COLUMNS} FROM sessions{where} "
            "ORDER BY last_active DESC, created_at DESC, rowid DESC LIMIT ?",
            (*params, max(0, limit)),
        )
        return [_record(row) for row in rows]

    async def count(self, bot: str | None = None) -> int:
        where, params = self._filters(bot, None)
        rows = await self._fetch(f"SELECT COUNT(*) FROM sessions{where}", params)
        return int(rows[0][0])

    @staticmethod
    def _filters(bot: str | None, user_id: str | None) -> tuple[str, builtins.list[str]]:
        clauses: list[str] = []
        params: list[str] = []
        if bot is not None:
            clauses.append("bot = ?")
            params.append(bot)
        if user_id is not None:
            clauses.append("user_id = ?")
            params.append(user_id)
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), params

    # --- button short ids ---------------------------------------------------------------------

    async def short_id(self, payload: str) -> str:
        return (await self.short_ids([payload]))[0]

    async def short_ids(self, payloads: Sequence[str]) -> builtins.list[str]:
        """Ids for every payload, written in one transaction (a handful of statements however
        many buttons an answer has)."""
        unique = list(dict.fromkeys(payloads))
        if not unique:
            return []
        now = to_micros(utcnow())
        marks = ", ".join("?" * len(unique))
        async with self._transaction():
            # the first candidate of each payload; a payload already stored keeps its id
            # (and is only marked as issued again), a rare hash collision is done below
            await self._conn.executemany(
                "INSERT OR IGNORE INTO buttons (short_id, payload, created_at, last_used) "
                "VALUES (?, ?, ?, ?)",
                [(short_id_candidates(p)[0], p, now, now) for p in unique],
            )
            await self._conn.execute(
                f"UPDATE buttons SET last_used = ? WHERE payload IN ({marks})", (now, *unique)
            )
            rows = await self._conn.execute_fetchall(
                f"SELECT payload, short_id FROM buttons WHERE payload IN ({marks})", unique
            )
            ids = {str(row[0]): str(row[1]) for row in rows}
            for payload in unique:
                if payload not in ids:
                    ids[payload] = await self._insert_colliding(payload, now)
        return [ids[p] for p in payloads]

    async def _insert_colliding(self, payload: str, now: int) -> str:
        for candidate in short_id_candidates(payload)[1:]:
            try:
                await self._conn.execute(
                    "INSERT INTO buttons (short_id, payload, created_at, last_used) "
                    "VALUES (?, ?, ?, ?)",
                    (candidate, payload, now, now),
                )
            except sqlite3.IntegrityError:
                continue  # taken by another payload too: try the next
            return candidate
        raise RuntimeError("no free short id for a button payload")  # pragma: no cover

    async def resolve(self, short_id: str) -> str | None:
        rows = await self._fetch("SELECT payload FROM buttons WHERE short_id = ?", (short_id,))
        return str(rows[0][0]) if rows else None

    async def prune(self, older_than: timedelta | None = None) -> int:
        """Forget button ids not issued for ``older_than`` (default: the store's TTL)."""
        age = self.button_ttl if older_than is None else older_than
        cutoff = to_micros(utcnow() - age)
        return await self._write("DELETE FROM buttons WHERE last_used < ?", (cutoff,))

    # --- lifecycle ----------------------------------------------------------------------------

    async def ping(self) -> bool:
        if self._closed:
            return False
        try:
            rows = await self._fetch("SELECT 1")
        except (sqlite3.Error, ValueError):
            return False
        return bool(rows) and rows[0][0] == 1

    async def _checkpoints(self, busy_timeout_ms: int) -> None:
        """Copy the WAL into the database now and then, off the writers' connection (a
        PASSIVE checkpoint never blocks them), so the WAL stays small."""
        conn = await aiosqlite.connect(self.path, isolation_level=None)
        try:
            await conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            while True:
                await asyncio.sleep(CHECKPOINT_INTERVAL)
                try:
                    await conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error as exc:
                    log.warning("sqlite store %s: checkpoint failed: %s", self.path, exc)
        finally:
            await conn.close()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        task, self._checkpointer = self._checkpointer, None
        if task is not None:
            task.cancel()  # it closes its own connection (the last one to close checkpoints)
        if self._touch_timer is not None:
            self._touch_timer.cancel()
            self._touch_timer = None
        try:
            # the turns counted since the last write (at most TOUCH_FLUSH_DELAY ago); with
            # nothing pending this awaits nothing
            if self._touch_flush is not None:
                await asyncio.shield(self._touch_flush)
            await self._flush_touches()
        except Exception as exc:
            log.warning("could not record session activity: %s: %s", type(exc).__name__, exc)
        finally:
            # Whatever happened above (Ctrl-C cancels it), the connection's close starts here
            # with nothing else awaited first: once started, aiosqlite stops its worker thread
            # even if this is cancelled; a thread left running would keep the process alive.
            async with self._lock:
                await self._conn.close()
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)
