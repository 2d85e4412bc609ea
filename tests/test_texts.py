"""The bot's own words: one catalogue per locale, picked from the user's language, overridable
by the operator; the engine, the backends' failure reasons and /cancel speak through it."""

from __future__ import annotations

import pytest

from chatbridge.core.backends.shopai import ShopAIBackend, ShopAISettings
from chatbridge.core.locales import en, pt_pt
from chatbridge.core.texts import Catalogue, UserTexts, locale_for, placeholders
from chatbridge.core.types import (
    ConversationKey,
    Failure,
    FailureKind,
    FailureReason,
    Inbound,
    NoticeReason,
)

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
    timeout = Failure(FailureKind.TIMEOUT, "x")
    assert texts.for_failure(timeout, "en") == en.TEXTS["timeout"]
    assert texts.for_failure(timeout, "pt-PT") == pt_pt.TEXTS["timeout"]
    fields = {"length": 9, "limit": 5}
    long = Failure(FailureKind.VALIDATION, "x", reason=FailureReason.TOO_LONG, fields=fields)
    assert "9 caracteres" in texts.for_failure(long, "pt") and "5" in texts.for_failure(long, "pt")
    # the log detail never reaches the user, in any language
    bad = Failure(FailureKind.BAD_INPUT, "/chat: HTTP 413 (too big)")
    assert texts.for_failure(bad, "pt") == pt_pt.TEXTS["bad_input"]
    # a reason whose fields the backend did not give reads as its kind, never "{seconds}"
    busy = Failure(FailureKind.UNAVAILABLE, "429", reason=FailureReason.BUSY)
    assert texts.for_failure(busy, "en") == en.TEXTS["unavailable"]
    # the operator's wording wins, for kinds and reasons alike
    reworded = UserTexts(
        Catalogue("en", {"en": {"timeout": "Slow today, sorry.", "too_long": "Max {limit}!"}})
    )
    assert reworded.for_failure(timeout, "en") == "Slow today, sorry."
    assert reworded.for_failure(long, "en") == "Max 5!"
    assert reworded.for_failure(long, "pt-PT") == pt_pt.TEXTS["too_long"].format(**fields)


def test_every_reason_a_backend_may_give_has_a_text() -> None:
    for reason in (*FailureReason, *NoticeReason):
        assert reason.value in en.TEXTS, reason


async def test_shopai_reports_reasons_the_engine_puts_in_portuguese() -> None:
    backend = ShopAIBackend(
        ShopAISettings.from_dict({"base_url": "http://127.0.0.1:9", "license_key": "test-license"}),
        name="shop",
    )
    try:
        events = [e async for e in backend.turn("t", Inbound(KEY, text="   "))]
    finally:
        await backend.aclose()
    failure = events[0]
    assert isinstance(failure, Failure) and failure.reason == "text_only"
    assert UserTexts().for_failure(failure, "pt-PT") == pt_pt.TEXTS["text_only"]
