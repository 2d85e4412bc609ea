"""Issue 11, defect 1: a LoopOS message's ``text`` and then its ``html``, through the real
client against the strict emulator answering with html that does not repeat the text
(``LoopOSStrict(html_apart=True)``), and against the kind one whose html copies the text."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from backend_contract import TINY_PNG, collect, inbound, key

from chatbridge.core.backends.loopos import LoopOSBackend, LoopOSSettings
from chatbridge.core.richtext import ListBlock, Paragraph, Span
from chatbridge.core.types import Final, Image, ReplyMessage
from chatbridge.emulators.loopos import LoopOSEmulator, LoopOSStrict, start_loopos_emulator

SUBMISSION = "https://submission.example/"
# the submission workflow up to its summary (a list of the item's details and a link)
SCRIPT = ["Quero vender um iPhone 12", "128 GB", "Bom", "Não"]


def client(url: str) -> LoopOSBackend:
    settings = LoopOSSettings.from_dict(
        {
            "base_url": url,
            "core_base_url": "https://core.example/",
            "submission_base_url": SUBMISSION,
            "timeout": 5.0,
        }
    )
    return LoopOSBackend(settings, name="sellers-ai")


async def summary_through(emulator: LoopOSEmulator) -> ReplyMessage:
    backend = client(emulator.url)
    try:
        ref = await backend.open(key(), "PT-PT")
        for said in SCRIPT:
            await collect(backend, ref, inbound(said, language="PT-PT"))
        photo = (Image(TINY_PNG, "image/png"),)
        events = await collect(backend, ref, inbound("", images=photo, language="PT-PT"))
    finally:
        await backend.aclose()
    final = events[-1]
    assert isinstance(final, Final)
    return final.messages[-1]


@pytest.fixture
async def html_apart() -> AsyncIterator[LoopOSEmulator]:
    emulator = await start_loopos_emulator(strict=LoopOSStrict(html_apart=True))
    try:
        yield emulator
    finally:
        await emulator.stop()


async def test_text_then_the_structure_the_html_adds(html_apart: LoopOSEmulator) -> None:
    summary = await summary_through(html_apart)
    served = html_apart.requests_to("/chat")
    assert len(served) == len(SCRIPT) + 1
    # the server's text (only the lead line now; the html does not repeat it) comes first
    assert summary.body[0] == Paragraph((Span("Submissão concluída! Resumo:"),))
    # then the html's own structure, formatted: a list with bold keys, and the link
    details = summary.body[1]
    assert isinstance(details, ListBlock)
    assert details.items[0].spans[0] == Span("Título:", bold=True)
    assert "Apple iPhone 12 128 GB" in summary.text
    assert summary.links and summary.links[0].url.startswith(SUBMISSION)
    assert summary.text.index("Resumo:") < summary.text.index("Título:")
    assert summary.text.count("Submissão concluída") == 1


async def test_html_copying_the_text_shows_it_once(loopos: LoopOSEmulator) -> None:
    summary = await summary_through(loopos)  # the kind emulator: html repeats the text
    assert summary.text.count("Submissão concluída") == 1
    assert summary.text.count("Apple iPhone 12 128 GB") == 1
    # shown in the html's form, in the text's place: the lead line, then the bold list
    assert summary.body[0] == Paragraph((Span("Submissão concluída! Resumo:"),))
    assert isinstance(summary.body[1], ListBlock)


async def test_a_question_whose_html_holds_only_buttons_keeps_its_text(
    html_apart: LoopOSEmulator,
) -> None:
    backend = client(html_apart.url)
    try:
        ref = await backend.open(key(), "PT-PT")
        events = await collect(backend, ref, inbound(SCRIPT[0], language="PT-PT"))
    finally:
        await backend.aclose()
    final = events[-1]
    assert isinstance(final, Final)
    question = next(m for m in final.messages if m.buttons)
    assert question.text == "Qual é a capacidade de armazenamento?"
    assert [b.label for b in question.buttons] == ["64 GB", "128 GB", "256 GB"]
