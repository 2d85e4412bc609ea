"""An in-process SessionStore: for tests and ``chatbridge demo --memory``. Nothing persists."""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from chatbridge.core.store._common import DEFAULT_BUTTON_TTL, as_utc, short_id_candidates, utcnow
from chatbridge.core.store.memory_journal import MemoryJournal
from chatbridge.core.types import ConversationKey, SessionRecord


class MemoryStore:
    """``core.protocols.SessionStore`` in dictionaries (single event loop, no locking needed:
    no method awaits between reading and writing its state)."""

    def __init__(self, *, button_ttl: timedelta = DEFAULT_BUTTON_TTL) -> None:
        self.button_ttl = button_ttl
        self._sessions: dict[ConversationKey, SessionRecord] = {}
        self._order: dict[ConversationKey, int] = {}  # insertion sequence: a stable tie-break
        self._seq = 0
        self._by_payload: dict[str, str] = {}
        self._by_short: dict[str, str] = {}
        self._last_used: dict[str, datetime] = {}
        self._closed = False
        self._journal = MemoryJournal()

    @property
    def journal(self) -> MemoryJournal:
        """The delivery journal (in memory too)."""
        return self._journal

    @classmethod
    async def open(cls, *, button_ttl: timedelta = DEFAULT_BUTTON_TTL) -> MemoryStore:
        return cls(button_ttl=button_ttl)

    def _check(self) -> None:
        if self._closed:
            raise RuntimeError("store is closed")

    async def get(self, key: ConversationKey) -> SessionRecord | None:
        self._check()
        return self._sessions.get(key)

    async def put(self, record: SessionRecord) -> None:
        self._check()
        record = replace(
            record,
            created_at=as_utc(record.created_at),
            last_active=as_utc(record.last_active),
        )
        if record.key not in self._sessions:
            self._seq += 1
            self._order[record.key] = self._seq
        self._sessions[record.key] = record

    async def put_new(self, record: SessionRecord, replacing: str | None = None) -> SessionRecord:
        self._check()
        current = self._sessions.get(record.key)
        if current is not None and current.session_ref != replacing:
            return current
        await self.put(record)
        return self._sessions[record.key]

    async def touch(self, key: ConversationKey) -> None:
        self._check()
        record = self._sessions.get(key)
        if record is not None:
            self._sessions[key] = replace(
                record, last_active=utcnow(), turn_count=record.turn_count + 1
            )

    async def delete(self, key: ConversationKey) -> bool:
        self._check()
        self._order.pop(key, None)
        return self._sessions.pop(key, None) is not None

    async def delete_all(self, bot: str | None = None) -> int:
        self._check()
        doomed = [k for k in self._sessions if bot is None or k.bot == bot]
        for key in doomed:
            del self._sessions[key]
            self._order.pop(key, None)
        return len(doomed)

    async def list(
        self, bot: str | None = None, user_id: str | None = None, limit: int = 50
    ) -> builtins.list[SessionRecord]:
        self._check()
        chosen = [
            r
            for r in self._sessions.values()
            if (bot is None or r.key.bot == bot) and (user_id is None or r.key.user_id == user_id)
        ]
        chosen.sort(
            key=lambda r: (r.last_active, r.created_at, self._order.get(r.key, 0)), reverse=True
        )
        return chosen[: max(0, limit)]

    async def count(self, bot: str | None = None) -> int:
        self._check()
        return sum(1 for k in self._sessions if bot is None or k.bot == bot)

    async def short_id(self, payload: str) -> str:
        self._check()
        now = utcnow()
        existing = self._by_payload.get(payload)
        if existing is not None:
            self._last_used[existing] = now
            return existing
        for candidate in short_id_candidates(payload):
            if candidate not in self._by_short:
                self._by_payload[payload] = candidate
                self._by_short[candidate] = payload
                self._last_used[candidate] = now
                return candidate
        raise RuntimeError("no free short id for a button payload")  # pragma: no cover

    async def short_ids(self, payloads: Sequence[str]) -> builtins.list[str]:
        return [await self.short_id(payload) for payload in payloads]

    async def resolve(self, short_id: str) -> str | None:
        self._check()
        return self._by_short.get(short_id)

    async def prune(self, older_than: timedelta | None = None) -> int:
        """Forget button ids not issued for ``older_than`` (default: the store's TTL)."""
        self._check()
        cutoff = utcnow() - (self.button_ttl if older_than is None else older_than)
        doomed = [s for s, used in self._last_used.items() if used < cutoff]
        for short in doomed:
            payload = self._by_short.pop(short)
            self._by_payload.pop(payload, None)
            del self._last_used[short]
        return len(doomed)

    async def ping(self) -> bool:
        return not self._closed

    async def close(self) -> None:
        self._closed = True
        await self._journal.close()
