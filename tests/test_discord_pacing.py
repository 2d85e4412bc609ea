"""Discord's global limit: the fake enforces it with Discord's 429, the bot never provokes it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from discord_harness import FAST_BUCKET, ScriptBackend, start_bot, stop_bot

from chatbridge.core.store import SQLiteStore
from chatbridge.core.types import Button, ReplyMessage
from tests.fakes.discord_api import FakeDiscord


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = await SQLiteStore.open(tmp_path / "s.db")
    yield s
    await s.close()


async def test_global_limit_answers_discords_429_and_spares_interactions() -> None:
    # a stretched period: the limit is reached by counting, whatever the machine's speed
    async with (
        FakeDiscord(global_limit=2, global_period=60) as fake,
        aiohttp.ClientSession() as http,
    ):
        auth = {"Authorization": f"Bot {fake.token}"}
        for _ in range(2):
            async with http.get(f"{fake.api_base_url}/users/@me", headers=auth) as resp:
                assert resp.status == 200
        async with http.get(f"{fake.api_base_url}/users/@me", headers=auth) as resp:
            assert resp.status == 429
            assert resp.headers["X-RateLimit-Global"] == "true"
            assert resp.headers["X-RateLimit-Scope"] == "global"
            assert resp.headers["Via"] == "1.1 google"  # discord.py tells Cloudflare from Discord
            assert 1 <= int(resp.headers["Retry-After"]) <= 60
            assert resp.headers["Content-Type"] == "application/json"
            body = await resp.json()
        assert body["global"] is True and 0 < body["retry_after"] <= 60
        # interaction endpoints are not bound by the global limit
        url = f"{fake.api_base_url}/interactions/1/token/callback"
        async with http.post(url, json={"type": 1}) as resp:
            assert resp.status != 429
        assert fake.global_limited == 1


async def test_message_bucket_is_announced_and_enforced() -> None:
    async with FakeDiscord(global_limit=0, message_bucket=(2, 60.0)) as fake:
        async with aiohttp.ClientSession() as http:
            auth = {"Authorization": f"Bot {fake.token}"}
            url = f"{fake.api_base_url}/channels/{fake.channel_id}/messages"
            remaining = []
            for i in range(2):
                async with http.post(url, json={"content": f"m{i}"}, headers=auth) as resp:
                    assert resp.status == 200
                    remaining.append(resp.headers["X-RateLimit-Remaining"])
                    assert resp.headers["X-RateLimit-Bucket"]
            async with http.post(url, json={"content": "too many"}, headers=auth) as resp:
                assert resp.status == 429
                assert (await resp.json())["global"] is False
        assert remaining == ["1", "0"]


def _answer(text: str) -> ReplyMessage:
    return ReplyMessage(text, buttons=(Button("More", payload="more"),))


@pytest.mark.parametrize("paced", [True, False])
async def test_many_channels_at_once(store: SQLiteStore, paced: bool) -> None:
    """20 channels ask at once; the fake allows 8 requests a second for the whole bot."""
    text = " ".join(f"word{i}" for i in range(30))
    async with FakeDiscord(global_limit=8, message_bucket=FAST_BUCKET) as fake:
        channels = [fake.add_channel(fake.guild_id, f"c{i}") for i in range(20)]
        backend = ScriptBackend(token_delay=0.03)
        backend.reply = lambda inbound: _answer(text)
        adapter, engine = await start_bot(
            fake, backend, store, channels=channels, global_rate=8 if paced else 0
        )
        try:
            users = [fake.add_user(f"u{i}") for i in range(20)]
            for user, channel in zip(users, channels, strict=True):
                await fake.user_message(user, "news?", channel_id=channel)

            def all_final() -> bool:
                return all(
                    (msgs := fake.bot_messages(c)) and msgs[-1]["components"] for c in channels
                )

            if not paced:  # without the bot's pacing discord.py only learns it from 429s
                await fake.wait_until(lambda: fake.global_limited > 0, timeout=30)
                return
            await fake.wait_until(all_final, timeout=60)
        finally:
            await stop_bot(adapter, engine)
        for channel in channels:
            assert [m["content"] for m in fake.bot_messages(channel)] == [text]
        assert fake.rate_limited == 0  # none provoked: not global, not per channel


async def test_a_vanished_channel_refuses_delivery(store: SQLiteStore) -> None:
    async with FakeDiscord(message_bucket=FAST_BUCKET) as fake:
        channel = fake.add_channel(fake.guild_id, "closing-down")
        backend = ScriptBackend(token_delay=0.0)
        adapter, engine = await start_bot(fake, backend, store, channels=[channel])
        try:
            user = fake.add_user("late")
            # the channel is deleted while the bot answers: Discord says Unknown Channel
            await fake.user_message(user, "still open?", channel_id=channel)
            del fake.channels[channel]
            await fake.wait_until(lambda: adapter.refused >= 1, timeout=10)
            await engine.aclose(2.0)
        finally:
            await stop_bot(adapter, engine)
        attempts = fake.find_calls("POST", rf"/channels/{channel}/messages")
        assert attempts and all(c.status == 404 for c in attempts)
        assert len(attempts) <= 3  # the answer, the failure notice: never retried for an hour


async def test_a_message_deleted_mid_stream_does_not_lose_the_answer(store: SQLiteStore) -> None:
    text = " ".join(f"word{i}" for i in range(30))
    async with FakeDiscord(message_bucket=FAST_BUCKET) as fake:
        backend = ScriptBackend(token_delay=0.05)
        backend.reply = lambda inbound: _answer(text)
        adapter, engine = await start_bot(fake, backend, store)
        try:
            user = fake.add_user("mod")
            await fake.user_message(user, "tell me", mention=True)
            await fake.wait_until(lambda: bool(fake.bot_messages(fake.channel_id)), timeout=10)
            first = fake.bot_messages(fake.channel_id)[0]
            del fake.messages[int(first["id"])]  # a moderator deletes the streaming answer

            def answered() -> bool:
                msgs = fake.bot_messages(fake.channel_id)
                return bool(msgs and msgs[-1]["components"])

            await fake.wait_until(answered, timeout=15)
        finally:
            await stop_bot(adapter, engine)
        assert [m["content"] for m in fake.bot_messages(fake.channel_id)] == [text]
        unknown = [c for c in fake.calls if c.status == 404]
        assert unknown and all(c.method == "PATCH" for c in unknown)
