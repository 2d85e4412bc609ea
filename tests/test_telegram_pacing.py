"""Telegram delivery against the strict fake: zero 429s provoked, refusals and outages."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest
from telegram import Bot

from chatbridge.adapters.telegram.api import Target, TelegramOps, telegram_pacer
from chatbridge.adapters.telegram.options import TelegramOptions
from chatbridge.adapters.telegram.stats import Stats
from chatbridge.adapters.telegram.surface import TelegramReply
from chatbridge.core.errors import DeliveryRefused
from chatbridge.core.secrets import register_secret
from chatbridge.core.types import ReplyMessage
from tests.fakes.telegram_api import FakeBot, FakeTelegram
from tests.fakes.telegram_harness import BOT_USERNAME, Harness, ScriptBackend, answer

TOKEN = "4343:PACING-token-for-tests"
register_secret(TOKEN)


@contextlib.asynccontextmanager
async def served() -> AsyncIterator[tuple[FakeTelegram, FakeBot, Bot]]:
    async with FakeTelegram() as fake:
        fb = fake.add_bot(TOKEN, "pacing_bot")
        async with Bot(TOKEN, base_url=f"{fake.url}/bot") as bot:
            yield fake, fb, bot


async def _reply(fake: FakeTelegram, bot: Bot, target: Target) -> tuple[TelegramReply, Stats]:
    stats = Stats()
    ops = TelegramOps(bot, telegram_pacer(TelegramOptions()), stats, deadline=60)
    return TelegramReply(ops, target, interval=1.0, use_drafts=True, choose_hint="Choose:"), stats


async def test_a_blocked_bot_refuses_delivery_at_once() -> None:
    async with served() as (fake, fb, bot):
        chat = fb.private_chat(fb.make_user(11))
        fake.inject_error(
            "sendMessage",
            status=403,
            retry_after=None,
            description="Forbidden: bot was blocked by the user",
            times=10,
        )
        reply, stats = await _reply(fake, bot, Target(chat["id"], private=True))
        with pytest.raises(DeliveryRefused):
            await reply.finish([ReplyMessage("the answer")])
        assert stats.refused == 1
        assert len(fake.calls_of("sendMessage")) == 1  # not retried: it cannot help


async def test_a_vanished_chat_refuses_delivery() -> None:
    async with served() as (fake, _fb, bot):
        reply, stats = await _reply(fake, bot, Target(-424242))  # a chat the fake never saw
        with pytest.raises(DeliveryRefused):
            await reply.finish([ReplyMessage("the answer")])
        assert stats.refused == 1


async def test_a_final_answer_outlasts_an_outage_and_a_429() -> None:
    async with served() as (fake, fb, bot):
        chat = fb.private_chat(fb.make_user(12))
        fake.inject_error("sendMessage", status=502, retry_after=None, description="Bad Gateway")
        fake.inject_error("sendMessage", retry_after=1)
        reply, stats = await _reply(fake, bot, Target(chat["id"], private=True))
        await reply.finish([ReplyMessage("the answer")])
        assert [m["text"] for m in fb.chat_messages(chat["id"])] == ["the answer"]
        assert stats.network_errors == 1 and stats.rate_limited == 1
        assert [c.status for c in fake.calls_of("sendMessage")] == [502, 429, 200]


async def test_many_groups_at_once_provoke_no_429() -> None:
    """24 groups ask at once; the fake allows 8 messages a second for the whole bot."""
    text = " ".join(f"word{i}" for i in range(40))
    backend = ScriptBackend(answer(text, ["Buy"], tokens=20), token_delay=0.05)
    async with Harness(backend, fake_limits={"bot_limit": 8}, bot_rate=8, group_rate=20) as h:
        groups = [h.fb.group_chat(-5000 - i, f"G{i}") for i in range(24)]
        for i, group in enumerate(groups):
            await h.fb.push_text(group, h.user(500 + i), f"@{BOT_USERNAME} what is new?")
        await h.settled(turns=24, timeout=60)
        for group in groups:
            msgs = h.fb.chat_messages(group["id"])
            assert [m["text"] for m in msgs] == [text], group["id"]
            assert msgs[0]["reply_markup"]["inline_keyboard"][0][0]["text"] == "Buy"
        assert h.fake.count_429 == 0, h.fake.limited
        assert h.adapter.stats.rate_limited == 0


async def test_a_final_waiting_for_the_budget_shows_in_the_draft_meanwhile() -> None:
    """Five private chats, a bot allowed one message a second: the last finals wait seconds
    for their turn, and their drafts show the whole answer meanwhile."""
    text = "the whole answer, " * 5
    backend = ScriptBackend(answer(text.strip(), ["Ok"], tokens=3))
    async with Harness(backend, fake_limits={"bot_limit": 1}, bot_rate=1) as h:
        chats = [h.fb.private_chat(h.user(700 + i)) for i in range(5)]
        for chat in chats:
            await h.fb.push_text(chat, h.user(chat["id"]), "hello")
        await h.settled(turns=5, timeout=30)
        assert h.fake.count_429 == 0
        early = 0
        for chat in chats:
            final = h.fake.calls_of("sendMessage", chat["id"], ok=True)
            assert len(final) == 1 and final[0].params["text"] == text.strip()
            drafts = h.fake.calls_of("sendMessageDraft", chat["id"], ok=True)
            early += any(
                d.params.get("text") == text.strip() and d.time < final[0].time for d in drafts
            )
        assert early >= 2  # at least the last two waited past DRAFT_FIRST


async def test_an_answer_follows_a_group_upgraded_to_a_supergroup() -> None:
    text = " ".join(f"word{i}" for i in range(30))
    backend = ScriptBackend(answer(text, ["Buy"], tokens=15), token_delay=0.1)
    async with Harness(backend) as h:
        group = h.fb.group_chat(-777, "Old group")
        await h.fb.push_text(group, h.user(777), f"@{BOT_USERNAME} anything new?")
        await h.fake.wait_for(
            lambda c: c.method == "sendMessage" and c.ok and c.chat_id == -777, timeout=10
        )
        h.fb.migrate(-777, -1000777)  # mid-answer, the group becomes a supergroup
        await h.settled(turns=1, timeout=20)
        moved = h.fb.chat_messages(-1000777)
        assert [m["text"] for m in moved] == [text]
        assert moved[0]["reply_markup"]["inline_keyboard"][0][0]["text"] == "Buy"
        assert h.adapter.stats.refused == 0
