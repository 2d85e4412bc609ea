"""Real backends behind the Discord adapter: ShopAI (emulator, both protocols) and LoopOS."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from discord_harness import final_message, markdown_of, start_bot, stop_bot

from chatbridge.core.backends.loopos import LoopOSBackend, LoopOSSettings
from chatbridge.core.backends.shopai import ShopAIBackend, ShopAISettings
from chatbridge.core.store.memory import MemoryStore
from chatbridge.emulators.loopos import LoopOSEmulator
from chatbridge.emulators.shopai import ShopAIEmulator, start_shopai_emulator
from chatbridge.emulators.shopai_catalog import compose_answer
from tests.fakes.discord_api import FakeDiscord

pytestmark = pytest.mark.timeout(30)


def components(message: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for row in message["components"] for c in row["components"]]


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as f:
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
    settings = ShopAISettings.model_validate(
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


async def test_loopos_bot_on_discord(
    fake: FakeDiscord, store: MemoryStore, loopos: LoopOSEmulator
) -> None:
    settings = LoopOSSettings.model_validate(
        {
            "base_url": loopos.url,
            "core_base_url": "https://core.example/",
            "submission_base_url": "https://submission.example/",
            "context": "Circular economy marketplace",
            "language": "EN",
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
