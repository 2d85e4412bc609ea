"""The embedded default SessionStore: one SQLite file, written from the event loop's thread.

Every statement of a turn (a session read, button ids, the journal's writes) takes tens of
microseconds and runs inline on one stdlib ``sqlite3`` connection, with no hand-off to a
worker thread; what may wait or take long (another process holding the write lock, opening
and migrating, pruning, listing, checkpoints, closing) runs off the loop: see
:mod:`core.store.sqlite_connection`. Because inline work never awaits in the middle, each
method's statements are atomic with respect to other coroutines without a lock.

WAL mode lets the admin CLI read (and write) while the bots run; ``synchronous = NORMAL``: a
commit survives the process being killed, not an operating-system crash (see
:mod:`core.store.sqlite_connection`).
"""

from __future__ import annotations

import asyncio
import builtins
import dataclasses
import logging
import sqlite3
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chatbridge.core.store._common import (
    DEFAULT_BUTTON_TTL,
    from_micros,
    short_id_candidates,
    to_micros,
    utcnow,
)
from chatbridge.core.store.sqlite_connection import (
    CHECKPOINT_INTERVAL,
    LoopConnection,
    in_transaction,
)
from chatbridge.core.types import ConversationKey, SessionRecord

if TYPE_CHECKING:
    from chatbridge.core.store.sqlite_journal import SQLiteJournal

__all__ = ["CHECKPOINT_INTERVAL", "MIGRATIONS", "SCHEMA_VERSION", "SQLiteStore", "SchemaTooNew"]

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

#: A payload named within this long is named again from memory, with no statement on the
#: turn's path; its button's last_used is renewed with the touches (see short_ids).
NAMED_RECENTLY = timedelta(hours=1)
#: At most this many payloads remembered (the oldest is forgotten first).
NAMED_KEPT = 4096

log = logging.getLogger(__name__)

_KEY_WHERE = "bot = ? AND platform = ? AND chat_id = ? AND user_id = ? AND thread_id = ?"
_COLUMNS = (
    "bot, platform, chat_id, user_id, thread_id, backend, session_ref, language, "
    "created_at, last_active, turn_count"
)
_BUTTON_INSERT = "INSERT INTO buttons (short_id, payload, created_at, last_used) VALUES "
# Every payload of an answer in one statement: a new payload gets its first candidate id, a
# known one keeps its id and is marked as issued again; a payload whose first candidate is
# another payload's (a hash collision, practically never) is skipped and named afterwards.
_BUTTON_UPSERT = (
    " ON CONFLICT (payload) DO UPDATE SET last_used = excluded.last_used"
    " ON CONFLICT DO NOTHING RETURNING payload, short_id"
)


class SchemaTooNew(RuntimeError):
    """The file was written by a newer chatbridge; refusing to guess its layout."""


def to_micros_delta(value: timedelta) -> int:
    return (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds


def _user_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def _migrate(conn: sqlite3.Connection, path: str) -> None:
    for number, statements in enumerate(MIGRATIONS, start=1):

        def apply(
            conn: sqlite3.Connection, number: int = number, statements: Any = statements
        ) -> None:
            # Read inside the (IMMEDIATE) transaction so that two processes opening the
            # same new file do not both apply a migration.
            current = _user_version(conn)
            if current > SCHEMA_VERSION:
                raise SchemaTooNew(
                    f"{path}: schema version {current} is newer than this chatbridge "
                    f"supports ({SCHEMA_VERSION})"
                )
            if current >= number:
                return
            for statement in statements:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number}")

        in_transaction(conn, apply)


def _prune_buttons(conn: sqlite3.Connection, cutoff: int) -> int:
    return conn.execute("DELETE FROM buttons WHERE last_used < ?", (cutoff,)).rowcount


def _key_params(key: ConversationKey) -> tuple[str, str, str, str, str]:
    return (key.bot, key.platform, key.chat_id, key.user_id, key.thread_id or "")


def _row(record: SessionRecord) -> tuple[Any, ...]:
    """``record`` as the values of a sessions row, in ``_COLUMNS`` order."""
    return (
        *_key_params(record.key),
        record.backend,
        record.session_ref,
        record.language,
        to_micros(record.created_at),
        to_micros(record.last_active),
        record.turn_count,
    )


# a session row written over the one stored for its conversation
_UPSERT = f"""INSERT INTO sessions ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (bot, platform, chat_id, user_id, thread_id) DO UPDATE SET
        backend = excluded.backend, session_ref = excluded.session_ref,
        language = excluded.language, created_at = excluded.created_at,
        last_active = excluded.last_active, turn_count = excluded.turn_count"""
# the same, only where the stored row is absent or its ref is still the one given last
_UPSERT_IF_REF = _UPSERT + "\n    WHERE sessions.session_ref IS ?"


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
        db: LoopConnection,
        *,
        button_ttl: timedelta = DEFAULT_BUTTON_TTL,
    ) -> None:
        # Use SQLiteStore.open(); the constructor takes an opened and migrated connection.
        self._db = db
        self._closed = False
        self._journal: SQLiteJournal | None = None
        self.path = db.path
        self.button_ttl = button_ttl
        # touches not written yet: key params -> (last_active in microseconds, turns to add)
        self._touches: dict[tuple[str, str, str, str, str], tuple[int, int]] = {}
        self._touch_timer: asyncio.TimerHandle | None = None
        # payload -> (short id, when its row was last written, µs); and renewals of last_used
        # not written yet, payload -> µs (written with the touches)
        self._named: dict[str, tuple[str, int]] = {}
        self._renewed: dict[str, int] = {}

    @classmethod
    async def open(
        cls,
        path: str | Path,
        *,
        button_ttl: timedelta = DEFAULT_BUTTON_TTL,
        busy_timeout_ms: int = 5000,
    ) -> SQLiteStore:
        """Open (creating if needed) and migrate the database; prunes expired button ids.

        ``busy_timeout_ms``: how long a write waits (off the loop) for another process's lock
        before it fails."""
        location = str(path)
        if location != ":memory:":
            Path(location).parent.mkdir(parents=True, exist_ok=True)
        cutoff = to_micros(utcnow() - button_ttl)

        def setup(conn: sqlite3.Connection) -> None:
            _migrate(conn, location)
            _prune_buttons(conn, cutoff)

        db = await LoopConnection.open(location, patience_ms=busy_timeout_ms, setup=setup)
        return cls(db, button_ttl=button_ttl)

    @property
    def checkpoints(self) -> int:
        """WAL checkpoints run since the store opened (0 for ``:memory:``)."""
        return self._db.checkpointer.count if self._db.checkpointer is not None else 0

    async def schema_version(self) -> int:
        return await self._db.run(_user_version)

    @property
    def journal(self) -> SQLiteJournal:
        """The delivery journal in the same file (and on the same connection)."""
        from chatbridge.core.store.sqlite_journal import SQLiteJournal

        if self._journal is None:
            self._journal = SQLiteJournal(self._db)
        return self._journal

    async def _fetch(
        self, sql: str, params: Sequence[Any] = (), *, off_loop: bool = False
    ) -> builtins.list[Any]:
        return await self._db.run(lambda c: c.execute(sql, params).fetchall(), off_loop=off_loop)

    async def _write(self, sql: str, params: Sequence[Any] = (), *, off_loop: bool = False) -> int:
        """One autocommitted statement; returns the number of rows changed."""
        return await self._db.run(lambda c: c.execute(sql, params).rowcount, off_loop=off_loop)

    # --- sessions -----------------------------------------------------------------------------

    async def get(self, key: ConversationKey) -> SessionRecord | None:
        params = _key_params(key)
        rows = await self._fetch(f"SELECT {_COLUMNS} FROM sessions WHERE {_KEY_WHERE}", params)
        if not rows:
            return None
        # nothing awaited since the read: a touch is in the row or in _touches, not both
        # (see _write_touches_now)
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
        await self._write(_UPSERT, _row(record))

    async def put_new(self, record: SessionRecord, replacing: str | None = None) -> SessionRecord:
        params = _key_params(record.key)
        values = (*_row(record), replacing)

        def work(c: sqlite3.Connection) -> bool:
            # written only when absent, or when the stored ref is still ``replacing``
            return bool(c.execute(_UPSERT_IF_REF, values).rowcount)

        if await self._db.run(work):
            self._touches.pop(params, None)
            return record
        current = await self.get(record.key)
        # deleted since (a /reset between the two statements): nothing stored to keep
        return current if current is not None else await self.put_new(record, replacing)

    async def touch(self, key: ConversationKey) -> None:
        """Counts a turn. Written within TOUCH_FLUSH_DELAY, with every other touch of that
        second, in one transaction; this process's reads see it at once, other processes
        (the admin CLI) within the delay."""
        params = _key_params(key)
        _, turns = self._touches.get(params, (0, 0))
        self._touches[params] = (to_micros(utcnow()), turns + 1)
        self._flush_later()

    def _flush_later(self) -> None:
        if self._touch_timer is None and not self._closed:
            loop = asyncio.get_running_loop()
            self._touch_timer = loop.call_later(TOUCH_FLUSH_DELAY, self._touch_timer_fired)

    def _touch_timer_fired(self) -> None:
        self._touch_timer = None
        try:
            written = self._write_touches_now()
        except Exception as exc:  # recency and a turn counter: not worth failing anything
            log.warning("could not record session activity: %s: %s", type(exc).__name__, exc)
            return
        if not written and not self._closed:  # the file is busy: next time
            loop = asyncio.get_running_loop()
            self._touch_timer = loop.call_later(TOUCH_FLUSH_DELAY, self._touch_timer_fired)

    def _touches_work(self) -> Callable[[sqlite3.Connection], object]:
        rows = [(at, turns, *params) for params, (at, turns) in self._touches.items()]
        sql = f"UPDATE sessions SET last_active = ?, turn_count = turn_count + ? WHERE {_KEY_WHERE}"
        renewals = [(at, payload) for payload, at in self._renewed.items()]
        renew = "UPDATE buttons SET last_used = MAX(last_used, ?) WHERE payload = ?"

        def write(conn: sqlite3.Connection) -> None:
            if rows:
                conn.executemany(sql, rows)
            if renewals:
                conn.executemany(renew, renewals)

        return lambda c: in_transaction(c, write)

    def _write_touches_now(self) -> bool:
        """Writes the pending touches inline; False (nothing written) when that would have
        to wait. Read, written and forgotten with nothing awaited in between, so every read
        finds a touch in exactly one place: the row or ``_touches``. A failed write loses
        them (logged by the caller)."""
        if not self._touches and not self._renewed:
            return True
        try:
            done = self._db.now(self._touches_work())
        except Exception:
            self._forget_pending()
            raise
        if done:
            self._forget_pending()
        return done

    def _forget_pending(self) -> None:
        self._touches.clear()
        self._renewed.clear()

    async def _flush_touches(self) -> None:
        if self._write_touches_now():
            return
        # the file is busy: written off the loop (a read queued before this one may miss
        # them, once: these are a recency and a counter)
        work = self._touches_work()
        self._forget_pending()
        await self._db.run(work)

    async def delete(self, key: ConversationKey) -> bool:
        self._touches.pop(_key_params(key), None)
        changed = await self._write(f"DELETE FROM sessions WHERE {_KEY_WHERE}", _key_params(key))
        return changed > 0

    async def delete_all(self, bot: str | None = None) -> int:
        for params in [p for p in self._touches if bot is None or p[0] == bot]:
            del self._touches[params]
        if bot is None:
            return await self._write("DELETE FROM sessions", off_loop=True)
        return await self._write("DELETE FROM sessions WHERE bot = ?", (bot,), off_loop=True)

    async def list(
        self, bot: str | None = None, user_id: str | None = None, limit: int = 50
    ) -> builtins.list[SessionRecord]:
        await self._flush_touches()  # the order is by last activity
        where, params = self._filters(bot, user_id)
        rows = await self._fetch(
            f"SELECT {_COLUMNS} FROM sessions{where} "
            "ORDER BY last_active DESC, created_at DESC, rowid DESC LIMIT ?",
            (*params, max(0, limit)),
            off_loop=True,  # admin commands, up to every session of a bot
        )
        return [_record(row) for row in rows]

    async def count(self, bot: str | None = None) -> int:
        where, params = self._filters(bot, None)
        # a scan of the sessions: off the loop (it runs once per new conversation)
        rows = await self._fetch(f"SELECT COUNT(*) FROM sessions{where}", params, off_loop=True)
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
        """Ids for every payload, written in one statement however many buttons an answer
        has (a hash collision, practically never, costs a transaction more). Payloads all
        named by this process within NAMED_RECENTLY cost no statement: their rows exist (the
        TTL is far longer) and their last_used is renewed in the background, like touches."""
        unique = list(dict.fromkeys(payloads))
        if not unique:
            return []
        now = to_micros(utcnow())
        recent = now - to_micros_delta(NAMED_RECENTLY)
        named = self._named
        if all(p in named and named[p][1] >= recent for p in unique):
            for p in unique:
                self._renewed[p] = now
            self._flush_later()
            return [named[p][0] for p in payloads]
        values = ", ".join(["(?, ?, ?, ?)"] * len(unique))
        params = [v for p in unique for v in (short_id_candidates(p)[0], p, now, now)]
        sql = _BUTTON_INSERT + values + _BUTTON_UPSERT
        rows = await self._db.run(lambda c: c.execute(sql, params).fetchall())
        ids = {str(row[0]): str(row[1]) for row in rows}
        missing = [p for p in unique if p not in ids]
        if missing:
            ids.update(await self._db.run(lambda c: in_transaction(c, _colliding(missing, now))))
        for p in unique:
            named.pop(p, None)  # (re)inserted last: the oldest go first
            named[p] = (ids[p], now)
            self._renewed.pop(p, None)  # written now
        while len(named) > NAMED_KEPT:
            del named[next(iter(named))]
        return [ids[p] for p in payloads]

    async def resolve(self, short_id: str) -> str | None:
        rows = await self._fetch("SELECT payload FROM buttons WHERE short_id = ?", (short_id,))
        return str(rows[0][0]) if rows else None

    async def prune(self, older_than: timedelta | None = None) -> int:
        """Forget button ids not issued for ``older_than`` (default: the store's TTL)."""
        await self._flush_touches()  # renewals of last_used not written yet
        age = self.button_ttl if older_than is None else older_than
        cutoff = to_micros(utcnow() - age)
        self._named.clear()  # a pruned payload must be written again when named
        return await self._db.run(lambda c: _prune_buttons(c, cutoff), off_loop=True)

    # --- lifecycle ----------------------------------------------------------------------------

    async def ping(self) -> bool:
        if self._closed:
            return False
        try:
            rows = await self._fetch("SELECT 1")
        except (sqlite3.Error, ValueError):
            return False
        return bool(rows) and rows[0][0] == 1

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._touch_timer is not None:
            self._touch_timer.cancel()
            self._touch_timer = None
        try:
            # the turns counted since the last write (at most TOUCH_FLUSH_DELAY ago)
            await self._flush_touches()
        except Exception as exc:
            log.warning("could not record session activity: %s: %s", type(exc).__name__, exc)
        finally:
            await self._db.close()


def _colliding(payloads: Sequence[str], now: int) -> Callable[[sqlite3.Connection], dict[str, str]]:
    """Names payloads whose first candidate id another payload holds: the next free one."""

    def name(conn: sqlite3.Connection) -> dict[str, str]:
        ids: dict[str, str] = {}
        for payload in payloads:
            row = conn.execute("SELECT short_id FROM buttons WHERE payload = ?", (payload,))
            found = row.fetchone()
            if found is not None:  # named meanwhile by another process
                ids[payload] = str(found[0])
                continue
            ids[payload] = _insert_colliding(conn, payload, now)
        return ids

    return name


def _insert_colliding(conn: sqlite3.Connection, payload: str, now: int) -> str:
    for candidate in short_id_candidates(payload)[1:]:
        try:
            conn.execute(_BUTTON_INSERT + "(?, ?, ?, ?)", (candidate, payload, now, now))
        except sqlite3.IntegrityError:
            continue  # taken by another payload too: try the next
        return candidate
    raise RuntimeError("no free short id for a button payload")  # pragma: no cover
