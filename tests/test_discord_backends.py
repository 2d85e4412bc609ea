"""Real backends behind the Discord adapter (ShopAI on both protocols, LoopOS) and the console."""

from __future__ import annotations

import contextlib
import io
from collections.abc import AsyncIterator
from typing import Any

import pytest
from backend_contract import TINY_PNG
from discord_harness import FAST_BUCKET, final_message, markdown_of, start_bot, stop_bot

from chatbridge.adapters.console import ConsoleAdapter
from chatbridge.core.backends.loopos import LoopOSBackend, LoopOSSettings
from chatbridge.core.backends.shopai import ShopAIBackend, ShopAISettings
from chatbridge.core.engine import Engine
from chatbridge.core.store.memory import MemoryStore
from chatbridge.emulators.loopos import LoopOSEmulator
from chatbridge.emulators.shopai import ShopAIEmulator, start_shopai_emulator
from chatbridge.emulators.shopai_catalog import compose_answer, compose_entries
from tests.fakes.discord_api import FakeDiscord

pytestmark = pytest.mark.timeout(30)


def components(message: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for row in message["components"] for c in row["components"]]


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord(message_bucket=FAST_BUCKET) as f:
        yield f


@pytest.fixture
async def store() -> AsyncIterator[MemoryStore]:
    s = await MemoryStore.open()
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture(params=["v0.1", "v0.2"])
async def shopai(request: pytest.FixtureRequest) -> AsyncIterator[ShopAIEmulator]:
    emulator = await start_shopai_emulator(version=request.param, token_delay=0.004)
    try:
        yield emulator
    finally:
        await emulator.stop()


def shop_backend(emu: ShopAIEmulator) -> ShopAIBackend:
    settings = ShopAISettings.from_dict(
        {
            "base_url": emu.url,
            "license_key": "test-license",
            "heartbeat_interval": 0.5,
            "answer_timeout": 5.0,
            "reconnect_backoff": 0.02,
        }
    )
    return ShopAIBackend(settings, name="shop")


async def test_shopai_answer_streams_in_a_guild_channel_and_a_dm(
    fake: FakeDiscord, store: MemoryStore, shopai: ShopAIEmulator
) -> None:
    backend = shop_backend(shopai)
    adapter, engine = await start_bot(fake, backend, store, stream_interval=0.02)
    question = "I need a phone and a laptop"
    expected = markdown_of(compose_answer(question))
    try:
        olga = fake.add_user("olga")
        await fake.user_message(olga, question, mention=True)
        in_guild = await final_message(fake, fake.channel_id)
        await fake.dm_message(olga, question)
        in_dm = await final_message(fake, fake.dm_channel_id(olga))
    finally:
        await stop_bot(adapter, engine)
        await backend.aclose()
    for answer in (in_guild, in_dm):
        assert answer["content"] == expected
        assert "**" in answer["content"] and "](http" in answer["content"]
        links = [c for c in components(answer) if c["style"] == 5]
        assert links and all(c["url"].startswith("http") for c in links)
    edits = fake.find_calls("PATCH", rf"/channels/{fake.channel_id}/messages/\d+")
    assert len([e for e in edits if "content" in e.body]) >= 2, "streamed, not one shot"
    assert len(fake.bot_messages(fake.channel_id)) == 1
    keys = {store_key.chat_id for store_key in (r.key for r in await store.list("shop"))}
    assert keys == {str(fake.channel_id), str(fake.dm_channel_id(olga))}, "two sessions"


async def test_a_shopai_answer_in_several_entries_is_several_messages(
    fake: FakeDiscord, store: MemoryStore, shopai: ShopAIEmulator
) -> None:
    """The strict server answers a comparison in several AI entries: each is a message."""
    backend = shop_backend(shopai)
    adapter, engine = await start_bot(fake, backend, store, stream_interval=0.02)
    question = "compare a phone and a laptop"
    entries = [markdown_of(entry) for entry in compose_entries(question)]
    try:
        olga = fake.add_user("olga")
        await fake.dm_message(olga, question)
        dm = fake.dm_channel_id(olga)
        await fake.wait_until(
            lambda: [m["content"] for m in fake.bot_messages(dm)][-1:] == entries[-1:]
        )
    finally:
        await stop_bot(adapter, engine)
        await backend.aclose()
    assert [m["content"] for m in fake.bot_messages(dm)] == entries


async def test_loopos_bot_on_discord(
    fake: FakeDiscord, store: MemoryStore, loopos: LoopOSEmulator
) -> None:
    settings = LoopOSSettings.from_dict(
        {
            "base_url": loopos.url,
            "core_base_url": "https://core.example/",
            "submission_base_url": "https://submission.example/",
            "context": "Circular economy marketplace",
            "language": "en-US",  # a code the documents use (the strict server takes no other)
            "timeout": 5.0,
            "retry": {"attempts": 2, "base_delay": 0.01},
        }
    )
    backend = LoopOSBackend(settings, name="sellers-ai")
    adapter, engine = await start_bot(fake, backend, store, name="sellers")
    try:
        paul = fake.add_user("paul")
        await fake.dm_message(paul, "I want to sell an iPhone 12")
        dm = fake.dm_channel_id(paul)
        question = await final_message(fake, dm)
        buttons = [c for c in components(question) if c["style"] != 5]
        assert len(buttons) >= 2
        before = len(fake.bot_messages(dm))
        await fake.press_button(paul, question["id"], buttons[0]["custom_id"])
        await fake.wait_until(lambda: len(fake.bot_messages(dm)) > before)
        after = await final_message(fake, dm)
    finally:
        await stop_bot(adapter, engine)
        await backend.aclose()
    intro, first_question = (m["content"] for m in fake.bot_messages(dm)[:2])
    assert "iPhone 12" in intro and first_question == question["content"]
    # the pressed choice (e.g. "64 GB") moved the workflow on to its next question
    assert after["id"] != question["id"] and "condition" in after["content"]
    assert all(c.get("disabled") for c in components(fake.messages[int(question["id"])]))
    assert not [c for c in fake.calls if c.status >= 400]


async def test_condition_and_listing_slash_commands_with_loopos(
    fake: FakeDiscord, store: MemoryStore, loopos: LoopOSEmulator
) -> None:
    """The decision and listing services on Discord, as on Telegram (issue 11, item 10)."""
    settings = LoopOSSettings.from_dict(
        {
            "base_url": loopos.url,
            "core_base_url": "https://core.example/",
            "submission_base_url": "https://submission.example/",
            "timeout": 5.0,
        }
    )
    backend = LoopOSBackend(settings, name="sellers-ai")
    adapter, engine = await start_bot(fake, backend, store, name="sellers")
    followup = r"/webhooks/\d+/[^/]+"
    try:
        quinn = fake.add_user("quinn")
        since = len(fake.calls)
        await fake.slash_command(quinn, "condition", options={"item": "iPhone 12, like new"})
        graded = await fake.wait_call("POST", followup, since=since)
        since = len(fake.calls)
        photo = ("item.png", TINY_PNG, "image/png")
        await fake.slash_command(
            quinn, "listing", options={"photo": photo, "description": "iPhone 12 Pro, Apple"}
        )
        listed = await fake.wait_call("POST", followup, since=since)
    finally:
        await stop_bot(adapter, engine)
        await backend.aclose()
    assert graded.body["content"].startswith("Condition: Excellent"), graded.body
    decision = loopos.requests_to("/loopos_ai_decision")[0]
    assert decision["options"] == ["Excellent", "Good", "Fair", "Poor"]
    assert decision["item_context"] == "iPhone 12, like new"
    assert "Price: " in listed.body["content"], listed.body
    descriptor = loopos.requests_to("/loopos_ai_c2c_descriptor")[0]
    assert descriptor["images"][0].startswith("data:image/png;base64,")
    assert descriptor["agent_specific"]["user_description"] == "iPhone 12 Pro, Apple"


@contextlib.asynccontextmanager
async def _console_engine(loopos: LoopOSEmulator) -> AsyncIterator[Engine]:
    """An engine on the real LoopOS client against the emulator, for a console bot."""
    settings = LoopOSSettings.from_dict(
        {
            "base_url": loopos.url,
            "core_base_url": "https://core.example/",
            "submission_base_url": "https://submission.example/",
            "timeout": 5.0,
        }
    )
    backend = LoopOSBackend(settings)
    engine = Engine(
        bot="console", backend=backend, backend_name="loopos", store=await MemoryStore.open()
    )
    try:
        yield engine
    finally:
        await engine.aclose()
        await backend.aclose()


async def test_condition_and_listing_on_the_console(loopos: LoopOSEmulator, tmp_path: Any) -> None:
    out = io.StringIO()
    photo = tmp_path / "item.png"
    photo.write_bytes(TINY_PNG)
    async with _console_engine(loopos) as engine:
        console = ConsoleAdapter(name="console", engine=engine, stdin=io.StringIO(), stdout=out)
        await console.handle_line("/condition iPhone 12, like new")
        await console.handle_line(f"/listing {photo} iPhone 12 Pro, Apple")
        await console.handle_line("/listing")
    lines = out.getvalue().splitlines()
    assert lines[0] == "Condition: Excellent"
    assert any(line.startswith("Price: ") for line in lines)
    assert lines[-1].startswith("(!) Usage: /listing PATH TEXT")
    assert len(loopos.requests_to("/loopos_ai_c2c_descriptor")) == 1


async def test_the_console_gives_service_replies_in_its_users_language(
    loopos: LoopOSEmulator, tmp_path: Any
) -> None:
    out = io.StringIO()
    photo = tmp_path / "item.png"
    photo.write_bytes(TINY_PNG)
    async with _console_engine(loopos) as engine:
        console = ConsoleAdapter(
            name="console", engine=engine, stdin=io.StringIO(), stdout=out, language="pt-PT"
        )
        await console.handle_line("/condition iPhone 12, como novo")
        await console.handle_line(f"/listing {photo} iPhone 12 Pro; marca: Apple")
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("Estado: ")
    assert any(line.startswith("Preço: ") for line in lines)
