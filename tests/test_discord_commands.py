"""Discord slash commands end to end: real discord.py against the fake Discord API on loopback.

What is registered (every description from the catalogues, translated), and what /reset, /lang
and /admin do for users and admins.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from discord_harness import FAST_BUCKET, ScriptBackend, final_message, start_bot, stop_bot

from chatbridge.adapters.discord_adapter.commands import REFUSED
from chatbridge.core.locales.en import TEXTS as EN_TEXTS
from chatbridge.core.locales.pt_pt import TEXTS as PT_TEXTS
from chatbridge.core.store import SQLiteStore
from tests.fakes.discord_api import FakeDiscord

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord(message_bucket=FAST_BUCKET) as f:
        yield f


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = await SQLiteStore.open(str(tmp_path / "sessions.db"))
    try:
        yield s
    finally:
        await s.close()


def _described(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every command, subcommand and parameter of a registered command list, flattened."""
    out: list[dict[str, Any]] = []
    for entry in entries:
        out.append(entry)
        out.extend(_described(entry.get("options", [])))
    return out


async def test_every_slash_text_is_registered_in_portuguese(
    fake: FakeDiscord, store: SQLiteStore
) -> None:
    """Command, subcommand and parameter descriptions all come from the catalogue: Discord gets
    a pt-BR translation (read from pt-PT) of each, and none is left English-only."""
    adapter, engine = await start_bot(fake, ScriptBackend(), store)
    try:
        entries = _described(fake.commands[None])
        assert len(entries) == 14  # six commands, admin's three subcommands, five parameters
        english = {v: k for k, v in EN_TEXTS.items()}
        for entry in entries:
            key = english.get(entry["description"])
            assert key is not None, f"{entry['name']}: description not from the catalogue"
            assert entry["description_localizations"]["pt-BR"] == PT_TEXTS[key], entry["name"]
    finally:
        await stop_bot(adapter, engine)


async def test_admin_reset_by_slash_command(fake: FakeDiscord, store: SQLiteStore) -> None:
    backend = ScriptBackend()
    boss = fake.add_user("boss")
    manager = fake.add_user("manager", admin=True)  # has Manage Server
    gina = fake.add_user("gina")
    adapter, engine = await start_bot(fake, backend, store, admins=[boss.id])
    try:
        registered = {c["name"] for c in fake.commands[None]}
        assert registered == {"reset", "cancel", "lang", "condition", "listing", "admin"}
        # descriptions in each user's language (app_commands.Translator over the catalogue)
        reset = next(c for c in fake.commands[None] if c["name"] == "reset")
        assert reset["description_localizations"]["pt-BR"] == "Esquecer esta conversa e recomeçar"
        await fake.user_message(gina, "hello", mention=True)
        await final_message(fake, fake.channel_id)
        await fake.dm_message(gina, "hello again")
        await final_message(fake, fake.dm_channel_id(gina))
        assert await engine.count_sessions() == 2

        # refused for gina herself (no admin rights), ephemeral
        since = len(fake.calls)
        await fake.slash_command(gina, "admin", subcommand="reset", options={"user": gina})
        refusal = await fake.wait_call("POST", r"/interactions/.*/callback", since=since)
        assert refusal.body["type"] == 4 and refusal.body["data"]["flags"] == 64
        assert refusal.body["data"]["content"] == REFUSED
        assert await engine.count_sessions() == 2

        # a configured admin resets every conversation of gina
        since = len(fake.calls)
        await fake.slash_command(boss, "admin", subcommand="reset", options={"user": gina})
        done = await fake.wait_call("POST", r"/webhooks/\d+/[^/]+", since=since)
        assert "Reset 2 conversation(s)" in done.body["content"] and done.body["flags"] == 64
        assert await engine.count_sessions() == 0

        # Manage Server is enough for /admin sessions
        since = len(fake.calls)
        await fake.slash_command(manager, "admin", subcommand="sessions")
        listing = await fake.wait_call("POST", r"/webhooks/\d+/[^/]+", since=since)
        assert listing.body["content"].startswith("0 session(s)")  # the catalogue's words
    finally:
        await stop_bot(adapter, engine)


async def test_user_reset_command(fake: FakeDiscord, store: SQLiteStore) -> None:
    backend = ScriptBackend()
    adapter, engine = await start_bot(fake, backend, store)
    try:
        hank = fake.add_user("hank")
        await fake.user_message(hank, "hi", mention=True)
        await final_message(fake, fake.channel_id)
        since = len(fake.calls)
        await fake.slash_command(hank, "reset")
        done = await fake.wait_call("POST", r"/webhooks/\d+/[^/]+", since=since)
    finally:
        await stop_bot(adapter, engine)
    assert done.body["content"].startswith("Done")
    assert backend.closed == [backend.turns[0][0]]
    assert await store.count("shop") == 0


async def test_lang_command_starts_a_session_in_that_language(
    fake: FakeDiscord, store: SQLiteStore
) -> None:
    backend = ScriptBackend()
    adapter, engine = await start_bot(fake, backend, store)
    try:
        quinn = fake.add_user("quinn")
        since = len(fake.calls)
        await fake.slash_command(quinn, "lang", options={"language": "pt-PT"})
        done = await fake.wait_call("POST", r"/webhooks/\d+/[^/]+", since=since)
        await fake.user_message(quinn, "olá", mention=True)
        await final_message(fake, fake.channel_id)
    finally:
        await stop_bot(adapter, engine)
    assert done.body["content"].startswith("Language set to pt-PT")
    assert backend.languages == ["pt-PT"], "one session, opened in Portuguese"
    assert backend.turns[0][1].language == "pt-PT"
