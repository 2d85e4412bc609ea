"""One contract for every Surface: console, Telegram and Discord show the same answer.

Each platform runs a whole turn (adapter, engine, store) against its fake: a backend answers
with the neutral rich text core makes of a LoopOS-style HTML answer, and what the user sees
is read back in the platform's own terms (Telegram's text and entities, Discord's Markdown
and components, the terminal's lines). The same assertions then hold for all three: the
words, the formatting where the platform shows formatting, links, and buttons as buttons
(never as text). A surface's ``fail`` raises nothing but :class:`DeliveryRefused`, on any
platform: a chat that is gone is refused for good (the journal records that), anything else
is logged, since it is the last thing that can reach the user.
"""

from __future__ import annotations

import asyncio
import io
import random
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from discord_harness import FAST_BUCKET, final_message, start_bot, stop_bot

from chatbridge.adapters.console import ConsoleAdapter, ConsoleSurface
from chatbridge.adapters.discord_adapter.render import render_markdown
from chatbridge.adapters.telegram.html import render_body
from chatbridge.adapters.telegram.surface import Target, TelegramReply
from chatbridge.core.engine import Engine
from chatbridge.core.errors import DeliveryRefused
from chatbridge.core.html import parse_reply_html
from chatbridge.core.locales import en
from chatbridge.core.richtext import (
    PLAIN,
    CodeBlock,
    ListBlock,
    ListItem,
    Paragraph,
    RichText,
    Span,
    plain_text,
    render,
)
from chatbridge.core.store.memory import MemoryStore
from chatbridge.core.types import (
    ConversationKey,
    Event,
    Final,
    Inbound,
    Notice,
    NoticeReason,
    ReplyMessage,
    Token,
)
from tests.fakes.discord_api import FakeDiscord
from tests.fakes.telegram_harness import Harness
from tests.fakes.telegram_html import parse_html

TEXT = "Ótimo! Vou ajudar-te a vender o teu telemóvel."
HTML = (
    "<div><p>O preço sugerido é <b>275 €</b>, <i>sem</i> carregador.</p>"
    "<ul><li>Modelo: <code>A2403</code></li><li>Estado: bom</li></ul>"
    '<p>Vê a <a href="https://loopos.example/items/42">submissão</a>.</p>'
    '<div class="deep-chat-button">Aceitar preço</div>'
    '<button class="deep-chat-button deep-chat-suggestion-button">Mudar preço</button></div>'
)
ANSWER = parse_reply_html(HTML, TEXT)
WORDS = ["Ótimo", "275 €", "sem", "carregador", "A2403", "Estado: bom", "submissão"]


@dataclass
class Shown:
    """What one platform showed for the answer."""

    text: str
    buttons: list[str]
    links: set[str]
    bold: set[str] | None = None  # None: the platform shows no formatting
    italic: set[str] | None = None
    code: set[str] | None = None
    notices: list[str] = field(default_factory=list)  # shown apart from the answer
    messages: int = 1  # how many messages carried the answer and the notices
    extra: dict[str, Any] = field(default_factory=dict)


class AnswerBackend:
    name = "answer"

    def __init__(
        self, answer: ReplyMessage, stream: bool = False, notice: NoticeReason | None = None
    ) -> None:
        self.answer = answer
        self.stream = stream
        self.notice = notice

    async def open(self, key: ConversationKey, language: str | None) -> str:
        return "s1"

    async def turn(self, session_ref: str, inbound: Inbound) -> AsyncIterator[Event]:
        if self.notice is not None:
            yield Notice(self.notice)
        if self.stream:  # the answer's words as tokens first, as a streaming backend sends
            for word in re.findall(r"\S+\s*", self.answer.text):
                yield Token(word)
                await asyncio.sleep(0.01)
        yield Final((self.answer,))

    async def close(self, session_ref: str) -> None:
        return None

    async def aclose(self) -> None:
        return None


# --- each platform: run one turn, read back what the user sees ------------------------------


async def console_turn(
    answer: ReplyMessage, stream: bool = False, notice: NoticeReason | None = None
) -> Shown:
    store = await MemoryStore.open()
    engine = Engine(
        bot="c", backend=AnswerBackend(answer, stream, notice), backend_name="answer", store=store
    )
    out = io.StringIO()
    adapter = ConsoleAdapter(name="c", engine=engine, stdin=io.StringIO("hi\n"), stdout=out)
    await asyncio.wait_for(adapter.run(), 10)
    await engine.aclose(1.0)
    await store.close()
    lines = out.getvalue().split("\n")
    body = "\n".join(
        line.removeprefix("assistant> ")
        for line in lines
        if not line.startswith(("you> ", "  [", "  (link)", "(i) "))
    )
    notices = [line.removeprefix("(i) ") for line in lines if line.startswith("(i) ")]
    buttons = [m[1] for line in lines if (m := re.match(r"  \[\d+\] (.*)", line))]
    links = {m[1] for line in lines if (m := re.match(r"  \(link\) .*: (\S+)", line))}
    answers = sum(1 for line in lines if line.startswith("assistant> "))
    return Shown(body, buttons, links, notices=notices, messages=answers + len(notices))


async def telegram_turn(
    answer: ReplyMessage, stream: bool = False, notice: NoticeReason | None = None
) -> Shown:
    async with Harness(AnswerBackend(answer, stream, notice)) as h:
        user = h.user()
        chat = h.fb.private_chat(user)
        await h.fb.push_text(chat, user, "hi")
        await h.reply_in(chat["id"], keyboard=bool(answer.buttons))
        await h.settled(turns=1)
        messages = h.fb.chat_messages(chat["id"])
    message = messages[-1]
    text: str = message["text"]

    def spans(*kinds: str) -> set[str]:
        return {
            text[e["offset"] : e["offset"] + e["length"]]
            for e in message.get("entities", [])
            if e["type"] in kinds
        }

    markup = message.get("reply_markup") or {"inline_keyboard": []}
    keyboard = [b for row in markup["inline_keyboard"] for b in row]
    links = {e["url"] for e in message.get("entities", []) if e["type"] == "text_link"}
    links |= {b["url"] for b in keyboard if "url" in b}
    return Shown(
        text,
        [b["text"] for b in keyboard if "callback_data" in b],
        links,
        bold=spans("bold"),
        italic=spans("italic"),
        code=spans("code", "pre"),
        notices=[m["text"] for m in messages[:-1]],
        messages=len(messages),
        extra={"callback_data": [b["callback_data"] for b in keyboard if "callback_data" in b]},
    )


_MD_LINK = re.compile(r"(?<!\\)\[((?:\\.|[^\]\\])+)\]\(([^)\s]+)\)")


def read_markdown(content: str) -> tuple[str, set[str], set[str], set[str], set[str]]:
    """Discord's Markdown as (visible text, bold, italic, code, link urls), the way Discord
    reads it: a backslash makes the next character literal; ``**``, ``*`` and backticks
    toggle bold, italics and code."""
    links = {m[2] for m in _MD_LINK.finditer(content)}
    content = _MD_LINK.sub(r"\1", content)
    text: list[str] = []
    spans: dict[str, set[str]] = {"bold": set(), "italic": set(), "code": set()}
    open_at: dict[str, int] = {}
    i = 0
    while i < len(content):
        if content[i] == "\\" and i + 1 < len(content):
            text.append(content[i + 1])
            i += 2
            continue
        mark = "code" if content[i] == "`" else None
        if mark is None and content.startswith("**", i) and "code" not in open_at:
            mark = "bold"
        elif mark is None and content[i] == "*" and "code" not in open_at:
            mark = "italic"
        if mark is None:
            text.append(content[i])
            i += 1
            continue
        i += 2 if mark == "bold" else 1
        if mark in open_at:
            spans[mark].add("".join(text[open_at.pop(mark) :]))
        else:
            open_at[mark] = len(text)
    return "".join(text), spans["bold"], spans["italic"], spans["code"], links


async def discord_turn(
    answer: ReplyMessage, stream: bool = False, notice: NoticeReason | None = None
) -> Shown:
    async with FakeDiscord(message_bucket=FAST_BUCKET) as fake:
        store = await MemoryStore.open()
        adapter, engine = await start_bot(fake, AnswerBackend(answer, stream, notice), store)
        try:
            user = fake.add_user("olga")
            await fake.user_message(user, "hi", mention=True)
            if answer.buttons:
                message = await final_message(fake, fake.channel_id)
            else:
                await fake.wait_until(lambda: bool(fake.bot_messages(fake.channel_id)))
                while engine.active_turns:
                    await asyncio.sleep(0.02)
                message = fake.bot_messages(fake.channel_id)[-1]
            messages = fake.bot_messages(fake.channel_id)
        finally:
            await stop_bot(adapter, engine)
            await store.close()
    text, bold, italic, code, links = read_markdown(message["content"])
    components = [c for row in message["components"] for c in row["components"]]
    links |= {c["url"] for c in components if "url" in c}
    return Shown(
        text,
        [c["label"] for c in components if "custom_id" in c],
        links,
        bold=bold,
        italic=italic,
        code=code,
        notices=[read_markdown(m["content"])[0] for m in messages[:-1]],
        messages=len(messages),
        extra={"custom_ids": [c["custom_id"] for c in components if "custom_id" in c]},
    )


PLATFORMS: dict[str, Callable[..., Awaitable[Shown]]] = {
    "console": console_turn,
    "telegram": telegram_turn,
    "discord": discord_turn,
}


def _flat(text: str) -> str:
    """Words only: list markers and spacing differ by platform, the words do not."""
    text = re.sub(r"(?m)^\s*(?:[•\-]|\d+\.)\s+", "", text)
    return " ".join(text.split())


@pytest.mark.parametrize("platform", PLATFORMS)
async def test_every_platform_shows_the_same_answer(platform: str) -> None:
    shown = await PLATFORMS[platform](ANSWER, False)
    # the words: the text first, then what the html adds, nothing else
    assert _flat(shown.text) == _flat(ANSWER.text)
    for word in WORDS:
        assert word in shown.text
    assert shown.text.index("Ótimo") < shown.text.index("275 €")
    # buttons are buttons, in order, and never text; no backend markup leaks
    assert shown.buttons == ["Aceitar preço", "Mudar preço"]
    for leak in ("Aceitar", "Mudar", "deep-chat", "<", "&lt;", "&amp;"):
        assert leak not in shown.text
    assert "https://loopos.example/items/42" in shown.links
    if shown.bold is not None:  # the platform shows formatting: the same formatting
        assert shown.bold == {"275 €"}
        assert shown.italic == {"sem"}
        assert shown.code == {"A2403"}


@pytest.mark.parametrize("platform", PLATFORMS)
async def test_plain_text_answers_are_shown_verbatim(platform: str) -> None:
    answer = ReplyMessage("Preço: 5 * 3 < 20 & `sem` markup_de_loja **não**")
    shown = await PLATFORMS[platform](answer, False)
    assert shown.text.strip() == answer.text
    assert shown.buttons == [] and not shown.bold and not shown.code


@pytest.mark.parametrize("platform", PLATFORMS)
async def test_a_streamed_answer_ends_as_the_final_answer_shown_once(platform: str) -> None:
    shown = await PLATFORMS[platform](ANSWER, True)
    assert _flat(shown.text) == _flat(ANSWER.text)  # the stream became the answer, once
    assert shown.messages == 1
    assert shown.buttons == ["Aceitar preço", "Mudar preço"]
    if shown.bold is not None:
        assert shown.bold == {"275 €"}


@pytest.mark.parametrize("platform", PLATFORMS)
async def test_a_notice_is_shown_apart_from_the_answer(platform: str) -> None:
    notice = en.TEXTS[NoticeReason.PHOTOS_DROPPED]  # what the backend's reason reads as
    shown = await PLATFORMS[platform](ANSWER, True, NoticeReason.PHOTOS_DROPPED)
    assert shown.notices == [notice]
    assert notice not in shown.text
    assert _flat(shown.text) == _flat(ANSWER.text)
    assert shown.messages == 2


# --- fail(): one behaviour everywhere ---------------------------------------------------------


class _ClosedStream(io.StringIO):
    def write(self, text: str) -> int:
        raise OSError("stdout is gone")


@pytest.mark.parametrize("platform", ["console", "telegram", "discord"])
async def test_fail_on_a_gone_chat_is_refused_for_good_and_nothing_else(platform: str) -> None:
    if platform == "console":
        await ConsoleSurface(_ClosedStream()).fail("The assistant is unavailable.")
        return
    if platform == "telegram":
        async with Harness(AnswerBackend(ANSWER)) as h:
            assert h.adapter._ops is not None
            reply = TelegramReply(h.adapter._ops, Target(chat_id=424242), interval=0.25,
                                  use_drafts=False, choose_hint="Choose:")  # fmt: skip
            with pytest.raises(DeliveryRefused):  # the journal records it as refused
                await asyncio.wait_for(reply.fail("The assistant is unavailable."), 10)
            sent = h.fake.calls_of("sendMessage", 424242)
            assert sent and not any(c.ok for c in sent)  # it was tried, and refused
        return
    async with FakeDiscord(message_bucket=FAST_BUCKET) as fake:
        store = await MemoryStore.open()
        adapter, engine = await start_bot(fake, AnswerBackend(ANSWER), store)
        try:
            assert adapter.client is not None
            gone = adapter.client.get_partial_messageable(4242424242)
            surface = adapter._surface(gone, user_id=1)
            with pytest.raises(DeliveryRefused):  # the journal records it as refused
                await asyncio.wait_for(surface.fail("The assistant is unavailable."), 10)
            assert fake.find_calls("POST", "/channels/4242424242/messages")  # tried, refused
        finally:
            await stop_bot(adapter, engine)
            await store.close()


# --- the renderers alone, on random rich text -------------------------------------------------

_PIECES = ["word", "ünï", "🙂", "a*b", "x_y", "`tick`", "<tag>", "&amp;", "[br]", "~~s~~", " "]


def _random_body(rng: random.Random) -> RichText:
    def spans() -> tuple[Span, ...]:
        out = []
        for _ in range(rng.randint(1, 5)):
            text = " ".join(rng.choice(_PIECES) for _ in range(rng.randint(1, 4)))
            url = rng.choice([None, None, "https://x.example/p?a=1&b=(2)"])
            out.append(Span(text, rng.random() < 0.3, rng.random() < 0.3, rng.random() < 0.2, url))
        return tuple(out)

    blocks: list[Paragraph | ListBlock | CodeBlock] = []
    for _ in range(rng.randint(1, 4)):
        kind = rng.random()
        if kind < 0.5:
            blocks.append(Paragraph(spans()))
        elif kind < 0.8:
            items = [ListItem(spans(), rng.randint(0, 1), rng.choice([None, 1])) for _ in "ab"]
            blocks.append(ListBlock(tuple(items)))
        else:
            blocks.append(CodeBlock("x = 1 < 2 && `y`\n    z = '**'"))
    return tuple(blocks)


def _words(text: str) -> list[str]:
    text = re.sub(r"(?m)^\s*(?:[•\-]|\d+\.)\s+", "", text)
    return re.sub(r"[*`\u02cb\u200b]", "", text).split()


@pytest.mark.parametrize("seed", range(40))
def test_renderers_keep_every_word_and_stay_valid(seed: int) -> None:
    body = _random_body(random.Random(seed))
    plain = plain_text(body)
    # Telegram: the Bot API's strict parser takes it, and shows the same text
    shown, _ = parse_html(render_body(body))
    assert _words(shown) == _words(plain)
    # Discord: read as Discord reads Markdown, the same words
    visible, *_ = read_markdown(render_markdown(body))
    assert _words(visible) == _words(plain)
    # the console shows the plain reading
    assert render(body, PLAIN) == plain
