"""The Telegram adapter end to end: real PTB against the fake Bot API, a scripted backend."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable

import pytest
from backend_contract import TINY_PNG

from chatbridge.core.html import parse_reply_html
from chatbridge.core.types import Final, Inbound, Token
from tests.fakes.telegram_api import Call, FakeTelegram
from tests.fakes.telegram_harness import (
    ADMIN,
    BOT_USERNAME,
    TOKEN,
    Harness,
    ScriptBackend,
    answer,
    callback_data,
    labels,
)

pytestmark = pytest.mark.timeout(60)


def paced(calls: list[Call]) -> list[float]:
    times = [c.time for c in calls]
    return [b - a for a, b in itertools.pairwise(times)]


async def test_private_chat_streams_by_drafts_then_sends_with_keyboard() -> None:
    text = "Hello there, this answer streams in pieces until it is complete."
    backend = ScriptBackend(
        answer(
            text,
            ["Yes", "No"],
            html="<p>Hello <b>there</b>, this answer streams in pieces until it is complete.</p>",
        ),
        token_delay=0.08,
        turn_delay=0.6,  # the backend thinks first: "typing..." shows meanwhile
    )
    async with Harness(backend) as h:
        user = h.user()
        chat = h.fb.private_chat(user)
        await h.fb.push_text(chat, user, "hi")
        final = await h.reply_in(chat["id"], keyboard=True)
        drafts = h.fake.calls_of("sendMessageDraft", chat["id"], ok=True)
        assert len(drafts) >= 2  # live previews, paced
        assert all(gap >= h.interval - 0.1 for gap in paced(drafts))
        assert len({d.params["draft_id"] for d in drafts}) == 1
        assert h.fake.calls_of("sendChatAction", chat["id"])  # typing before the first token
        assert not h.fake.calls_of("editMessageText")
        message = final.result
        assert message["text"] == text
        assert {"type": "bold", "offset": 6, "length": 5} in message["entities"]
        assert labels(final) == ["Yes", "No"]
        assert all(d.startswith("b:") and len(d.encode()) <= 64 for d in callback_data(final))
        assert h.fake.count_429 == 0


async def test_group_streams_by_paced_edits_and_honours_a_429() -> None:
    text = " ".join(f"word{i}" for i in range(60))
    # 6 s of tokens: a group's streaming edits are spread at its 20-a-minute pace (one per 3 s)
    backend = ScriptBackend(answer(text, ["Buy"], tokens=30), token_delay=0.2)
    async with Harness(backend, fast=False) as h:
        user = h.user(101)
        group = h.fb.group_chat(-1001, "Sellers")
        h.fake.inject_error("editMessageText", retry_after=1, chat_id=group["id"])
        sent = await h.fb.push_text(group, user, f"@{BOT_USERNAME} tell me more")
        await h.reply_in(group["id"])
        await h.settled(timeout=15)
        msgs = h.fb.chat_messages(group["id"])
        assert len(msgs) == 1
        assert msgs[0]["text"] == text  # the final text arrived despite the 429
        keyboard = msgs[0]["reply_markup"]["inline_keyboard"]
        assert [b["text"] for row in keyboard for b in row] == ["Buy"]
        assert not h.fake.calls_of("sendMessageDraft")
        first = h.fake.calls_of("sendMessage", group["id"], ok=True)[0]
        assert first.params["reply_parameters"]["message_id"] == sent["message_id"]
        ops = [
            c
            for c in h.fake.calls
            if c.chat_id == group["id"]
            and c.ok
            and c.method in ("sendMessage", "editMessageText", "editMessageReplyMarkup")
        ]
        assert len(ops) >= 3  # streamed: a send and several edits
        # the fake enforces the per-chat, per-group and bot-wide limits: none was provoked
        assert h.adapter.stats.rate_limited == 1  # only the injected one
        assert h.fake.count_429 == 1


async def test_group_ignores_messages_not_addressed_to_the_bot() -> None:
    async with Harness() as h:
        user = h.user(102)
        group = h.fb.group_chat(-1002)
        await h.fb.push_text(group, user, "just chatting with friends")
        await h.fb.push_text(group, user, "/help@other_bot")
        await h.fb.push_text(group, user, f"/help@{BOT_USERNAME}")
        await h.reply_in(group["id"], contains="What I can do")
        await h.settled()  # every earlier update was handled in order: nothing is left to run
        assert not h.backend.inbounds  # type: ignore[attr-defined]
        assert len(h.fake.calls_of("sendMessage", group["id"])) == 1


async def test_button_press_answers_marks_choice_and_sends_payload() -> None:
    backend = ScriptBackend(answer("Pick a size", ["Small", "Large"], tokens=1))
    async with Harness(backend) as h:
        user = h.user(103)
        chat = h.fb.private_chat(user)
        await h.fb.push_text(chat, user, "sizes?")
        final = await h.reply_in(chat["id"], keyboard=True)
        mark = len(h.fake.calls)
        await h.fb.push_callback(user, final.result, callback_data(final)[1])
        await h.fake.wait_for(lambda c: c.method == "answerCallbackQuery", since=mark)
        await h.reply_in(chat["id"], since=mark, keyboard=True)
        inbound = backend.inbounds[-1]
        assert inbound.button_payload == "large" and inbound.text == "Large"
        edited = h.fb.messages[(chat["id"], final.result["message_id"])]
        assert edited["text"].endswith("✅ Large") and "reply_markup" not in edited

        mark = len(h.fake.calls)
        await h.fb.push_callback(user, final.result, "b:unknown-id")
        answered = await h.fake.wait_for(lambda c: c.method == "answerCallbackQuery", since=mark)
        assert answered.params["text"].startswith("This button has expired")
        await h.settled()  # every earlier update was handled in order: nothing is left to run
        assert len(backend.inbounds) == 2


async def test_photo_album_document_and_limits() -> None:
    backend = ScriptBackend()
    async with Harness(backend) as h:
        user = h.user(104)
        chat = h.fb.private_chat(user)
        await h.fb.push_photo(chat, user, TINY_PNG, caption="my lamp")
        await h.reply_in(chat["id"], contains="(+1 photo)")
        first = backend.inbounds[0]
        assert first.text == "my lamp" and first.images[0].data == TINY_PNG
        assert first.images[0].mime_type == "image/png"

        await h.fb.push_album(chat, user, [TINY_PNG, TINY_PNG, TINY_PNG], caption="a set", gap=0.05)
        await h.reply_in(chat["id"], contains="(+3 photo)")
        assert len(backend.inbounds) == 2 and backend.inbounds[1].text == "a set"

        await h.fb.push_document(
            chat, user, TINY_PNG, file_name="lamp.png", mime_type="image/png", caption="as a file"
        )
        await h.reply_in(chat["id"], contains="as a file")

        mark = len(h.fake.calls)
        await h.fb.push_photo(chat, user, TINY_PNG, file_size=15 * 1024 * 1024)
        await h.reply_in(chat["id"], since=mark, contains="too large")
        await h.fb.push_document(
            chat, user, b"%PDF-1.4", file_name="a.pdf", mime_type="application/pdf"
        )
        await h.reply_in(chat["id"], since=mark, contains="not a photo")
        await h.fb.push_document(
            chat, user, b"%PDF-1.4", file_name="x.png", mime_type="image/png"
        )  # lies about its type
        await h.reply_in(chat["id"], since=mark, contains="JPEG, PNG")
        await h.settled()  # every earlier update was handled in order: nothing is left to run
        assert len(backend.inbounds) == 3  # refused files never reach the backend


async def test_admin_commands_allowed_and_refused(caplog: pytest.LogCaptureFixture) -> None:
    async with Harness() as h:
        seller = h.user(555, "Seller")
        admin = h.user(ADMIN, "Admin")
        chat = h.fb.private_chat(seller)
        await h.fb.push_text(chat, seller, "hello")
        await h.reply_in(chat["id"])
        await h.settled()
        assert await h.store.count("sellers") == 1

        with caplog.at_level(logging.WARNING):
            await h.fb.push_text(chat, seller, "/reset_all")
            await h.reply_in(chat["id"], contains="administrators only")
        assert any("refused /reset_all from user 555" in r.getMessage() for r in caplog.records)
        assert await h.store.count("sellers") == 1

        admin_chat = h.fb.private_chat(admin)
        await h.fb.push_text(admin_chat, admin, "/sessions")
        listing = await h.reply_in(admin_chat["id"], contains="session(s)")
        assert "user 555" in listing.params["text"]
        await h.fb.push_text(admin_chat, admin, "/stats")
        stats = await h.reply_in(admin_chat["id"], contains="Stats")
        assert "Turns running: 0, queued: 0" in stats.params["text"]
        admin_pt = h.fb.make_user(ADMIN, "Admin", language_code="pt-PT")
        await h.fb.push_text(admin_chat, admin_pt, "/stats")  # admin replies are localised too
        stats = await h.reply_in(admin_chat["id"], contains="<b>Estatísticas</b>")
        assert "Turnos em curso: 0, em espera: 0" in stats.params["text"]
        await h.fb.push_text(admin_chat, admin, "/reset 555")
        await h.reply_in(admin_chat["id"], contains="Reset 1 conversation")
        assert await h.store.count("sellers") == 0

        await h.fb.push_text(chat, seller, "/reset")
        await h.reply_in(chat["id"], contains="starts over")
        assert [c["command"] for c in h.fb.commands] == [
            "start",
            "help",
            "reset",
            "cancel",
            "lang",
            "listing",
            "condition",
        ]
        # one menu per locale, in its language (setMyCommands language_code)
        assert set(h.fb.menus) == {"", "en", "pt"}
        assert h.fb.menus["pt"][0]["description"] == "Começar a falar com o assistente"


async def test_long_answer_continues_in_new_messages() -> None:
    paragraph = "<p>" + "<b>Bold</b> and plain words here. " * 40 + "</p>"
    html = paragraph * 8  # about 10,000 visible characters

    def reply(inbound: Inbound) -> list[object]:
        return [Token("Working on it..."), Final((parse_reply_html(html, ""),))]

    async with Harness(ScriptBackend(reply)) as h:  # type: ignore[arg-type]
        user = h.user(105)
        group = h.fb.group_chat(-1005)
        await h.fb.push_text(group, user, f"@{BOT_USERNAME} long please")
        await h.settled(turns=1)
        msgs = h.fb.chat_messages(group["id"])
        assert len(msgs) == 3
        assert all(len(m["text"]) <= 4096 for m in msgs)
        assert all(c.ok for c in h.fake.calls if c.method in ("sendMessage", "editMessageText"))
        joined = " ".join(m["text"] for m in msgs)
        assert joined.count("Bold") == 320
        assert all(m["entities"][0]["type"] == "bold" for m in msgs)


async def test_order_kept_per_chat_and_chats_run_concurrently() -> None:
    backend = ScriptBackend(turn_delay=0.4)
    async with Harness(backend) as h:
        u1, u2 = h.user(201), h.user(202)
        c1, c2 = h.fb.private_chat(u1), h.fb.private_chat(u2)
        started = asyncio.get_running_loop().time()
        for i in range(3):
            await h.fb.push_text(c1, u1, f"m{i}")
        await h.fb.push_text(c2, u2, "other")
        await h.settled(turns=4)
        elapsed = asyncio.get_running_loop().time() - started
        assert [i.text for i in backend.inbounds if i.key.chat_id == "201"] == ["m0", "m1", "m2"]
        assert elapsed < 3 * 0.4 + 1.0  # chat 202 did not wait behind chat 201


async def test_forum_topics_are_separate_conversations() -> None:
    backend = ScriptBackend()
    async with Harness(backend) as h:
        user = h.user(301)
        forum = h.fb.group_chat(-1009, "Forum", forum=True)
        await h.fb.push_text(forum, user, f"@{BOT_USERNAME} in topic five", thread_id=5)
        await h.fb.push_text(forum, user, f"@{BOT_USERNAME} in topic seven", thread_id=7)
        await h.settled(turns=2)
        assert {k.thread_id for k in backend.opened} == {"5", "7"}
        threads = {
            c.params.get("message_thread_id")
            for c in h.fake.calls_of("sendMessage", forum["id"], ok=True)
        }
        assert threads == {5, 7}


async def test_webhook_mode_checks_the_secret_token() -> None:
    backend = ScriptBackend()
    async with Harness(
        backend, mode="webhook", webhook_port=0, webhook_secret_token="right-secret_123"
    ) as h:
        registered = h.fake.calls_of("setWebhook")[0]
        assert registered.params["secret_token"] == "right-secret_123"
        assert h.fb.webhook_url and h.fb.webhook_url.endswith(f":{h.adapter.webhook_port}/telegram")
        user = h.user(401)
        chat = h.fb.private_chat(user)
        await h.fb.push_text(chat, user, "via webhook")
        await h.reply_in(chat["id"])
        assert h.fb.webhook_statuses == [200]
        wrong = {
            "update_id": 999,
            "message": {"message_id": 1, "date": 0, "chat": chat, "from": user, "text": "forged"},
        }
        assert await h.fb.post_webhook(wrong, "wrong-secret") == 403
        assert await h.fb.post_webhook(wrong, None) == 403
        await h.settled()  # every earlier update was handled in order: nothing is left to run
        assert [i.text for i in backend.inbounds] == ["via webhook"]
        assert h.adapter.connected


async def test_token_never_in_logs(caplog: pytest.LogCaptureFixture) -> None:
    secret_half = TOKEN.split(":", 1)[1]
    with caplog.at_level(logging.DEBUG):
        async with Harness() as h:
            user = h.user(501)
            chat = h.fb.private_chat(user)
            await h.fb.push_photo(chat, user, TINY_PNG, caption="hi")
            await h.reply_in(chat["id"])
            h.fake.inject_error("sendMessage", status=500, retry_after=None)
            mark = len(h.fake.calls)
            await h.fb.push_text(chat, user, "/help")
            await h.fake.wait_for(lambda c: c.method == "sendMessage" and not c.ok, since=mark)
            await h.reply_in(chat["id"], since=mark)  # the retried send went through
        # a token the server rejects: PTB names it in InvalidToken
        from chatbridge.adapters.telegram import TelegramAdapter, TelegramOptions

        other = await FakeTelegram().start()
        bad = TelegramAdapter(
            name="bad",
            token="123:" + secret_half[::-1],
            engine=h.engine,
            admins=frozenset(),
            options=TelegramOptions(api_base_url=f"{other.url}/bot"),
        )
        try:
            with pytest.raises(RuntimeError) as err:
                await bad.start()
            assert secret_half[::-1] not in str(err.value) and err.value.__cause__ is None
            logging.getLogger("test").exception("boom %s", TOKEN, exc_info=RuntimeError(TOKEN))
        finally:
            await other.stop()
    assert len(caplog.records) > 20
    handler_text = caplog.text
    for record in caplog.records:
        handler_text += record.getMessage() + (record.exc_text or "")
    assert "HTTP Request" not in handler_text or secret_half not in handler_text
    assert secret_half not in handler_text
    assert secret_half[::-1] not in handler_text


async def test_server_errors_are_retried_and_the_answer_still_arrives() -> None:
    backend = ScriptBackend(answer("A complete answer after a hiccup", tokens=3))
    async with Harness(backend) as h:
        user = h.user(106)
        group = h.fb.group_chat(-1006)
        h.fake.inject_error("sendMessage", status=502, retry_after=None, chat_id=group["id"])
        h.fake.inject_error("editMessageText", status=500, retry_after=None, chat_id=group["id"])
        await h.fb.push_text(group, user, f"@{BOT_USERNAME} hello")
        await h.settled(turns=1)
        msgs = h.fb.chat_messages(group["id"])
        assert [m["text"] for m in msgs] == ["A complete answer after a hiccup"]
        assert h.adapter.stats.network_errors >= 1


async def test_start_help_lang_and_unsupported_media() -> None:
    backend = ScriptBackend()
    async with Harness(backend) as h:
        user = h.user(107)
        chat = h.fb.private_chat(user)
        await h.fb.push_text(chat, user, "/start")
        await h.reply_in(chat["id"], contains="Hello!")
        await h.fb.push_text(chat, user, "/help")
        await h.reply_in(chat["id"], contains="What I can do")
        await h.fb.push_text(chat, user, "/lang")
        await h.reply_in(chat["id"], contains="Usage: /lang")
        await h.fb.push_text(chat, user, "/lang pt-PT")
        await h.reply_in(chat["id"], contains="Language set to")
        record = await h.store.get(backend.opened[-1])
        assert record is not None and record.language == "pt-PT"
        await h.fb.push_update(
            {
                "message": {
                    "message_id": 5,
                    "date": 0,
                    "chat": chat,
                    "from": user,
                    "voice": {"file_id": "v", "file_unique_id": "v", "duration": 1},
                }
            }
        )
        await h.reply_in(chat["id"], contains="I can read text and photos")
        await h.fb.push_text(chat, user, "/unknowncmd hello")
        await h.reply_in(chat["id"], contains="You said: /unknowncmd hello")
        assert [i.text for i in backend.inbounds] == ["/unknowncmd hello"]


async def test_two_bots_in_one_process() -> None:
    from chatbridge.adapters.telegram import TelegramAdapter, TelegramOptions
    from chatbridge.core.engine import Engine
    from chatbridge.core.store.memory import MemoryStore

    fake = await FakeTelegram(interval=0.25).start()
    store = await MemoryStore.open()
    adapters, backends, bots = [], [], []
    try:
        for n, token in enumerate(["1001:first-bot-secret-xyz", "1002:second-bot-secret-xyz"]):
            bots.append(fake.add_bot(token, f"bot{n}_bot"))
            backend = ScriptBackend()
            backends.append(backend)
            engine = Engine(bot=f"b{n}", backend=backend, backend_name="t", store=store)
            options = TelegramOptions(api_base_url=f"{fake.url}/bot", poll_timeout=2)
            adapter = TelegramAdapter(
                name=f"b{n}", token=token, engine=engine, options=options, admins=frozenset()
            )
            await adapter.start()
            adapters.append(adapter)
        for n, fb in enumerate(bots):
            user = fb.make_user(600 + n)
            await fb.push_text(fb.private_chat(user), user, f"hello bot {n}")
        for n, fb in enumerate(bots):
            await fake.wait_for(_message_sent_by(fb.token))
            assert [i.text for i in backends[n].inbounds] == [f"hello bot {n}"]
        assert all(a.connected for a in adapters)
    finally:
        for adapter in adapters:
            await adapter.stop()
        await store.close()
        await fake.stop()


def _message_sent_by(token: str) -> Callable[[Call], bool]:
    return lambda call: call.token == token and call.method == "sendMessage"


async def test_an_answer_of_buttons_only_is_introduced_in_the_users_language() -> None:
    # Telegram refuses a message without text, so a buttons-only answer gets a short line of
    # the bot's own: in the user's language, like everything else the bot says.
    backend = ScriptBackend(answer("", ["Sim", "Não"], tokens=1))
    async with Harness(backend) as h:
        for user_id, language, hint in (
            (111, "pt-PT", "Escolha uma opção abaixo."),
            (112, "en", "Please choose an option below."),
        ):
            user = h.fb.make_user(user_id, "Rita", language_code=language)
            chat = h.fb.private_chat(user)
            await h.fb.push_text(chat, user, "continuar")
            final = await h.reply_in(chat["id"], keyboard=True)
            assert final.params["text"] == hint
