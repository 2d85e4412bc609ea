"""The delivery journal in the SQLite file of :class:`~core.store.sqlite.SQLiteStore`.

It shares the store's connection and lock (one writer thread for the whole file), so a turn's
journal writes queue with session writes in one FIFO and never contend for SQLite's lock.
Writes are grouped: those that arrive while a transaction runs share the next one (see
``_GroupCommit``). In WAL mode with ``synchronous = NORMAL`` a commit survives a crash of the
process (only an OS crash or power loss may lose the last ones); a write's ``await`` returns
after its commit.
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Sequence
from dataclasses import dataclass
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
    from chatbridge.core.store.sqlite import SQLiteStore

_OPEN = "('received', 'sent_to_backend', 'answered')"
_FINISHED = "('delivered', 'refused', 'failed_notified')"
_COLUMNS = "seq, source, inbound, state, answer, received_at, updated_at"


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


@dataclass(eq=False)
class _Write:
    sql: str
    params: Sequence[Any]
    fetch: bool
    done: asyncio.Future[Any]


class _GroupCommit:
    """Writes that arrive while a transaction runs go together in the next one: one commit
    and one trip to SQLite's worker thread for all the turns waiting, instead of one each
    (a burst of turns otherwise queues up write by write on the store's one connection)."""

    def __init__(self, store: SQLiteStore) -> None:
        self._store = store
        self._queue: list[_Write] = []
        self._flusher: asyncio.Task[None] | None = None
        self._writing = False  # a write is going alone (see run)

    async def run(self, sql: str, params: Sequence[Any], *, fetch: bool = False) -> Any:
        if not self._writing and (self._flusher is None or self._flusher.done()):
            # nobody is writing: this write goes alone, at once (no task, no batch)
            self._writing = True
            try:
                if fetch:
                    return await self._store._fetch(sql, params)
                return await self._store._write(sql, params)
            finally:
                self._writing = False
                self._start_flusher()
        write = _Write(sql, params, fetch, asyncio.get_running_loop().create_future())
        self._queue.append(write)
        self._start_flusher()
        return await write.done

    def _start_flusher(self) -> None:
        if self._queue and not self._writing and (self._flusher is None or self._flusher.done()):
            self._flusher = asyncio.create_task(self._flush())

    async def _flush(self) -> None:
        while self._queue:
            writes, self._queue = self._queue, []
            try:
                results = await self._store._batch([(w.sql, w.params, w.fetch) for w in writes])
            except Exception:
                # one bad write must not fail the others: apply them one by one
                for w in writes:
                    await self._alone(w)
                continue
            for w, result in zip(writes, results, strict=True):
                if not w.done.done():
                    w.done.set_result(result)

    async def _alone(self, w: _Write) -> None:
        try:
            (result,) = await self._store._batch([(w.sql, w.params, w.fetch)])
        except Exception as exc:
            if not w.done.done():
                w.done.set_exception(exc)
        else:
            if not w.done.done():
                w.done.set_result(result)


class SQLiteJournal:
    """``core.protocols.Journal`` on the ``journal`` table (schema migration 2)."""

    def __init__(self, store: SQLiteStore) -> None:
        self._store = store
        self._writes = _GroupCommit(store)

    async def record(self, inbound: Inbound, source: str) -> JournalEntry | None:
        now = to_micros(utcnow())
        payload = dump_inbound(inbound)
        rows = await self._writes.run(
            """INSERT INTO journal (bot, source, chat_id, message_id, inbound, state,
                received_at, updated_at) VALUES (?, ?, ?, ?, ?, 'received', ?, ?)
            ON CONFLICT (bot, source) DO NOTHING RETURNING seq""",
            (inbound.key.bot, source, inbound.key.chat_id, inbound.message_id, payload, now, now),
            fetch=True,
        )
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
        await self._writes.run(
            "UPDATE journal SET state = ?, updated_at = ? WHERE seq = ? AND bot = ?",
            (state.value, to_micros(utcnow()), seq, bot),
        )

    async def answer(self, bot: str, seq: int, messages: Sequence[ReplyMessage]) -> None:
        await self._writes.run(
            "UPDATE journal SET state = 'answered', answer = ?, updated_at = ? "
            "WHERE seq = ? AND bot = ?",
            (dump_answer(messages), to_micros(utcnow()), seq, bot),
        )

    async def unfinished(self, bot: str) -> builtins.list[JournalEntry]:
        rows = await self._store._fetch(
            f"SELECT {_COLUMNS} FROM journal WHERE bot = ? AND state IN {_OPEN} ORDER BY seq",
            (bot,),
        )
        return [_entry(row) for row in rows]

    async def last_messages(self, bot: str, since: datetime) -> dict[str, str]:
        # SQLite's bare-column rule: with MAX(seq), message_id comes from that same row.
        rows = await self._store._fetch(
            """SELECT chat_id, message_id, MAX(seq) FROM journal
            WHERE bot = ? AND received_at >= ? AND message_id IS NOT NULL GROUP BY chat_id""",
            (bot, to_micros(since)),
        )
        return {str(row[0]): str(row[1]) for row in rows}

    async def prune(self, older_than: timedelta) -> int:
        cutoff = to_micros(utcnow() - older_than)
        return await self._store._write(
            f"DELETE FROM journal WHERE state IN {_FINISHED} AND updated_at < ?", (cutoff,)
        )
