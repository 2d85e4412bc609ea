"""A Discord bot catches up, on reconnecting, on what was posted while it was away: in
channels with a recent conversation, after the last message it recorded, through the same
filters as live messages (chatter not addressed to it stays unanswered), each message once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from discord_harness import ScriptBackend, final_message, start_bot, stop_bot

from chatbridge.core.store import SQLiteStore
from tests.fakes.discord_api import FakeDiscord

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = await SQLiteStore.open(tmp_path / "journal.db")
    try:
        yield s
    finally:
        await s.close()


async def test_missed_messages_are_caught_up_once_and_filtered(store: SQLiteStore) -> None:
    backend = ScriptBackend()
    async with FakeDiscord() as fake:
        ana, bo = fake.add_user("ana"), fake.add_user("bo")
        adapter, engine = await start_bot(fake, backend, store, journal=store.journal)
        try:
            await fake.user_message(ana, "before the outage", mention=True)
            await final_message(fake, fake.channel_id)
        finally:
            await stop_bot(adapter, engine)
        # while the bot is away
        await fake.user_message(bo, "just chatting, not for the bot")
        await fake.user_message(ana, "while you were away", mention=True)
        await fake.user_message(bo, "me too", mention=True)
        await fake.user_message(ana, "a quiet channel", channel_id=fake.other_channel_id)

        adapter, engine = await start_bot(fake, backend, store, journal=store.journal)
        try:
            await fake.wait_until(lambda: len(backend.turns) == 3, timeout=10)
            await fake.wait_until(lambda: not engine.active_turns and not engine.queued_turns)
            await adapter.catch_up()  # again, as on a reconnection: nothing new to take
        finally:
            await stop_bot(adapter, engine)
    assert [t[1].text for t in backend.turns] == [
        "before the outage",
        "while you were away",
        "me too",
    ]
    assert await store.journal.unfinished("shop") == []
