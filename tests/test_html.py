"""chatbridge.core.html: backend HTML -> neutral rich text, buttons, links (DeepChat semantics)."""

from __future__ import annotations

import pytest

from chatbridge.core.html import parse_reply_html
from chatbridge.core.richtext import (
    CodeBlock,
    ListBlock,
    ListItem,
    Paragraph,
    Span,
    from_json,
    to_json,
)
from chatbridge.core.types import Button, Link


def test_no_html_uses_text() -> None:
    msg = parse_reply_html(None, "  Olá!  ")
    assert msg.text == "Olá!"
    assert msg.buttons == () and msg.links == ()
    assert msg.body == (Paragraph((Span("Olá!"),)),)
    assert parse_reply_html("   ", "x").text == "x"


def test_buttons_from_button_elements_and_deep_chat_classes() -> None:
    html = (
        "<p>Qual é a <b>capacidade</b>?</p>"
        '<div><button class="deep-chat-button">64 GB</button>'
        "<button>128 GB</button>"
        '<span class="deep-chat-suggestion-button"> 256   GB </span></div>'
    )
    msg = parse_reply_html(html, "")
    assert msg.buttons == (
        Button("64 GB", payload="64 GB"),
        Button("128 GB", payload="128 GB"),
        Button("256 GB", payload="256 GB"),
    )
    assert msg.text == "Qual é a capacidade?"
    assert "GB" not in msg.text  # labels are removed from the body
    assert msg.body == (
        Paragraph((Span("Qual é a "), Span("capacidade", bold=True), Span("?"))),
    )  # formatting kept as neutral markup, buttons taken out


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
    for button in msg.buttons:
        assert button.payload and "<" not in button.payload


def test_unclosed_button_label_has_no_tag_debris() -> None:
    msg = parse_reply_html("<p>Escolhe</p><button>128 GB</button", "")
    assert msg.buttons == (Button("128 GB", payload="128 GB"),)
    assert msg.text == "Escolhe"


# --- issue 11: the text and then the HTML (DeepChat shows both) ------------------------------


def test_text_then_html_when_the_html_adds_content() -> None:
    # the document's own example: {"text": "Ótimo! Vou ajudar-te …", "html": "<div>...</div>"}
    html = "<div><p>Preço sugerido: <b>275 €</b></p><ul><li>Ecrã</li><li>Bateria</li></ul></div>"
    msg = parse_reply_html(html, "Ótimo! Vou ajudar-te a vender o teu iPhone.")
    assert msg.text == (
        "Ótimo! Vou ajudar-te a vender o teu iPhone.\n\nPreço sugerido: 275 €\n\n• Ecrã\n• Bateria"
    )
    assert msg.body[1] == Paragraph((Span("Preço sugerido: "), Span("275 €", bold=True)))
    assert msg.body[2] == ListBlock((ListItem((Span("Ecrã"),)), ListItem((Span("Bateria"),))))


def test_html_repeating_the_text_is_shown_once_with_its_formatting() -> None:
    same = parse_reply_html("<p>Olá, <b>Ana</b>!</p><button>Sim</button>", "Olá, Ana!")
    assert same.text == "Olá, Ana!"
    assert same.body == (Paragraph((Span("Olá, "), Span("Ana", bold=True), Span("!"))),)
    # the html repeats one paragraph of the text and adds another: the repeat goes, in the
    # text's place and with the html's formatting, the addition follows
    partly = parse_reply_html(
        "<p>Tem <i>riscos</i>?</p><p>Escolhe abaixo.</p>", "Olá!\n\nTem riscos?"
    )
    assert partly.text == "Olá!\n\nTem riscos?\n\nEscolhe abaixo."
    assert partly.body[1] == Paragraph((Span("Tem "), Span("riscos", italic=True), Span("?")))
    # html blocks that together say a text paragraph take its place (in the html's form)
    inside = parse_reply_html("<p>Escolhe</p><p>um modelo</p><p>novo</p>", "Escolhe um modelo:")
    assert inside.text == "Escolhe\n\num modelo\n\nnovo"
    # an html block whose words are all somewhere in the text adds nothing
    within = parse_reply_html("<p>um modelo</p>", "Escolhe um modelo novo.\n\nOu não.")
    assert within.text == "Escolhe um modelo novo.\n\nOu não."


def test_emoji_only_html_is_kept() -> None:
    assert parse_reply_html("<p>👍</p>", "Feito.").text == "Feito.\n\n👍"


def test_neutral_markup_lists_code_and_links() -> None:
    html = (
        "<ol><li>um<ul><li>sub</li></ul></li><li>dois</li></ol>"
        "<pre>x = 1\n    y = 2</pre>"
        '<p><a href="https://l.example/a"><b>ver</b></a> <code>cod</code></p>'
        "<table><tr><td>a</td><td>b</td></tr><tr><td>c</td></tr></table>"
    )
    body = parse_reply_html(html, "").body
    assert body[0] == ListBlock(
        (
            ListItem((Span("um"),), 0, 1),
            ListItem((Span("sub"),), 1, None),
            ListItem((Span("dois"),), 0, 2),
        )
    )
    assert body[1] == CodeBlock("x = 1\n    y = 2")
    assert body[2] == Paragraph(
        (Span("ver", bold=True, url="https://l.example/a"), Span(" "), Span("cod", code=True))
    )
    assert body[3] == Paragraph((Span("a b\nc"),))
    assert from_json(to_json(body)) == body


def test_links_never_carry_unsafe_urls_into_the_body() -> None:
    body = parse_reply_html('<p><a href="javascript:alert(1)">isto</a></p>', "").body
    assert body == (Paragraph((Span("isto"),)),)


def test_html_blocks_that_together_repeat_a_text_paragraph_replace_it() -> None:
    # the LoopOS emulator's summary: the text has the lines, the html has them as a list
    text = "Resumo:\nTítulo: iPhone\nPreço: 275 €"
    html = (
        "<p>Resumo:</p><ul><li><b>Título:</b> iPhone</li><li><b>Preço:</b> 275 €</li></ul>"
        '<p><a href="https://s.example/1">Ver</a></p>'
    )
    msg = parse_reply_html(html, text)
    assert msg.text == "Resumo:\n\n• Título: iPhone\n• Preço: 275 €\n\nVer"
    assert isinstance(msg.body[1], ListBlock)
