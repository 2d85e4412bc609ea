"""The fake Telegram Bot API server, driven by a plain python-telegram-bot ``Bot``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup
from telegram.error import BadRequest, Conflict, RetryAfter

from chatbridge.core.secrets import register_secret
from tests.fakes.telegram_api import FakeTelegram
from tests.fakes.telegram_html import parse_html

TOKEN = "4242:FAKE-token-for-tests"
# These tests drive the fake with a plain PTB Bot, outside the adapter that would register it.
register_secret(TOKEN)


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    server = FakeTelegram(interval=0.3, chat_burst=1)
    await server.start()
    server.add_bot(TOKEN, "fake_bot")
    yield server
    await server.stop()


@pytest.fixture
async def bot(fake: FakeTelegram) -> AsyncIterator[Bot]:
    async with Bot(TOKEN, base_url=f"{fake.url}/bot", base_file_url=f"{fake.url}/file/bot") as b:
        yield b


async def test_get_me_and_updates(fake: FakeTelegram, bot: Bot) -> None:
    assert bot.username == "fake_bot"
    fb = fake.bots[TOKEN]
    user = fb.make_user(7, "Ana")
    chat = fb.private_chat(user)
    await fb.push_text(chat, user, "/start now")
    updates = await bot.get_updates(timeout=1)
    assert updates[0].message is not None
    assert updates[0].message.text == "/start now"
    assert updates[0].message.entities[0].type == "bot_command"
    # long poll: nothing pending, an update pushed later wakes it
    poll = asyncio.create_task(bot.get_updates(offset=updates[-1].update_id + 1, timeout=5))
    await asyncio.sleep(0.1)
    assert not poll.done()
    await fb.push_text(chat, user, "hello")
    got = await asyncio.wait_for(poll, 2)
    assert [u.message.text for u in got if u.message] == ["hello"]


async def test_limits(fake: FakeTelegram, bot: Bot) -> None:
    fb = fake.bots[TOKEN]
    chat = fb.group_chat(-100, "G")
    with pytest.raises(BadRequest, match=r"(?i)too long"):
        await bot.send_message(chat["id"], "x" * 4097)
    # 4096 visible characters fit even when the HTML source is longer
    msg = await bot.send_message(chat["id"], "<b>" + "y" * 4096 + "</b>", parse_mode="HTML")
    with pytest.raises(BadRequest, match=r"(?i)can.t parse entities"):
        await bot.send_message(chat["id"], "<b>open", parse_mode="HTML")
    with pytest.raises(BadRequest, match=r"(?i)can.t parse entities"):
        await bot.send_message(chat["id"], "<div>x</div>", parse_mode="HTML")
    bad = InlineKeyboardMarkup([[InlineKeyboardButton("a", callback_data="z" * 65)]])
    with pytest.raises(BadRequest, match=r"(?i)button_data_invalid"):
        await bot.send_message(chat["id"], "ok", reply_markup=bad)
    await asyncio.sleep(0.35)
    with pytest.raises(BadRequest, match=r"(?i)not modified"):
        await bot.edit_message_text(
            "<b>" + "y" * 4096 + "</b>", chat["id"], msg.message_id, parse_mode="HTML"
        )
    # the edit/send pace: a second call within the interval is a 429 with retry_after
    await bot.edit_message_text("changed", chat["id"], msg.message_id)
    with pytest.raises(RetryAfter) as err:
        await bot.send_message(chat["id"], "too fast")
    assert fake.count_429 == 1
    assert err.value.retry_after in (1, 1.0) or err.value.retry_after.total_seconds() == 1  # type: ignore[union-attr]
    assert fb.chat_messages(chat["id"])[0]["text"] == "changed"


async def test_drafts_only_in_private_chats(fake: FakeTelegram, bot: Bot) -> None:
    fb = fake.bots[TOKEN]
    user = fb.make_user(8)
    assert await bot.send_message_draft(fb.private_chat(user)["id"], 5, "partial")
    with pytest.raises(BadRequest):
        await bot.send_message_draft(fb.group_chat(-5)["id"], 5, "partial")


async def test_files_and_webhook_conflict(fake: FakeTelegram, bot: Bot) -> None:
    fb = fake.bots[TOKEN]
    user = fb.make_user(9)
    msg = await fb.push_photo(fb.private_chat(user), user, b"\xff\xd8\xffDATA", push=False)
    file = await bot.get_file(msg["photo"][-1]["file_id"])
    assert bytes(await file.download_as_bytearray()) == b"\xff\xd8\xffDATA"
    big = fb.add_file(b"x", size=25 * 1024 * 1024)
    with pytest.raises(BadRequest, match=r"(?i)too big"):
        await bot.get_file(big["file_id"])
    await bot.set_webhook("http://127.0.0.1:9/hook", secret_token="s3cret")
    with pytest.raises(Conflict):
        await bot.get_updates()
    await bot.delete_webhook()


async def test_injected_errors_and_wait_for(fake: FakeTelegram, bot: Bot) -> None:
    fb = fake.bots[TOKEN]
    chat = fb.group_chat(-7)
    fake.inject_error("sendMessage", retry_after=2, chat_id=chat["id"])
    with pytest.raises(RetryAfter):
        await bot.send_message(chat["id"], "first")
    await bot.send_message(chat["id"], "second")
    call = await fake.wait_for(lambda c: c.method == "sendMessage" and c.ok, timeout=1)
    assert call.params["text"] == "second"
    with pytest.raises(TimeoutError):
        await fake.wait_for(lambda c: c.method == "nothing", timeout=0.1)


def test_html_parser() -> None:
    text, entities = parse_html('a <b>b&amp;<i>c</i></b> <a href="http://x">l</a> &#128512;')
    assert text == "a b&c l 😀"
    kinds = {e["type"] for e in entities}
    assert kinds == {"bold", "italic", "text_link"}


# --- Telegram's flood limits, each with its own 429 -------------------------------------------
# Periods are stretched (a minute, not a second) so that a limit is reached by counting calls,
# whatever the machine's speed.


def _seconds(exc: RetryAfter) -> float:
    return float(exc._retry_after.total_seconds())  # the public int form is deprecated


async def _limited_fake(**limits: float) -> tuple[FakeTelegram, Bot]:
    server = await FakeTelegram(**limits).start()  # type: ignore[arg-type]
    server.add_bot(TOKEN, "fake_bot")
    bot = Bot(TOKEN, base_url=f"{server.url}/bot", base_file_url=f"{server.url}/file/bot")
    await bot.initialize()
    return server, bot


async def test_bot_wide_limit_spans_all_chats_and_skips_drafts() -> None:
    fake, bot = await _limited_fake(interval=0, bot_limit=4, bot_period=60)
    try:
        fb = fake.bots[TOKEN]
        users = [fb.private_chat(fb.make_user(100 + i)) for i in range(4)]
        for user in users[:3]:
            assert await bot.send_message_draft(user["id"], 1, "drafts are not counted")
            msg = await bot.send_message(user["id"], "one each")
        await bot.edit_message_text("an edit counts too", users[2]["id"], msg.message_id)
        with pytest.raises(RetryAfter) as err:  # a fifth message: the bot as a whole is over
            await bot.send_message(users[3]["id"], "too many")
        assert fake.limited["bot"] == 1 and fake.count_429 == 1
        assert 1 <= _seconds(err.value) <= 60
        assert await bot.send_message_draft(users[3]["id"], 1, "still allowed")
        assert fake.calls_of("sendMessage", users[3]["id"], ok=True) == []
    finally:
        await bot.shutdown()
        await fake.stop()


async def test_group_limit_is_twenty_a_minute() -> None:
    fake, bot = await _limited_fake(interval=0, bot_limit=0)
    try:
        fb = fake.bots[TOKEN]
        group, other = fb.group_chat(-100), fb.group_chat(-200)
        for i in range(20):
            await bot.send_message(group["id"], f"message {i}")
        with pytest.raises(RetryAfter) as err:
            await bot.send_message(group["id"], "the 21st within a minute")
        assert fake.limited == {"bot": 0, "group": 1, "chat": 0, "draft": 0}
        assert 1 <= _seconds(err.value) <= 60
        await bot.send_message(other["id"], "another group has its own minute")
        user = fb.private_chat(fb.make_user(300))
        for i in range(25):  # private chats have no per-minute limit
            await bot.send_message(user["id"], f"private {i}")
    finally:
        await bot.shutdown()
        await fake.stop()


async def test_chat_burst_then_one_per_interval() -> None:
    fake, bot = await _limited_fake(interval=30, chat_burst=3, bot_limit=0)
    try:
        fb = fake.bots[TOKEN]
        user = fb.private_chat(fb.make_user(400))
        for i in range(3):  # a short burst is tolerated
            await bot.send_message(user["id"], f"burst {i}")
        with pytest.raises(RetryAfter):
            await bot.send_message(user["id"], "past the burst")
        assert fake.limited["chat"] == 1
    finally:
        await bot.shutdown()
        await fake.stop()


async def test_media_group_counts_each_item_against_the_bot() -> None:
    from telegram import InputMediaPhoto

    fake, bot = await _limited_fake(interval=0, bot_limit=4, bot_period=60)
    try:
        fb = fake.bots[TOKEN]
        user = fb.private_chat(fb.make_user(500))
        photos = [InputMediaPhoto(b"\xff\xd8\xffJPEG") for _ in range(3)]
        assert len(await bot.send_media_group(user["id"], photos)) == 3
        with pytest.raises(RetryAfter):  # 3 + 2 > 4
            await bot.send_media_group(user["id"], photos[:2])
        await bot.send_message(user["id"], "the fourth message fits")
    finally:
        await bot.shutdown()
        await fake.stop()
