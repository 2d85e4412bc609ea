"""Crash tests: the real ``chatbridge run`` killed with SIGKILL mid-answer and started again.

Every user ends with an answer (ShopAI keeps answering with nobody connected; its history
gives the answer to the restarted bridge) or, for a LoopOS call that may have reached the
server, a plain-language notice to send the message again. Messages sent while the bridge was
down are answered after the restart: Telegram keeps unconfirmed updates, the webhook is retried
until it answers 200, and Discord's missed messages are read back from channel history.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from crash_harness import Bridge, eventually
from replica_harness import free_port

from chatbridge.core.backends.shopai.backend import visible_text
from chatbridge.core.texts import UserTexts
from chatbridge.emulators.loopos import LoopOSEmulator
from chatbridge.emulators.shopai import ShopAIEmulator, start_shopai_emulator
from chatbridge.emulators.shopai_catalog import compose_answer
from chatbridge.emulators.shopai_strict import ShopAIStrict
from tests.fakes.telegram_api import FakeTelegram

pytestmark = pytest.mark.timeout(120)

TOKEN = "777001:AAH-secret-test-token-0123456789abcdef"  # listed in conftest's canaries
ENV = {"SHOPAI_LICENSE_KEY": "test-license", "TELEGRAM_BOT_TOKEN": TOKEN}
QUESTIONS = [
    "I need headphones for music",
    "a laptop for work please",
    "looking for a phone",
    "any good headphones for running",
    "I want a laptop for gaming",
    "a cheap phone for my son",
]
RESTART_NOTICE = UserTexts().resend_after_restart
INTERRUPTED = UserTexts().interrupted


@pytest.fixture
async def shopai() -> AsyncIterator[ShopAIEmulator]:
    """A strict ShopAI server, except that it finishes an answer nobody waits for any more
    (the documents allow both; see ``strict_shopai``). ~40 tokens an answer at 0.08 s: a few
    seconds of streaming to be killed in."""
    emulator = await start_shopai_emulator(
        version="v0.1", token_delay=0.08, strict=ShopAIStrict(stop_on_disconnect=False)
    )
    try:
        yield emulator
    finally:
        await emulator.stop()


@pytest.fixture
async def strict_shopai() -> AsyncIterator[ShopAIEmulator]:
    """A ShopAI server that drops an answer when its client goes away mid-answer."""
    emulator = await start_shopai_emulator(version="v0.2", token_delay=0.08, strict=True)
    try:
        yield emulator
    finally:
        await emulator.stop()


def telegram_config(
    tmp_path: Path,
    fake: FakeTelegram,
    backend: str,
    *,
    webhook_port: int | None = None,
    grace: float = 2,
) -> Path:
    mode = (
        f'mode = "webhook"\nwebhook_port = {webhook_port}\n'
        if webhook_port is not None
        else "poll_timeout = 1\n"
    )
    path = tmp_path / "bridge.toml"
    path.write_text(
        f"""
[store]
url = "sqlite:///{tmp_path / "bridge.db"}"

{backend}

[[bots]]
name = "shoppers"
platform = "telegram"
backend = "ai"
token = "${{TELEGRAM_BOT_TOKEN}}"
api_base_url = "{fake.url}/bot"
file_base_url = "{fake.url}/file/bot"
use_drafts = false
{mode}
[limits]
shutdown_grace = {grace}
"""
    )
    return path


def shopai_backend(shopai: ShopAIEmulator) -> str:
    return f"""[backends.ai]
type = "shopai"
base_url = "{shopai.url}"
license_key = "${{SHOPAI_LICENSE_KEY}}"
"""


def loopos_backend(loopos: LoopOSEmulator) -> str:
    return f"""[backends.ai]
type = "loopos"
base_url = "{loopos.url}"
core_base_url = "https://core.example/"
submission_base_url = "https://submission.example/"
"""


def last_sentence(question: str) -> str:
    """The end of the complete answer, as the user reads it: proof the answer is whole."""
    return visible_text(compose_answer(question)).rsplit(". ", 1)[-1]


def answered(fake: FakeTelegram, token: str, chat_id: int, question: str) -> bool:
    texts = [m.get("text", "") for m in fake.bots[token].chat_messages(chat_id)]
    return any(last_sentence(question) in t for t in texts)


async def crash_and_restart_polling(tmp_path: Path, shopai: ShopAIEmulator) -> int:
    """Six shoppers ask, the bridge is killed mid-stream, two write again while it is down,
    it restarts: every question ends answered. Returns how many were killed mid-answer."""
    async with FakeTelegram() as fake:
        fb = fake.add_bot(TOKEN, "shop_bot")
        bridge = Bridge(telegram_config(tmp_path, fake, shopai_backend(shopai)), ENV, tmp_path)
        users = [fb.make_user(600 + i, f"U{i}") for i in range(len(QUESTIONS))]
        chats = [fb.private_chat(u) for u in users]
        await bridge.start()
        try:
            for chat, user, q in zip(chats, users, QUESTIONS, strict=True):
                await fb.push_text(chat, user, q)
            # mid-stream: every user sees the start of an answer, none has it whole
            await eventually(
                lambda: all(fb.chat_messages(c["id"]) for c in chats),
                timeout=30,
                what="every answer to start streaming",
                bridge=bridge,
            )
            unanswered = sum(
                not answered(fake, TOKEN, c["id"], q) for c, q in zip(chats, QUESTIONS, strict=True)
            )
            await bridge.kill()
            # while the bridge is down, two users write again: Telegram keeps the updates
            for i, q in enumerate(LATER):
                await fb.push_text(chats[i], users[i], q)
            await bridge.start()
            await eventually(
                lambda: (
                    all(
                        answered(fake, TOKEN, c["id"], q)
                        for c, q in zip(chats, QUESTIONS, strict=True)
                    )
                    and all(answered(fake, TOKEN, chats[i]["id"], q) for i, q in enumerate(LATER))
                ),
                timeout=60,
                what="every user's answers after the restart",
                bridge=bridge,
            )
        finally:
            await bridge.stop()
    return unanswered


LATER = ["and a phone for travel", "also headphones for the gym"]


async def test_telegram_polling_shopai_every_user_answered_after_sigkill(
    tmp_path: Path, shopai: ShopAIEmulator
) -> None:
    killed = await crash_and_restart_polling(tmp_path, shopai)
    assert killed == len(QUESTIONS)
    # the restarted bridge found the answers in ShopAI's history: nobody asked twice
    assert shopai.stats.messages == len(QUESTIONS) + len(LATER)


async def test_telegram_polling_strict_shopai_resends_dropped_answers(
    tmp_path: Path, strict_shopai: ShopAIEmulator
) -> None:
    killed = await crash_and_restart_polling(tmp_path, strict_shopai)
    # the server dropped the answers it was streaming at the kill: those were asked again
    # (an answer that completed between the last look and the kill is not)
    assert 0 < killed <= len(QUESTIONS)
    expected = len(QUESTIONS) + len(LATER)
    assert expected < strict_shopai.stats.messages <= expected + killed


async def test_telegram_loopos_call_in_flight_gets_the_restart_notice(
    tmp_path: Path, loopos: LoopOSEmulator
) -> None:
    async with FakeTelegram() as fake:
        fb = fake.add_bot(TOKEN, "sell_bot")
        bridge = Bridge(telegram_config(tmp_path, fake, loopos_backend(loopos)), ENV, tmp_path)
        users = [fb.make_user(700 + i, f"S{i}") for i in range(4)]
        chats = [fb.private_chat(u) for u in users]
        await bridge.start()
        try:
            loopos.faults.slow_seconds = 60  # every /chat call hangs: in flight at the kill
            for chat, user in zip(chats, users, strict=True):
                await fb.push_text(chat, user, "Quero vender um iPhone 12")
            # a second message queued behind the first: never sent to LoopOS
            await fb.push_text(chats[0], users[0], "Quero vender um iPhone 12")
            await eventually(
                lambda: loopos.in_flight == len(users),
                timeout=30,
                what="every /chat call to be in flight",
                bridge=bridge,
            )
            await bridge.kill()
            loopos.faults.slow_seconds = 0
            await bridge.start()

            def notified(chat_id: int) -> bool:
                return any(RESTART_NOTICE in m.get("text", "") for m in fb.chat_messages(chat_id))

            await eventually(
                lambda: all(notified(c["id"]) for c in chats),
                timeout=40,
                what="the restart notice in every chat",
                bridge=bridge,
            )
            # the queued message was never sent: it is answered normally after the notice

            def answered_after_notice() -> bool:
                texts = [m.get("text", "") for m in fb.chat_messages(chats[0]["id"])]
                notice = next(i for i, t in enumerate(texts) if RESTART_NOTICE in t)
                return any(t and RESTART_NOTICE not in t for t in texts[notice + 1 :])

            await eventually(
                answered_after_notice,
                timeout=30,
                what="the queued message's answer",
                bridge=bridge,
            )
        finally:
            await bridge.stop()
        # /chat is not idempotent: the calls in flight at the kill were never replayed
        assert len(loopos.requests_to("/chat")) == len(users) + 1


async def test_telegram_webhook_shopai_every_user_answered_after_sigkill(
    tmp_path: Path, shopai: ShopAIEmulator
) -> None:
    async with FakeTelegram() as fake:
        fb = fake.add_bot(TOKEN, "shop_bot")
        port = free_port()
        config = telegram_config(tmp_path, fake, shopai_backend(shopai), webhook_port=port)
        bridge = Bridge(config, ENV, tmp_path)
        users = [fb.make_user(800 + i, f"W{i}") for i in range(4)]
        chats = [fb.private_chat(u) for u in users]
        questions = QUESTIONS[: len(users)]
        await bridge.start()
        try:
            await eventually(
                lambda: fb.webhook_url is not None,
                timeout=20,
                what="the webhook to be registered",
                bridge=bridge,
            )
            for chat, user, q in zip(chats, users, questions, strict=True):
                await fb.push_text(chat, user, q)
            assert fb.webhook_statuses == [200] * len(users)  # 200 = written down
            await eventually(
                lambda: all(fb.chat_messages(c["id"]) for c in chats),
                timeout=30,
                what="every answer to start streaming",
                bridge=bridge,
            )
            await bridge.kill()
            # sent while the bridge is down: Telegram keeps retrying the webhook
            await fb.push_text(chats[0], users[0], "and a phone for travel")
            await bridge.start()
            await eventually(
                lambda: (
                    all(
                        answered(fake, TOKEN, c["id"], q)
                        for c, q in zip(chats, questions, strict=True)
                    )
                    and answered(fake, TOKEN, chats[0]["id"], "and a phone for travel")
                ),
                timeout=60,
                what="every user's answers after the restart",
                bridge=bridge,
            )
        finally:
            await bridge.stop()
        assert not fb.webhook_backlog
        assert shopai.stats.messages == len(users) + 1


async def test_discord_catches_up_on_messages_sent_while_down(
    tmp_path: Path, shopai: ShopAIEmulator
) -> None:
    from tests.fakes.discord_api import FakeDiscord

    async with FakeDiscord() as fake:
        config = tmp_path / "bridge.toml"
        config.write_text(
            f"""
[store]
url = "sqlite:///{tmp_path / "bridge.db"}"

{shopai_backend(shopai)}
[[bots]]
name = "shoppers"
platform = "discord"
backend = "ai"
token = "${{DISCORD_BOT_TOKEN}}"
api_base_url = "{fake.api_base_url}"
gateway_url = "{fake.gateway_url}"
channels = [{fake.channel_id}]
guild_ready_timeout = 0.05

[limits]
shutdown_grace = 2
"""
        )
        env = {"SHOPAI_LICENSE_KEY": "test-license", "DISCORD_BOT_TOKEN": fake.token}
        bridge = Bridge(config, env, tmp_path)
        ana, bo = fake.add_user("ana"), fake.add_user("bo")
        dm = fake.dm_channel_id(bo)

        def done(channel_id: int, question: str) -> bool:
            tail = last_sentence(question)
            return any(tail in m.get("content", "") for m in fake.bot_messages(channel_id))

        await bridge.start()
        try:
            await fake.wait_identified(1, timeout=20)
            await fake.user_message(ana, QUESTIONS[0])  # a listed channel: no mention needed
            await eventually(
                lambda: done(fake.channel_id, QUESTIONS[0]),
                timeout=30,
                what="the first answer",
                bridge=bridge,
            )
            await fake.dm_message(bo, QUESTIONS[1])
            await eventually(
                lambda: bool(fake.bot_messages(dm)),
                timeout=30,
                what="the DM answer to start streaming",
                bridge=bridge,
            )
            await bridge.kill()
            # posted while the bot is down: the gateway will never deliver these
            await fake.user_message(ana, QUESTIONS[2])
            await fake.dm_message(bo, QUESTIONS[3])
            await bridge.start()
            await eventually(
                lambda: (
                    done(dm, QUESTIONS[1])
                    and done(fake.channel_id, QUESTIONS[2])
                    and done(dm, QUESTIONS[3])
                ),
                timeout=60,
                what="the interrupted answer and the missed messages' answers",
                bridge=bridge,
            )
        finally:
            await bridge.stop()
        assert shopai.stats.messages == 4  # nothing asked twice


@pytest.fixture
async def slow_shopai() -> AsyncIterator[ShopAIEmulator]:
    """Answers of ~40 tokens 0.2 s apart: no first answer can end (and let the message queued
    behind it start) before the test's SIGTERM, and all end well within the grace."""
    emulator = await start_shopai_emulator(
        version="v0.1", token_delay=0.2, strict=ShopAIStrict(stop_on_disconnect=False)
    )
    try:
        yield emulator
    finally:
        await emulator.stop()


async def test_sigterm_finishes_running_turns_and_leaves_queued_ones_for_the_next_start(
    tmp_path: Path, slow_shopai: ShopAIEmulator
) -> None:
    """SIGTERM: the answers being streamed finish within the grace; the messages queued
    behind them are not started, stay in the journal, and the next start answers them. Nobody
    is told "interrupted": every message gets its answer."""
    shopai = slow_shopai
    async with FakeTelegram() as fake:
        fb = fake.add_bot(TOKEN, "shop_bot")
        config = telegram_config(tmp_path, fake, shopai_backend(shopai), grace=30)
        bridge = Bridge(config, ENV, tmp_path)
        users = [fb.make_user(900 + i, f"T{i}") for i in range(3)]
        chats = [fb.private_chat(u) for u in users]
        # each chat's two answers end differently (``answered`` tells them apart)
        first = [QUESTIONS[0], QUESTIONS[1], QUESTIONS[5]]
        queued = [QUESTIONS[2], QUESTIONS[3], LATER[1]]
        await bridge.start()
        try:
            for chat, user, q, then in zip(chats, users, first, queued, strict=True):
                await fb.push_text(chat, user, q)
                await fb.push_text(chat, user, then)  # waits behind the first
            await eventually(
                lambda: all(fb.chat_messages(c["id"]) for c in chats),
                timeout=30,
                what="every first answer to start streaming",
                bridge=bridge,
            )
            assert await bridge.stop() == 0
            # the running answers were finished, the queued messages not started
            for chat, q, then in zip(chats, first, queued, strict=True):
                assert answered(fake, TOKEN, chat["id"], q)
                assert not answered(fake, TOKEN, chat["id"], then)
            assert shopai.stats.messages == len(first)
            await bridge.start()
            await eventually(
                lambda: all(
                    answered(fake, TOKEN, c["id"], q) for c, q in zip(chats, queued, strict=True)
                ),
                timeout=60,
                what="the queued messages' answers after the restart",
                bridge=bridge,
            )
        finally:
            await bridge.stop()
        texts = [m.get("text", "") for c in chats for m in fb.chat_messages(c["id"])]
        assert not [t for t in texts if INTERRUPTED in t or RESTART_NOTICE in t]
        assert shopai.stats.messages == len(first) + len(queued)  # each asked once


async def test_sigterm_cuts_a_turn_past_the_grace_and_the_next_start_recovers_it(
    tmp_path: Path, loopos: LoopOSEmulator
) -> None:
    """A LoopOS call still running when the grace ends is cut; the next start applies
    recovery's rule to it (the restart notice: the call may have reached LoopOS), and the
    message queued behind it is answered normally. No "interrupted" notice."""
    async with FakeTelegram() as fake:
        fb = fake.add_bot(TOKEN, "sell_bot")
        config = telegram_config(tmp_path, fake, loopos_backend(loopos), grace=0.5)
        bridge = Bridge(config, ENV, tmp_path)
        user = fb.make_user(950, "L")
        chat = fb.private_chat(user)
        await bridge.start()
        try:
            loopos.faults.slow_seconds = 60
            await fb.push_text(chat, user, "Quero vender um iPhone 12")
            await fb.push_text(chat, user, "Quero vender um iPhone 12")  # queued
            await eventually(
                lambda: loopos.in_flight == 1,
                timeout=30,
                what="the /chat call to be in flight",
                bridge=bridge,
            )
            assert await bridge.stop() == 0
            loopos.faults.slow_seconds = 0
            await bridge.start()

            def texts() -> list[str]:
                return [m.get("text", "") for m in fb.chat_messages(chat["id"])]

            await eventually(
                lambda: len(texts()) >= 2 and RESTART_NOTICE in texts()[0],
                timeout=40,
                what="the restart notice, then the queued message's answer",
                bridge=bridge,
            )
        finally:
            await bridge.stop()
        assert not [t for t in texts() if INTERRUPTED in t]
        assert len(loopos.requests_to("/chat")) == 2  # the cut call was not replayed
