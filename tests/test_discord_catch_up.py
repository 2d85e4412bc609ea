"""A Discord bot catches up, on reconnecting, on what was posted while it was away: in
channels with a recent conversation, after the last message it recorded, through the same
filters as live messages (chatter not addressed to it stays unanswered), each message once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from discord_harness import ScriptBackend, final_message, start_bot, stop_bot

from chatbridge.core.store import SQLiteStore
from chatbridge.core.types import ReplyMessage
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


def said(fake: FakeDiscord, channel_id: int) -> list[str]:
    """What the bot answered in a channel, oldest first (each answer's final text)."""
    return [m["content"].removeprefix("You said: ") for m in fake.bot_messages(channel_id)]


async def test_pages_of_history_threads_and_dms_are_all_caught_up_in_order(
    store: SQLiteStore,
) -> None:
    backend = ScriptBackend(reply=lambda inbound: ReplyMessage(f"You said: {inbound.text}"))
    # the per-channel message bucket (5 per 5 s) would make 125 answers take minutes; the
    # global limit, which the history reads count against too, stays on
    async with FakeDiscord(message_bucket=None) as fake:
        ana, bo, cy = fake.add_user("ana"), fake.add_user("bo"), fake.add_user("cy")
        listed = {"channels": [fake.channel_id]}
        adapter, engine = await start_bot(fake, backend, store, journal=store.journal, **listed)
        try:
            await fake.user_message(ana, "before")
            await fake.dm_message(cy, "dm before")
            await fake.wait_until(lambda: len(fake.bot_messages(fake.dm_channel_id(cy))) == 1)
            await fake.wait_until(lambda: len(fake.bot_messages(fake.channel_id)) == 1)
        finally:
            await stop_bot(adapter, engine)
        # while the bot is away: more than a page in the channel, a thread opened under it,
        # and a DM
        missed = [f"m{i:03}" for i in range(130)]
        for text in missed[:70]:
            await fake.user_message(ana, text)
        thread = int(fake.new_thread(fake.channel_id, "a question", bo.id)["id"])
        for text in ("t0", "t1", "t2"):
            await fake.user_message(bo, text, channel_id=thread)
        for text in missed[70:]:
            await fake.user_message(ana, text)
        for text in ("dm1", "dm2"):
            await fake.dm_message(cy, text)

        adapter, engine = await start_bot(fake, backend, store, journal=store.journal, **listed)
        try:
            await fake.wait_until(lambda: len(backend.turns) == 2 + 130 + 3 + 2, timeout=25)
            await fake.wait_until(lambda: not engine.active_turns and not engine.queued_turns)
        finally:
            await stop_bot(adapter, engine)
    history_reads = fake.find_calls("GET", rf"/channels/{fake.channel_id}/messages")
    assert len(history_reads) >= 2  # 130 missed messages: more than one page
    assert said(fake, fake.channel_id) == ["before", *missed]
    assert said(fake, thread) == ["t0", "t1", "t2"]
    assert said(fake, fake.dm_channel_id(cy)) == ["dm before", "dm1", "dm2"]
    assert await store.journal.unfinished("shop") == []


async def test_catch_up_stops_at_its_limit_and_says_so(
    store: SQLiteStore, caplog: pytest.LogCaptureFixture
) -> None:
    backend = ScriptBackend(reply=lambda inbound: ReplyMessage(f"You said: {inbound.text}"))
    async with FakeDiscord(message_bucket=None) as fake:
        ana = fake.add_user("ana")
        opts = {"channels": [fake.channel_id], "catch_up_limit": 5}
        adapter, engine = await start_bot(fake, backend, store, journal=store.journal, **opts)
        try:
            await fake.user_message(ana, "before")
            await fake.wait_until(lambda: len(fake.bot_messages(fake.channel_id)) == 1)
        finally:
            await stop_bot(adapter, engine)
        for i in range(8):
            await fake.user_message(ana, f"m{i}")
        adapter, engine = await start_bot(fake, backend, store, journal=store.journal, **opts)
        try:
            await fake.wait_until(lambda: len(backend.turns) == 1 + 5)
            await fake.wait_until(lambda: not engine.active_turns and not engine.queued_turns)
            # a reconnection carries on after the last message taken
            await adapter.catch_up()
            await fake.wait_until(lambda: len(backend.turns) == 1 + 8)
            await fake.wait_until(lambda: not engine.active_turns and not engine.queued_turns)
        finally:
            await stop_bot(adapter, engine)
    assert said(fake, fake.channel_id) == ["before", *(f"m{i}" for i in range(8))]
    warnings = [r.getMessage() for r in caplog.records if "catch_up_limit" in r.getMessage()]
    assert len(warnings) == 1 and "more than 5 messages" in warnings[0]
