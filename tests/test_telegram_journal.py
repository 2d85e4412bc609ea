"""The Telegram adapter writes a message down before Telegram is told it was read: the poller
holds the getUpdates offset, and the webhook holds its 200, until the journal write returns;
a redelivered update runs once."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime, timedelta

import pytest

from chatbridge.core.store.memory_journal import MemoryJournal
from chatbridge.core.types import Inbound, JournalEntry, ReplyMessage, TurnState
from tests.fakes.telegram_harness import Harness, ScriptBackend

pytestmark = pytest.mark.timeout(30)


class GatedJournal:
    """A memory journal whose ``record`` waits until the test opens the gate."""

    def __init__(self) -> None:
        self.inner = MemoryJournal()
        self.gate = asyncio.Event()
        self.recording = asyncio.Event()

    async def record(self, inbound: Inbound, source: str) -> JournalEntry | None:
        self.recording.set()
        await self.gate.wait()
        return await self.inner.record(inbound, source)

    async def advance(self, bot: str, seq: int, state: TurnState) -> None:
        await self.inner.advance(bot, seq, state)

    async def answer(self, bot: str, seq: int, messages: Sequence[ReplyMessage]) -> None:
        await self.inner.answer(bot, seq, messages)

    async def unfinished(self, bot: str) -> list[JournalEntry]:
        return await self.inner.unfinished(bot)

    async def last_messages(self, bot: str, since: datetime) -> dict[str, str]:
        return await self.inner.last_messages(bot, since)

    async def prune(self, older_than: timedelta) -> int:
        return await self.inner.prune(older_than)


async def test_polling_confirms_an_update_only_once_it_is_journaled() -> None:
    journal = GatedJournal()
    async with Harness(ScriptBackend(), journal=journal) as h:
        user = h.user(901)
        chat = h.fb.private_chat(user)
        await h.fb.push_text(chat, user, "write me down")
        update_id = h.fb.updates[-1]["update_id"]
        await journal.recording.wait()
        # the poller keeps asking while the write is pending, but never past this update
        held = len(h.fake.calls_of("getUpdates"))
        await h.fake.wait_calls("getUpdates", held + 2, timeout=10)
        offsets = [c.params.get("offset") for c in h.fake.calls_of("getUpdates")]
        assert all(o is None or int(o) <= update_id for o in offsets), offsets
        assert h.fb.updates and h.fb.updates[0]["update_id"] == update_id  # still on Telegram
        journal.gate.set()
        await h.reply_in(chat["id"])
        await h.fake.wait_for(
            lambda c: c.method == "getUpdates" and int(c.params.get("offset") or 0) > update_id,
            timeout=10,
        )
        await h.settled(1)
        assert await journal.unfinished("sellers") == []


async def test_webhook_answers_200_only_after_the_journal_write() -> None:
    journal = GatedJournal()
    async with Harness(ScriptBackend(), journal=journal, mode="webhook", webhook_port=0) as h:
        user = h.user(902)
        chat = h.fb.private_chat(user)
        post = asyncio.create_task(h.fb.push_text(chat, user, "write me down"))
        await journal.recording.wait()
        assert not post.done()  # Telegram has no answer yet: it would redeliver on a crash
        assert h.fb.webhook_statuses == []
        journal.gate.set()
        await post
        assert h.fb.webhook_statuses == [200]
        await h.reply_in(chat["id"])


async def test_a_redelivered_webhook_update_runs_once() -> None:
    journal = GatedJournal()
    journal.gate.set()
    backend = ScriptBackend()
    async with Harness(backend, journal=journal, mode="webhook", webhook_port=0) as h:
        user = h.user(903)
        chat = h.fb.private_chat(user)
        update = {
            "update_id": 4242,
            "message": {"message_id": 7, "date": 0, "chat": chat, "from": user, "text": "once"},
        }
        assert await h.fb.post_webhook(update, h.fb.webhook_secret) == 200
        assert await h.fb.post_webhook(update, h.fb.webhook_secret) == 200  # e.g. a timeout
        await h.reply_in(chat["id"])
        await h.settled(1)
        assert [i.text for i in backend.inbounds] == ["once"]
