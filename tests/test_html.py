"""chatbridge.core.html: backend HTML -> text, buttons, links (DeepChat semantics)."""

from __future__ import annotations

import pytest

from chatbridge.core.html import parse_reply_html
from chatbridge.core.types import Button, Link


def test_no_html_uses_text() -> None:
    msg = parse_reply_html(None, "  Olá!  ")
    assert msg.text == "Olá!"
    assert msg.buttons == () and msg.links == () and msg.html is None
    assert parse_reply_html("   ", "x").text == "x"


def test_buttons_from_button_elements_and_deep_chat_classes() -> None:
    html = (
        "<p>Qual é a <b>capacidade</b>?</p>"
        '<div><button class="deep-chat-button">64 GB</button>'
        "<button>128 GB</button>"
        '<span class="deep-chat-suggestion-button"> 256   GB </span></div>'
    )
    msg = parse_reply_html(html, "ignored when html has text")
    assert msg.buttons == (
        Button("64 GB", payload="64 GB"),
        Button("128 GB", payload="128 GB"),
        Button("256 GB", payload="256 GB"),
    )
    assert msg.text == "Qual é a capacidade?"
    assert "GB" not in msg.text  # labels are removed from the body
    assert msg.html == html  # markup kept for adapters' own renderers


def test_nested_button_counts_once_and_duplicates_and_disabled_dropped() -> None:
    html = (
        '<div class="deep-chat-button"><button>Sim</button></div>'
        "<button>Sim</button><button disabled>Não</button><button>  </button>"
    )
    msg = parse_reply_html(html, "O ecrã tem riscos?")
    assert msg.buttons == (Button("Sim", payload="Sim"),)
    # only buttons in html: the question comes from ``text``
    assert msg.text == "O ecrã tem riscos?"


def test_fallback_text_drops_lines_that_are_button_labels() -> None:
    msg = parse_reply_html("<button>Sim</button><button>Não</button>", "Pergunta?\nSim\nNão")
    assert msg.text == "Pergunta?"


def test_links_only_safe_schemes() -> None:
    html = (
        '<p>Vê <a href="https://loopos.example/items/1">a submissão</a>, '
        '<a href="javascript:alert(1)">isto</a>, <a href="tg://resolve?domain=x">tg</a>, '
        '<a href="mailto:a@b.pt">email</a>, <a href="ftp://x/y">ftp</a>, <a href="">vazio</a>, '
        '<a href="http://[bad">partido</a> <a href="https://loopos.example/items/1">dup</a></p>'
    )
    msg = parse_reply_html(html, "")
    assert msg.links == (
        Link("a submissão", "https://loopos.example/items/1"),
        Link("tg", "tg://resolve?domain=x"),
        Link("email", "mailto:a@b.pt"),
    )
    assert msg.text.startswith("Vê a submissão, isto, tg")


def test_link_without_label_uses_url() -> None:
    msg = parse_reply_html('<a href="https://x.example/"></a>', "")
    assert msg.links == (Link("https://x.example/", "https://x.example/"),)


def test_readable_text_blocks_lists_breaks_and_entities() -> None:
    html = (
        "<h3>Resumo</h3><ul><li><b>Título:</b> Apple iPhone 12</li><li>Preço: 275&nbsp;€</li>"
        "</ul><p>linha 1<br>linha 2</p><script>alert(1)</script><style>p{}</style>"
        "<!-- comentário --><p>&lt;ok&gt; &amp; fim</p>"
    )
    msg = parse_reply_html(html, "")
    assert msg.text == (
        "Resumo\n\n• Título: Apple iPhone 12\n• Preço: 275 €\n\nlinha 1\nlinha 2\n\n<ok> & fim"
    )


@pytest.mark.parametrize(
    "junk",
    [
        "<div><p>sem fecho <b>negrito <button>A</button",
        "<<<>>>&&<p",
        "<button><button>X</button>",
        "</div></p>texto solto<br/>",
        "<a href>sem url</a><button class=>",
        "\x00\x01<p>\ud800</p>",
        "<" * 5000,
    ],
)
def test_junk_markup_never_raises(junk: str) -> None:
    msg = parse_reply_html(junk, "fallback")
    assert isinstance(msg.text, str)
    assert msg.html == junk
    for button in msg.buttons:
        assert button.payload and "<" not in button.payload


def test_unclosed_button_label_has_no_tag_debris() -> None:
    msg = parse_reply_html("<p>Escolhe</p><button>128 GB</button", "")
    assert msg.buttons == (Button("128 GB", payload="128 GB"),)
    assert msg.text == "Escolhe"
