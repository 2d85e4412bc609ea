"""The delivery journal in dictionaries: for tests and the demo. Nothing persists."""

from __future__ import annotations

import builtins
import dataclasses
from collections.abc import Sequence
from datetime import datetime, timedelta

from chatbridge.core.store._common import as_utc, utcnow
from chatbridge.core.types import Inbound, JournalEntry, ReplyMessage, TurnState


class MemoryJournal:
    """``core.protocols.Journal`` in memory (one event loop; no method awaits mid-update)."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, int], JournalEntry] = {}
        self._sources: dict[tuple[str, str], int] = {}
        self._seq = 0
        self._closed = False

    def _check(self) -> None:
        if self._closed:
            raise RuntimeError("journal is closed")

    async def record(self, inbound: Inbound, source: str) -> JournalEntry | None:
        self._check()
        bot = inbound.key.bot
        if (bot, source) in self._sources:
            return None
        self._seq += 1
        now = utcnow()
        entry = JournalEntry(
            seq=self._seq,
            source=source,
            inbound=inbound,
            state=TurnState.RECEIVED,
            received_at=now,
            updated_at=now,
        )
        self._entries[(bot, entry.seq)] = entry
        self._sources[(bot, source)] = entry.seq
        return entry

    def _update(self, bot: str, seq: int, **changes: object) -> None:
        entry = self._entries.get((bot, seq))
        if entry is not None:
            self._entries[(bot, seq)] = dataclasses.replace(
                entry,
                updated_at=utcnow(),
                **changes,  # type: ignore[arg-type]
            )

    async def advance(self, bot: str, seq: int, state: TurnState) -> None:
        self._check()
        self._update(bot, seq, state=state)

    async def answer(self, bot: str, seq: int, messages: Sequence[ReplyMessage]) -> None:
        self._check()
        self._update(bot, seq, state=TurnState.ANSWERED, answer=tuple(messages))

    async def unfinished(self, bot: str) -> builtins.list[JournalEntry]:
        self._check()
        open_ = [e for (b, _), e in self._entries.items() if b == bot and not e.state.finished]
        return sorted(open_, key=lambda e: e.seq)

    async def last_messages(self, bot: str, since: datetime) -> dict[str, str]:
        self._check()
        cutoff = as_utc(since)
        latest: dict[str, JournalEntry] = {}
        for (b, _), e in sorted(self._entries.items(), key=lambda item: item[0][1]):
            if b == bot and e.received_at >= cutoff and e.inbound.message_id is not None:
                latest[e.key.chat_id] = e
        return {chat: e.inbound.message_id or "" for chat, e in latest.items()}

    async def prune(self, older_than: timedelta) -> int:
        self._check()
        cutoff = utcnow() - older_than
        doomed = [k for k, e in self._entries.items() if e.state.finished and e.updated_at < cutoff]
        for bot, seq in doomed:
            entry = self._entries.pop((bot, seq))
            self._sources.pop((bot, entry.source), None)
        return len(doomed)

    async def close(self) -> None:
        self._closed = True
