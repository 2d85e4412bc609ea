"""A Telegram bot configured as operators do (TOML -> App), through the real PTB stack against
the fake Bot API and the ShopAI emulator: metrics count the platform calls (429s included),
and a turn cut by a shutdown mid-answer is answered by the next start."""

from __future__ import annotations

import tomllib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from prometheus_text import sample

from chatbridge.bots.config import parse_config
from chatbridge.bots.runner import App
from chatbridge.emulators.shopai import ShopAIEmulator, start_shopai_emulator
from tests.fakes.telegram_api import FakeTelegram

pytestmark = pytest.mark.timeout(40)

TOKEN = "777001:AAH-secret-test-token-0123456789abcdef"  # listed in conftest's canaries


@pytest.fixture
async def shopai() -> AsyncIterator[ShopAIEmulator]:
    emulator = await start_shopai_emulator(version="v0.1", token_delay=0.03)
    try:
        yield emulator
    finally:
        await emulator.stop()


def config(fake: FakeTelegram, shopai: ShopAIEmulator, db: Path, grace: float = 5) -> App:
    text = f"""
[store]
url = "sqlite:///{db}"

[backends.shop]
type = "shopai"
base_url = "{shopai.url}"
license_key = "${{SHOPAI_LICENSE_KEY}}"
protocol = "auto"

[[bots]]
name = "shoppers"
platform = "telegram"
backend = "shop"
token = "${{TELEGRAM_BOT_TOKEN}}"
api_base_url = "{fake.url}/bot"
poll_timeout = 1
admins = [9001]

[http]
listen = "127.0.0.1:0"

[limits]
shutdown_grace = {grace}
"""
    env = {"SHOPAI_LICENSE_KEY": "test-license", "TELEGRAM_BOT_TOKEN": TOKEN}
    return App(config=parse_config(tomllib.loads(text), "bots.toml", env))


async def test_metrics_count_sends_edits_and_429s(shopai: ShopAIEmulator, tmp_path: Path) -> None:
    async with FakeTelegram(interval=1.0) as fake:
        fb = fake.add_bot(TOKEN, "shop_bot")
        app = config(fake, shopai, tmp_path / "s.db")
        await app.start()
        try:
            assert app.http is not None
            user = fb.make_user(500, "Sam")
            group = fb.group_chat(-500, "Shoppers")
            # the first edit of the streamed answer is refused once with a 429
            fake.inject_error("editMessageText", chat_id=-500, retry_after=1)
            await fb.push_text(group, user, "@shop_bot I need headphones for music")
            await fake.wait_calls("editMessageText", 1, chat_id=-500, timeout=15)
            await app.engines["shoppers"].aclose(grace=15)  # the answer is complete
            async with httpx.AsyncClient(base_url=app.http.url) as http:
                body = (await http.get("/metrics")).text
                ready = (await http.get("/readyz")).json()
            labels = {"bot": "shoppers", "platform": "telegram"}
            assert sample(body, "chatbridge_messages_sent_total", **labels) == 1
            assert (sample(body, "chatbridge_messages_edited_total", **labels) or 0) >= 1
            assert sample(body, "chatbridge_platform_rate_limited_total", **labels) == 1
            assert sample(body, "chatbridge_turns_total", bot="shoppers", outcome="ok") == 1
            # the shopper's ShopAI connection stays open (idle_timeout) and is counted
            assert sample(body, "chatbridge_backend_connections", backend="shop") == 1
            assert ready["checks"] == {"store": True, "bot:shoppers": True}
        finally:
            await app.stop()


async def test_shutdown_mid_answer_leaves_the_turn_to_the_next_start(
    shopai: ShopAIEmulator, tmp_path: Path
) -> None:
    async with FakeTelegram(interval=1.0) as fake:
        fb = fake.add_bot(TOKEN, "shop_bot")
        app = config(fake, shopai, tmp_path / "s.db", grace=0.3)
        await app.start()
        shopai.token_delay = 0.5  # an answer far longer than the grace
        user = fb.make_user(501, "Ana")
        chat = fb.private_chat(user)
        await fb.push_text(chat, user, "I need running shoes")
        await fake.wait_for(lambda c: c.method == "sendMessageDraft" and c.ok, timeout=10)
        await app.stop()
        # cut after the grace: no notice, the journal keeps the turn as it was...
        assert not fake.calls_of("sendMessage", 501, ok=True)
        shopai.token_delay = 0.01
        app = config(fake, shopai, tmp_path / "s.db", grace=0.3)
        await app.start()
        try:
            # ...and the next start answers it (ShopAI's history, or the message sent again)
            answer = await fake.wait_for(
                lambda c: c.method == "sendMessage" and c.ok and c.chat_id == 501, timeout=20
            )
        finally:
            await app.stop()
        assert "could not be answered" not in str(answer.params.get("text", ""))
