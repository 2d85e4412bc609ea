"""Issue 11, defect 1: a LoopOS message's ``text`` and then its ``html``, through the real
client against the emulator answering with html that does not repeat the text."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from backend_contract import collect, inbound, key

from chatbridge.core.backends.loopos import LoopOSBackend, LoopOSSettings
from chatbridge.core.richtext import ListBlock, Paragraph, Span
from chatbridge.core.types import Final
from chatbridge.emulators.loopos import LoopOSEmulator


@pytest.fixture
async def backend(loopos: LoopOSEmulator) -> AsyncIterator[LoopOSBackend]:
    settings = LoopOSSettings.model_validate(
        {
            "base_url": loopos.url,
            "core_base_url": "https://core.example/",
            "submission_base_url": "https://submission.example/",
            "timeout": 5.0,
        }
    )
    b = LoopOSBackend(settings, name="sellers-ai")
    try:
        yield b
    finally:
        await b.aclose()


async def test_text_then_html_when_the_html_has_content_of_its_own(
    loopos: LoopOSEmulator, backend: LoopOSBackend
) -> None:
    loopos.html_apart = True
    ref = await backend.open(key(), "PT-PT")
    events = await collect(backend, ref, inbound("Quero vender um iPhone 12"))
    final = events[-1]
    assert isinstance(final, Final)
    assert len(loopos.requests_to("/chat")) == 1
    # the answer's message with html (its question, with buttons)
    message = next(m for m in final.messages if m.buttons)
    # what the server said in ``text`` comes first, whole
    sent_text = message.body[0]
    assert isinstance(sent_text, Paragraph) and "?" in sent_text.spans[0].text
    # then the html's own content, formatted, not dropped
    assert Paragraph((Span("Passo 1", bold=True),)) in message.body
    assert ListBlock.__name__ in {type(b).__name__ for b in message.body}
    assert message.text.index(sent_text.spans[0].text) < message.text.index("Passo 1")
    assert "LoopOS #1" in message.text
    # the buttons are buttons, never part of the text
    assert message.buttons and all(b.label not in message.text for b in message.buttons)


async def test_html_copying_the_text_shows_it_once(
    loopos: LoopOSEmulator, backend: LoopOSBackend
) -> None:
    ref = await backend.open(key(), "PT-PT")
    events = await collect(backend, ref, inbound("Quero vender um iPhone 12"))
    final = events[-1]
    assert isinstance(final, Final)
    message = next(m for m in final.messages if m.buttons)
    assert "Passo" not in message.text
    first_words = message.text.split("\n")[0][:20]
    assert message.text.count(first_words) == 1
