"""Pure logic of the ShopAI backend: languages, settings, locating the answer in a history."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from chatbridge.core.backends.shopai import (
    ShopAISettings,
    base_language,
    parse_supported_languages,
    pick_language,
)
from chatbridge.core.backends.shopai.backend import find_answer, reply_from, visible_text


@pytest.mark.parametrize(
    ("tag", "base"),
    [("pt-BR", "pt"), ("en_US", "en"), ("HU", "hu"), ("", None), (None, None)],
)
def test_base_language(tag: str | None, base: str | None) -> None:
    assert base_language(tag) == base


def test_parse_supported_languages() -> None:
    message = "Invalide language, supported languages: ['hu', 'en']"
    assert parse_supported_languages(message) == ["hu", "en"]
    assert parse_supported_languages('supported languages: ["de", "fr"]') == ["de", "fr"]
    assert parse_supported_languages("Invalid license key") is None
    assert parse_supported_languages("supported languages: []") is None


def test_pick_language() -> None:
    assert pick_language("pt", ["hu", "pt"], "en") == "pt"
    assert pick_language("pt", ["hu", "en"], "en") == "en"
    assert pick_language("pt", ["hu", "de"], "en") == "hu"
    assert pick_language("pt", ["en-GB", "pt-PT"], "en") == "pt-PT"


def test_settings_hide_the_license_key() -> None:
    s = ShopAISettings(base_url="https://shop.example/", license_key="s3cret")  # type: ignore[arg-type]
    assert s.base_url == "https://shop.example"
    assert "s3cret" not in repr(s) and "s3cret" not in str(s.model_dump())
    with pytest.raises(ValidationError):
        ShopAISettings(base_url="ftp://x", license_key="k")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        ShopAISettings(base_url="http://x", license_key="k", protocol="grpc")  # type: ignore[arg-type]


def test_find_answer() -> None:
    history = [
        {"type": "user", "content": "yes"},
        {"type": "ai", "content": "first"},
        {"type": "user", "content": "yes"},
        {"type": "ai", "content": "second"},
    ]
    assert find_answer(history, "yes", 1) == ("answer", "second")
    assert find_answer(history, "yes", 0) == ("answer", "first")
    assert find_answer(history, "yes", None) == ("answer", "second")
    assert find_answer(history, "yes", 2) == ("missing", None), "not the previous answer"
    shifted = [{"type": "user", "content": "other"}, *history[2:]]  # trimmed server history
    assert find_answer(shifted, "yes", 0) == ("answer", "second"), "falls back to the text"
    assert find_answer(history[:3], "yes", 1) == ("pending", None)
    assert find_answer(history, "no", None) == ("missing", None)
    assert find_answer([{"type": "ai", "content": "hi"}, "junk"], "x", 0) == ("missing", None)


def test_visible_text_and_reply() -> None:
    assert visible_text("a <b>bold</b> &amp; <a href='x'>li") == "a bold & li"
    assert reply_from("plain").text == "plain" and reply_from("plain").links == ()
    rich = reply_from('<b>Phone</b> <a href="https://shop.example/p/1">details</a>')
    assert rich.text.startswith("Phone") and rich.links[0].url == "https://shop.example/p/1"
