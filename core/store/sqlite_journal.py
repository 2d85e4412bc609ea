"""The delivery journal in the SQLite file of :class:`~core.store.sqlite.SQLiteStore`.

It shares the store's connection, used from the event loop's thread
(:mod:`core.store.sqlite_connection`): a turn's writes (one statement each, tens of
microseconds) run inline, in the ``await`` that asks for them, and are committed when it
returns. In WAL mode with ``synchronous = NORMAL`` a commit survives a crash of the process
(SIGKILL, OOM); only an operating-system crash or power loss may lose the last ones.

There is no group commit any more: it shared one trip to a worker thread among the writes
that arrived meanwhile; inline, no write waits for another, and a burst of turns is faster
without it (bench/journal_cost.py).
"""

from __future__ import annotations

import builtins
import sqlite3
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from chatbridge.core.store._common import from_micros, to_micros, utcnow
from chatbridge.core.store._journal_codec import (
    dump_answer,
    dump_inbound,
    load_answer,
    load_inbound,
)
from chatbridge.core.types import Inbound, JournalEntry, ReplyMessage, TurnState

if TYPE_CHECKING:
    from chatbridge.core.store.sqlite_connection import LoopConnection

_OPEN = "('received', 'sent_to_backend', 'answered')"
_FINISHED = "('delivered', 'refused', 'failed_notified')"
_COLUMNS = "seq, source, inbound, state, answer, received_at, updated_at"
_RECORD = """INSERT INTO journal (bot, source, chat_id, message_id, inbound, state, received_at,
    updated_at) VALUES (?, ?, ?, ?, ?, 'received', ?, ?) ON CONFLICT (bot, source) DO NOTHING
    RETURNING seq"""
_ADVANCE = "UPDATE journal SET state = ?, updated_at = ? WHERE seq = ? AND bot = ?"
_ANSWER = (
    "UPDATE journal SET state = 'answered', answer = ?, updated_at = ? WHERE seq = ? AND bot = ?"
)
#: Finished entries forgotten per statement: a prune of a busy week is many of them, done off
#: the loop in slices so that turns' writes get in between.
PRUNE_SLICE = 500


def _entry(row: Sequence[Any]) -> JournalEntry:
    return JournalEntry(
        seq=int(row[0]),
        source=str(row[1]),
        inbound=load_inbound(row[2]),
        state=TurnState(row[3]),
        answer=load_answer(row[4]) if row[4] is not None else None,
        received_at=from_micros(row[5]),
        updated_at=from_micros(row[6]),
    )


class SQLiteJournal:
    """``core.protocols.Journal`` on the ``journal`` table (schema migration 2)."""

    def __init__(self, db: LoopConnection) -> None:
        self._db = db

    async def record(self, inbound: Inbound, source: str) -> JournalEntry | None:
        now = to_micros(utcnow())
        params = (
            inbound.key.bot,
            source,
            inbound.key.chat_id,
            inbound.message_id,
            dump_inbound(inbound),
            now,
            now,
        )
        rows = await self._db.run(lambda c: c.execute(_RECORD, params).fetchall())
        if not rows:
            return None
        when = from_micros(now)
        return JournalEntry(
            seq=int(rows[0][0]),
            source=source,
            inbound=inbound,
            state=TurnState.RECEIVED,
            received_at=when,
            updated_at=when,
        )

    async def advance(self, bot: str, seq: int, state: TurnState) -> None:
        params = (state.value, to_micros(utcnow()), seq, bot)
        await self._db.run(lambda c: c.execute(_ADVANCE, params))

    async def answer(self, bot: str, seq: int, messages: Sequence[ReplyMessage]) -> None:
        params = (dump_answer(messages), to_micros(utcnow()), seq, bot)
        await self._db.run(lambda c: c.execute(_ANSWER, params))

    async def _rows(self, sql: str, params: Sequence[Any]) -> builtins.list[Any]:
        # reads that grow with the journal (recovery and catch-up at start): off the loop
        return await self._db.run(lambda c: c.execute(sql, params).fetchall(), off_loop=True)

    async def unfinished(self, bot: str) -> builtins.list[JournalEntry]:
        rows = await self._rows(
            f"SELECT {_COLUMNS} FROM journal WHERE bot = ? AND state IN {_OPEN} ORDER BY seq",
            (bot,),
        )
        return [_entry(row) for row in rows]

    async def last_messages(self, bot: str, since: datetime) -> dict[str, str]:
        # SQLite's bare-column rule: with MAX(seq), message_id comes from that same row.
        rows = await self._rows(
            """SELECT chat_id, message_id, MAX(seq) FROM journal
            WHERE bot = ? AND received_at >= ? AND message_id IS NOT NULL GROUP BY chat_id""",
            (bot, to_micros(since)),
        )
        return {str(row[0]): str(row[1]) for row in rows}

    async def prune(self, older_than: timedelta) -> int:
        cutoff = to_micros(utcnow() - older_than)
        sql = f"""DELETE FROM journal WHERE seq IN (SELECT seq FROM journal
            WHERE state IN {_FINISHED} AND updated_at < ? LIMIT {PRUNE_SLICE})"""

        def one_slice(conn: sqlite3.Connection) -> int:
            return conn.execute(sql, (cutoff,)).rowcount

        pruned = 0
        while True:
            gone = await self._db.run(one_slice, off_loop=True)
            pruned += gone
            if gone < PRUNE_SLICE:
                return pruned
