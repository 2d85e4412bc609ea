"""Rendering for Telegram: neutral rich text as HTML the Bot API accepts, splits, keyboards."""

from __future__ import annotations

import random

import pytest
from telegram import InlineKeyboardButton

from chatbridge.adapters.telegram.html import render_body, split_html, to_text, visible_length
from chatbridge.adapters.telegram.keyboards import build_keyboard, layout, short_id_of
from chatbridge.adapters.telegram.options import TelegramOptions
from chatbridge.adapters.telegram.surface import render
from chatbridge.core.html import parse_reply_html
from chatbridge.core.secrets import redact, register_secret
from chatbridge.core.store.memory import MemoryStore
from chatbridge.core.types import Button, Link, ReplyMessage
from tests.fakes.telegram_html import parse_html, utf16_len

NASTY = [
    "<p>Hello&nbsp;<b>world</b></p><script>alert(1)</script>",
    "<div class='x'><span style='color:red'>red</span> <img src=x onerror=y> tail",
    "<b>unclosed <i>nesting</b> & stray < and > signs",
    "<h2>Title</h2><ul><li>one</li><li>two <a href='javascript:alert(1)'>bad</a></li></ul>",
    '<a>no href</a> <a href="https://ok.example/?a=1&b=2">ok</a> &copy; &#169; &bogus;',
    "<pre><code class='language-py'>x = 1 < 2\n    y</code></pre><table><tr><td>a</td></tr>",
    "<blockquote>quote</blockquote><tg-spoiler>secret</tg-spoiler><u>u</u><s>s</s>",
    "<button>Choose me</button><p>Body</p>",
]


@pytest.mark.parametrize("source", NASTY)
def test_backend_html_reaches_telegram_as_html_it_accepts(source: str) -> None:
    out = render_body(parse_reply_html(source, "").body)
    text, _ = parse_html(out)  # raises like the Bot API would ("can't parse entities")
    assert "alert" not in out and "javascript" not in out
    assert "Choose me" not in text
    assert text.strip()


def test_block_structure_becomes_newlines() -> None:
    message = parse_reply_html(
        "<h1>Deals</h1><p>First   line<br>second</p><ul><li>a</li><li>b</li></ul>", ""
    )
    out = render_body(message.body)
    assert out == "<b>Deals</b>\n\nFirst line\nsecond\n\n• a\n• b"


def test_split_never_breaks_tags_entities_or_characters() -> None:
    rng = random.Random(4)
    words = ["<b>bold</b>", "&amp;", "plain", "😀", "<i>it &lt;x&gt;</i>", "\n", "\n\n", "é"]
    source = " ".join(rng.choice(words) for _ in range(6000))
    source = f"<b>start {source} end</b>"
    pieces = split_html(source, 4096)
    assert len(pieces) > 1
    for piece in pieces:
        text, _ = parse_html(piece)
        assert utf16_len(text) <= 4096
    total = "".join(to_text(p) for p in pieces)
    assert total.count("😀") == to_text(source).count("😀")
    assert total.count("bold") == to_text(source).count("bold")


def test_emoji_count_double_as_telegram_does() -> None:
    source = "😀" * 3000  # 6000 UTF-16 units
    pieces = split_html(source, 4096)
    assert [visible_length(p) for p in pieces] == [4096, 1904]


def test_layout_short_labels_share_rows_long_ones_alone() -> None:
    short = [InlineKeyboardButton(t, callback_data=t) for t in ["S", "M", "L", "XL"]]
    assert [len(r) for r in layout(short)] == [3, 1]
    long = [
        InlineKeyboardButton("A rather long option label here", callback_data=str(i))
        for i in range(3)
    ]
    assert [len(r) for r in layout(long)] == [1, 1, 1]
    many = [InlineKeyboardButton(str(i), callback_data=str(i)) for i in range(20)]
    assert all(len(r) <= 8 for r in layout(many))


async def test_keyboard_callback_data_fits_64_bytes() -> None:
    store = await MemoryStore.open()
    try:
        short = await store.short_id("p" * 5000)
        buttons = [
            Button("Yes " * 30, payload="p" * 5000, id=short),
            Button("No id yet", payload="x"),  # never drawn: the engine names every button
            Button("Docs", url="https://d.example"),
        ]
        links = [Link("Inline", "https://i.example"), Link("Bad", "javascript:x")]
        markup = build_keyboard(buttons, links, 'href="https://i.example"')
        assert markup is not None
        flat = [b for row in markup.inline_keyboard for b in row]
        data = flat[0].callback_data
        assert isinstance(data, str) and len(data.encode()) <= 64
        assert await store.resolve(short_id_of(data) or "") == "p" * 5000
        assert [b.url for b in flat[1:]] == ["https://d.example"]  # inline + unsafe links skipped
        assert len(flat[0].text) <= 60
    finally:
        await store.close()


def test_render_escapes_plain_text_and_draws_the_markup() -> None:
    assert render(ReplyMessage("a < b")) == "a &lt; b"
    assert render(parse_reply_html("<p><b>x</b></p>", "x")) == "<b>x</b>"
    assert render(parse_reply_html("<script>1</script>", "fallback")) == "fallback"
    links = parse_reply_html('<a href="https://x.example/?a=1&amp;b=2">x &amp; y</a>', "")
    assert render(links) == '<a href="https://x.example/?a=1&amp;b=2">x &amp; y</a>'
    assert short_id_of("b:abc") == "abc" and short_id_of("other") is None


def test_file_url_derived_from_api_url() -> None:
    opts = TelegramOptions(api_base_url="http://bot-api.local:8081/bot")
    assert opts.resolved_file_base_url == "http://bot-api.local:8081/file/bot"
    with pytest.raises(ValueError, match="stream_interval: must be at least 1"):
        TelegramOptions.from_dict({"stream_interval": 0.5})
    with pytest.raises(ValueError, match="webhook_secret_token: 1-256 characters"):
        TelegramOptions.from_dict({"webhook_secret_token": "has spaces"})


def test_redact_hides_the_secret_half_of_a_token() -> None:
    register_secret("4242:render-test-secret-value")
    assert redact("GET /bot4242:render-test-secret-value/getMe") == "GET /bot***/getMe"
    assert "render-test-secret-value" not in redact("…render-test-secret-value…")
