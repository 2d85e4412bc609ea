"""The bot's own words: one catalogue per locale, picked from the user's language, overridable
by the operator; the engine, the backends' failure reasons and /cancel speak through it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from chatbridge.core.backends.shopai import ShopAIBackend, ShopAISettings
from chatbridge.core.engine import Engine
from chatbridge.core.locales import en, pt_pt
from chatbridge.core.store import MemoryStore
from chatbridge.core.texts import Catalogue, UserTexts, locale_for, placeholders
from chatbridge.core.types import (
    ConversationKey,
    Event,
    Failure,
    FailureKind,
    Final,
    Inbound,
    ReplyMessage,
    Token,
)
from tests.test_engine import RecordingSurface

KEY = ConversationKey("b", "test", "c1", "u1")


def test_every_locale_has_every_text_with_the_same_placeholders() -> None:
    assert set(pt_pt.TEXTS) == set(en.TEXTS)
    for key, text in en.TEXTS.items():
        assert placeholders(pt_pt.TEXTS[key]) == placeholders(text), key
        assert text.strip() and pt_pt.TEXTS[key].strip(), key
        assert pt_pt.TEXTS[key] != text, f"{key} is not translated"


@pytest.mark.parametrize(
    ("language", "locale"),
    [
        ("pt", "pt-PT"),
        ("pt-PT", "pt-PT"),
        ("pt_BR", "pt-PT"),
        ("pt-br", "pt-PT"),
        ("en-GB", "en"),
        ("EN", "en"),
        ("fr", "en"),
        (None, "en"),
    ],
)
def test_the_user_language_picks_the_catalogue(language: str | None, locale: str) -> None:
    assert locale_for(language) == locale
    assert locale_for("fr", "pt-PT") == "pt-PT"  # the bot's default for other languages


def test_operator_overrides_win_and_are_checked() -> None:
    texts = Catalogue("pt-PT", {"pt-PT": {"refused": "Só para vendedores registados."}})
    assert texts.text("refused", "pt") == "Só para vendedores registados."
    assert texts.text("refused", "de") == "Só para vendedores registados."  # default locale
    assert texts.text("refused", "en").startswith("Sorry, this assistant is private")
    with pytest.raises(ValueError, match=r"en\.nope: no such text"):
        Catalogue("en", {"en": {"nope": "x"}})
    with pytest.raises(ValueError, match="unknown locale"):
        Catalogue("de")


def test_failures_read_in_the_users_language() -> None:
    texts = UserTexts()
    timeout = Failure(FailureKind.TIMEOUT, "x", user_text="The shopping assistant took too long.")
    assert texts.for_failure(timeout, "en") == "The shopping assistant took too long."
    assert texts.for_failure(timeout, "pt-PT") == pt_pt.TEXTS["timeout"]
    long = Failure(FailureKind.VALIDATION, "x", reason="too_long", fields={"length": 9, "limit": 5})
    assert "9 caracteres" in texts.for_failure(long, "pt") and "5" in texts.for_failure(long, "pt")
    assert texts.for_failure(Failure(FailureKind.BAD_INPUT, "too big"), "pt").endswith("too big")


async def test_shopai_reports_reasons_the_engine_puts_in_portuguese() -> None:
    backend = ShopAIBackend(
        ShopAISettings.model_validate(
            {"base_url": "http://127.0.0.1:9", "license_key": "test-license"}
        ),
        name="shop",
    )
    try:
        events = [e async for e in backend.turn("t", Inbound(KEY, text="   "))]
    finally:
        await backend.aclose()
    failure = events[0]
    assert isinstance(failure, Failure) and failure.reason == "text_only"
    assert UserTexts().for_failure(failure, "pt-PT") == pt_pt.TEXTS["text_only"]


class SlowBackend:
    """Streams a long answer slowly; the second message of a conversation is quick."""

    name = "slow"

    def __init__(self) -> None:
        self.turns: list[str] = []
        self.stopped = asyncio.Event()

    async def open(self, key: ConversationKey, language: str | None) -> str:
        return "s1"

    async def turn(self, session_ref: str, inbound: Inbound) -> AsyncIterator[Event]:
        self.turns.append(inbound.text)
        if inbound.text == "long":
            try:
                for i in range(1000):
                    yield Token(f"word{i} ")
                    await asyncio.sleep(0.01)
            finally:
                self.stopped.set()  # the engine stopped waiting and dropped the rest
        yield Final((ReplyMessage(f"answer to {inbound.text}"),))

    async def close(self, session_ref: str) -> None:
        return None

    async def aclose(self) -> None:
        return None


async def test_cancel_stops_the_answer_and_the_next_message_starts_normally() -> None:
    store = await MemoryStore.open()
    backend = SlowBackend()
    engine = Engine(bot="b", backend=backend, backend_name="slow", store=store)
    try:
        assert not engine.cancel(KEY)  # nothing running
        first, second = RecordingSurface(), RecordingSurface()
        running = engine.submit(Inbound(KEY, text="long", language="pt-PT"), first)
        queued = engine.submit(Inbound(KEY, text="next", language="pt-PT"), second)
        while not any(kind == "append" for kind, _ in first.events):
            await asyncio.sleep(0.01)
        assert engine.cancel(KEY)
        result = await running
        assert result.outcome == "cancelled"
        assert first.events[-1] == ("fail", pt_pt.TEXTS["cancelled"])
        assert backend.stopped.is_set()
        assert (await queued).outcome == "ok"
        assert second.events[-1] == ("finish", "answer to next")
        third = RecordingSurface()
        assert (await engine.handle(Inbound(KEY, text="again"), third)).outcome == "ok"
        assert not engine.cancel(KEY)
    finally:
        await engine.aclose(1.0)
        await store.close()
