"""Pure logic of the ShopAI backend: languages, settings, locating the answer in a history."""

from __future__ import annotations

import pytest

from chatbridge.core.backends.shopai import (
    ShopAISettings,
    base_language,
    parse_supported_languages,
    pick_language,
)
from chatbridge.core.backends.shopai.backend import find_answer, reply_from, visible_text
from chatbridge.core.settings import MASKED, Invalid, Secret, dump


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
    s = ShopAISettings.from_dict({"base_url": "https://shop.example/", "license_key": "s3cret"})
    assert s.base_url == "https://shop.example"
    assert s.license_key.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(s) and "s3cret" not in str(dump(s))
    assert dump(s)["license_key"] == MASKED
    with pytest.raises(Invalid, match="base_url: must start with http"):
        ShopAISettings.from_dict({"base_url": "ftp://x", "license_key": "k"})
    with pytest.raises(Invalid, match="base_url: must start with http"):  # built in code too
        ShopAISettings(base_url="ftp://x", license_key=Secret("k"))
    with pytest.raises(Invalid, match="protocol: must be one of 'auto', 'websocket', 'socketio'"):
        ShopAISettings.from_dict({"base_url": "http://x", "license_key": "k", "protocol": "grpc"})


def test_find_answer_by_position() -> None:
    history = [
        {"type": "user", "content": "yes"},
        {"type": "ai", "content": "first"},
        {"type": "user", "content": "yes"},
        {"type": "ai", "content": "second"},
    ]
    assert find_answer(history, 1) == ("answer", ("second",))
    assert find_answer(history, None) == ("answer", ("second",)), "unknown: the last user entry"
    assert find_answer(history, 2) == ("missing", ()), "not the previous answer"
    assert find_answer(history[:3], 1) == ("pending", ())
    # the server stored the message normalised: its text plays no part
    stored = [{"type": "user", "content": "Yes  please "}, {"type": "ai", "content": "ok"}]
    assert find_answer(stored, 0) == ("answer", ("ok",))
    # an answer in several AI entries: all of them, in order
    several = [*history[:3], {"type": "ai", "content": "a"}, {"type": "ai", "content": "b"}]
    assert find_answer(several, 1) == ("answer", ("a", "b"))
    # a resent message: the answer follows the last copy
    resent = [*history[:3], {"type": "user", "content": "yes"}, {"type": "ai", "content": "c"}]
    assert find_answer(resent, 1) == ("answer", ("c",))
    assert find_answer([{"type": "ai", "content": "hi"}, "junk"], 0) == ("missing", ())


def test_visible_text_and_reply() -> None:
    assert visible_text("a <b>bold</b> &amp; <a href='x'>li") == "a bold & li"
    assert reply_from("plain").text == "plain" and reply_from("plain").links == ()
    rich = reply_from('<b>Phone</b> <a href="https://shop.example/p/1">details</a>')
    assert rich.text.startswith("Phone") and rich.links[0].url == "https://shop.example/p/1"
