"""A Discord bot configured as operators do (TOML keys -> App), against the fake Discord and
the ShopAI emulator: the options reach the adapter, and a shutdown mid-answer loses nothing."""

from __future__ import annotations

import tomllib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from discord_harness import FAST_BUCKET, final_message, markdown_of

from chatbridge.adapters.discord_adapter import DiscordAdapter
from chatbridge.bots.config import parse_config
from chatbridge.bots.runner import App
from chatbridge.emulators.shopai import ShopAIEmulator, start_shopai_emulator
from chatbridge.emulators.shopai_catalog import compose_answer
from tests.fakes.discord_api import FakeDiscord

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def shopai() -> AsyncIterator[ShopAIEmulator]:
    emulator = await start_shopai_emulator(version="v0.2", token_delay=0.01)
    try:
        yield emulator
    finally:
        await emulator.stop()


def config_text(fake: FakeDiscord, shopai: ShopAIEmulator, db: Path) -> str:
    return f"""
[store]
url = "sqlite:///{db}"

[backends.shop]
type = "shopai"
base_url = "{shopai.url}"
license_key = "${{SHOPAI_LICENSE_KEY}}"

[[bots]]
name = "shoppers"
platform = "discord"
backend = "shop"
token = "${{DISCORD_BOT_TOKEN}}"
api_base_url = "{fake.api_base_url}"
gateway_url = "{fake.gateway_url}"
channels = [{fake.channel_id}]
stream_interval = 0.05
guild_ready_timeout = 0.05
"""


async def test_configured_discord_bot_answers_and_shuts_down_cleanly(
    shopai: ShopAIEmulator, tmp_path: Path
) -> None:
    async with FakeDiscord(message_bucket=FAST_BUCKET) as fake:
        env = {"SHOPAI_LICENSE_KEY": "test-license", "DISCORD_BOT_TOKEN": fake.token}
        data = tomllib.loads(config_text(fake, shopai, tmp_path / "s.db"))
        app = App(config=parse_config(data, "bots.toml", env))
        await app.start()
        stopped = False
        try:
            adapter = app.adapters[0]
            assert isinstance(adapter, DiscordAdapter)
            await adapter.wait_ready(5)
            assert adapter.connected
            sam = fake.add_user("sam")
            # a listed channel: no mention needed
            await fake.user_message(sam, "I need headphones for music")
            first = await final_message(fake, fake.channel_id)
            assert first["content"] == markdown_of(compose_answer("I need headphones for music"))
            # the platform calls reached the process metrics (counted from discord.py's HTTP)
            sent = app.metrics.value(
                "chatbridge_messages_sent_total", bot="shoppers", platform="discord"
            )
            edited = app.metrics.value(
                "chatbridge_messages_edited_total", bot="shoppers", platform="discord"
            )
            assert sent == 1 and edited is not None and edited >= 1
            # a second question, and the process stops while its answer streams
            shopai.token_delay = 0.02
            await fake.user_message(sam, "and a laptop for work")
            await fake.wait_until(lambda: len(fake.bot_messages(fake.channel_id)) == 2)
            await app.stop()
            stopped = True
            assert not adapter.connected
        finally:
            if not stopped:
                await app.stop()
        second = fake.bot_messages(fake.channel_id)[1]
        # the answer was completed (components arrive with the final edit), not cut off
        assert second["components"], second["content"]
        assert second["content"] == markdown_of(compose_answer("and a laptop for work"))
