"""Sellers and shoppers through the real PTB stack, the fake Bot API and the backend emulators."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from backend_contract import TINY_PNG

from chatbridge.core.backends.loopos import LoopOSBackend, LoopOSSettings
from chatbridge.core.backends.shopai import ShopAIBackend, ShopAISettings
from chatbridge.emulators.loopos import LoopOSEmulator
from chatbridge.emulators.shopai import ShopAIEmulator, start_shopai_emulator
from tests.fakes.telegram_api import Call
from tests.fakes.telegram_harness import BOT_USERNAME, Harness, callback_data, labels

pytestmark = pytest.mark.timeout(60)

SUBMISSION = "https://submission.example/"


def loopos_backend(url: str) -> LoopOSBackend:
    return LoopOSBackend(
        LoopOSSettings.from_dict(
            {
                "base_url": url,
                "core_base_url": "https://core.example/",
                "submission_base_url": SUBMISSION,
                "timeout": 5.0,
                "retry": {"attempts": 2, "base_delay": 0.01},
            }
        ),
        name="sellers-ai",
    )


async def press(h: Harness, user: dict[str, Any], keyboard_call: Call, label: str) -> Call:
    """Press the button labelled ``label``; returns the next reply with a keyboard or text."""
    data = callback_data(keyboard_call)[labels(keyboard_call).index(label)]
    mark = len(h.fake.calls)
    await h.fb.push_callback(user, keyboard_call.result, data)
    return await h.reply_in(keyboard_call.chat_id, since=mark)


async def test_seller_submits_an_item_with_buttons_and_an_album(loopos: LoopOSEmulator) -> None:
    backend = loopos_backend(loopos.url)
    try:
        async with Harness(backend) as h:
            seller = h.fb.make_user(700, "Rita", language_code="pt-PT")
            chat = h.fb.private_chat(seller)
            await h.fb.push_text(chat, seller, "Quero vender um iPhone 12")
            sizes = await h.reply_in(chat["id"], keyboard=True)
            assert "iPhone 12" in h.fb.chat_messages(chat["id"])[0]["text"]
            assert sizes.params["text"] == "Qual é a capacidade de armazenamento?"
            assert labels(sizes) == ["64 GB", "128 GB", "256 GB"]
            assert len(sizes.params["reply_markup"]["inline_keyboard"]) == 1  # short: one row

            condition = await press(h, seller, sizes, "128 GB")
            assert labels(condition) == ["Como novo", "Bom", "Razoável"]
            question = await press(h, seller, condition, "Bom")
            if "reply_markup" not in question.params:  # "item created" may come first
                question = await h.reply_in(
                    chat["id"], keyboard=True, since=h.fake.calls.index(question)
                )
            assert "Não" in labels(question)
            photo_q = await press(h, seller, question, "Não")
            await h.settled()
            assert "fotografia" in h.fb.chat_messages(chat["id"])[-1]["text"]

            mark = len(h.fake.calls)
            await h.fb.push_album(chat, seller, [TINY_PNG, TINY_PNG], caption="aqui estão")
            done = await h.reply_in(chat["id"], since=mark, contains="Submissão concluída")
            urls = [
                b["url"]
                for row in done.params.get("reply_markup", {}).get("inline_keyboard", [])
                for b in row
                if "url" in b
            ]
            urls += [e["url"] for e in done.result.get("entities", []) if e["type"] == "text_link"]
            assert any(u.startswith(SUBMISSION) for u in urls)  # inline link or URL button
            # each choice was marked on its message and its keyboard removed
            for call in (sizes, condition):
                shown = h.fb.messages[(chat["id"], call.result["message_id"])]
                assert "reply_markup" not in shown and "✅" in shown["text"]
            assert photo_q.ok and h.fake.count_429 == 0
            chats = loopos.requests_to("/chat")
            assert len(chats) == 5  # text, three presses, one album turn
            assert len(chats[-1]["images"]) == 2  # the album arrived as one turn
    finally:
        await backend.aclose()


async def test_listing_command_on_a_photo(loopos: LoopOSEmulator) -> None:
    backend = loopos_backend(loopos.url)
    try:
        async with Harness(backend) as h:
            seller = h.fb.make_user(701, "Rui", language_code="pt-PT")
            chat = h.fb.private_chat(seller)
            await h.fb.push_photo(chat, seller, TINY_PNG, caption="/listing casaco de ganga azul")
            # a pt-PT user reads the bot's own words in Portuguese
            reply = await h.reply_in(chat["id"], contains="Preço")
            assert reply.result["entities"][0]["type"] == "bold"  # the title
            assert loopos.requests_to("/loopos_ai_c2c_descriptor")
            await h.fb.push_text(chat, seller, "/listing")
            await h.reply_in(chat["id"], contains="Envie uma fotografia")
    finally:
        await backend.aclose()


async def test_condition_command_uses_the_decision_service(loopos: LoopOSEmulator) -> None:
    backend = loopos_backend(loopos.url)
    try:
        async with Harness(backend) as h:
            seller = h.fb.make_user(703, "Rui")
            chat = h.fb.private_chat(seller)
            await h.fb.push_text(chat, seller, "/condition iPhone 12 with scratches on the back")
            reply = await h.reply_in(chat["id"], contains="Condition:")
            assert "Condition: Good" in reply.result["text"]  # "scratches": signs of use
            sent = loopos.requests_to("/loopos_ai_decision")
            assert sent[0]["options"] == ["Excellent", "Good", "Fair", "Poor"]
            assert sent[0]["item_context"] == "iPhone 12 with scratches on the back"
            await h.fb.push_text(chat, seller, "/condition")
            await h.reply_in(chat["id"], contains="Tell me about the item")
    finally:
        await backend.aclose()


async def test_listing_politely_unsupported_without_loopos() -> None:
    async with Harness() as h:
        user = h.user(702)
        chat = h.fb.private_chat(user)
        await h.fb.push_photo(chat, user, TINY_PNG, caption="/listing a lamp")
        await h.reply_in(chat["id"], contains="can't prepare listings")
        await h.fb.push_text(chat, user, "/condition a lamp, like new")
        await h.reply_in(chat["id"], contains="can't grade")


@pytest.fixture
async def shopai() -> AsyncIterator[ShopAIEmulator]:
    emulator = await start_shopai_emulator(version="v0.2", token_delay=0.03)
    try:
        yield emulator
    finally:
        await emulator.stop()


async def test_shopper_gets_streamed_answers_by_drafts_and_by_edits(
    shopai: ShopAIEmulator,
) -> None:
    backend = ShopAIBackend(
        ShopAISettings.from_dict(
            {
                "base_url": shopai.url,
                "license_key": "test-license",
                "heartbeat_interval": 0.5,
                "answer_timeout": 5.0,
                "reconnect_backoff": 0.02,
            }
        ),
        name="shop",
    )
    try:
        async with Harness(backend) as h:
            shopper = h.user(800, "Sam")
            chat = h.fb.private_chat(shopper)
            await h.fb.push_text(chat, shopper, "I need running shoes for a marathon")
            final = await h.reply_in(chat["id"])
            assert len(h.fake.calls_of("sendMessageDraft", chat["id"], ok=True)) >= 2
            assert not h.fake.calls_of("editMessageText", chat["id"])
            assert final.result["text"].strip()

            group = h.fb.group_chat(-1800, "Shoppers")
            await h.fb.push_text(group, shopper, f"@{BOT_USERNAME} any headphones?")
            await h.reply_in(group["id"])
            await h.settled(turns=2)
            assert h.fake.calls_of("editMessageText", group["id"], ok=True)  # streamed by edits
            assert not h.fake.calls_of("sendMessageDraft", group["id"])
            assert len(h.fb.chat_messages(group["id"])) == 1
            assert h.fake.count_429 == 0
    finally:
        await backend.aclose()
