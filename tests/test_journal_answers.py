"""Answers in the journal keep their neutral rich text and button ids; entries written before
the rich text (an ``html``, buttons without ids) are still read."""

from __future__ import annotations

import json

from chatbridge.core.html import parse_reply_html
from chatbridge.core.richtext import Paragraph, Span
from chatbridge.core.store._journal_codec import FORMAT, dump_answer, load_answer
from chatbridge.core.types import Button


def test_rich_text_and_button_ids_round_trip() -> None:
    message = parse_reply_html("<p>Olá <b>Ana</b></p><button>Sim</button>", "")
    named = type(message)(
        message.text,
        (Button("Sim", payload="Sim", id="k3Y_9"),),
        message.links,
        message.body,
    )
    (back,) = load_answer(dump_answer([named]))
    assert back == named
    assert back.body == (Paragraph((Span("Olá "), Span("Ana", bold=True))),)


def test_an_answer_written_before_the_rich_text_is_read_as_its_text() -> None:
    old = {
        "v": FORMAT,
        "messages": [
            {"text": "Olá Ana", "buttons": [["Sim", "Sim", None]], "html": "<p>Olá <b>Ana</b></p>"}
        ],
    }
    (back,) = load_answer(json.dumps(old))
    assert back.text == "Olá Ana" and back.body == (Paragraph((Span("Olá Ana"),)),)
    assert back.buttons == (Button("Sim", payload="Sim"),)
