"""Helpers shared by the Discord tests (no tests here): a scripted backend, a bot on the fake."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from chatbridge.adapters.discord_adapter import DiscordAdapter, DiscordOptions
from chatbridge.adapters.discord_adapter.render import render_markdown
from chatbridge.core.engine import Engine
from chatbridge.core.html import parse_reply_html
from chatbridge.core.protocols import Journal, SessionStore
from chatbridge.core.types import (
    Button,
    ConversationKey,
    Event,
    Final,
    Inbound,
    Link,
    ReplyMessage,
    Token,
)
from tests.fakes.discord_api import FakeDiscord, RestCall

# Discord allows 5 message creates/edits per 5 s per channel; tests stream 20 edits a second to
# stay fast, so their fake keeps the same bucket at that speed (discord.py still has to honour
# its headers). The bench uses Discord's own numbers.
FAST_BUCKET = (5, 0.25)

LONG_PAYLOAD = "I would like the blue one, size 42, delivered to the store in Porto " * 3


def default_reply(inbound: Inbound) -> ReplyMessage:
    return ReplyMessage(
        text=f"You said: {inbound.effective_text}",
        buttons=(
            Button("Blue", payload=LONG_PAYLOAD),
            Button("Red", payload="red please"),
        ),
        links=(Link("Shop", "https://shop.example/item/1"),),
    )


def markdown_of(html: str) -> str:
    """What the bridge shows on Discord for a backend's HTML answer."""
    return render_markdown(parse_reply_html(html, "").body)


@dataclass
class ScriptBackend:
    """A Backend that streams its reply word by word, then sends a Final (with buttons)."""

    name: str = "script"
    reply: Callable[[Inbound], ReplyMessage] = default_reply
    token_delay: float = 0.0
    turns: list[tuple[str, Inbound]] = field(default_factory=list)
    opened: list[ConversationKey] = field(default_factory=list)
    languages: list[str | None] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    async def open(self, key: ConversationKey, language: str | None) -> str:
        self.opened.append(key)
        self.languages.append(language)
        return f"session-{next(self._ids)}"

    async def turn(self, session_ref: str, inbound: Inbound) -> AsyncIterator[Event]:
        self.turns.append((session_ref, inbound))
        message = self.reply(inbound)
        words = message.text.split(" ")
        for i, word in enumerate(words):
            if self.token_delay:
                await asyncio.sleep(self.token_delay)
            yield Token(word if i == 0 else " " + word)
        yield Final((message,))

    async def close(self, session_ref: str) -> None:
        self.closed.append(session_ref)

    async def aclose(self) -> None:
        return None


def options(fake: FakeDiscord, **overrides: object) -> DiscordOptions:
    values: dict[str, object] = {
        "api_base_url": fake.api_base_url,
        "gateway_url": fake.gateway_url,
        "guild_ready_timeout": 0.05,
        "stream_interval": 0.05,
    }
    values.update(overrides)
    return DiscordOptions.from_dict(values)


async def start_bot(
    fake: FakeDiscord,
    backend: ScriptBackend | object,
    store: SessionStore,
    *,
    admins: Sequence[int] = (),
    name: str = "shop",
    journal: Journal | None = None,
    **opts: object,
) -> tuple[DiscordAdapter, Engine]:
    engine = Engine(
        bot=name,
        backend=backend,  # type: ignore[arg-type]
        backend_name=getattr(backend, "name", "backend"),
        store=store,
        journal=journal,
    )
    adapter = DiscordAdapter(
        name=name,
        token=fake.token,
        engine=engine,
        options=options(fake, **opts),
        admins=frozenset(admins),
    )
    await adapter.start()
    await adapter.wait_ready(5)
    return adapter, engine


async def stop_bot(adapter: DiscordAdapter, engine: Engine) -> None:
    await adapter.stop()
    await engine.aclose(1.0)


def is_ok_post(channel_id: int) -> Callable[[RestCall], bool]:
    return lambda c: c.status == 200 and c.path == f"/channels/{channel_id}/messages"


async def final_message(fake: FakeDiscord, channel_id: int, timeout: float = 5.0) -> dict[str, Any]:
    """The bot's last message in the channel once it carries components (the turn's end)."""

    def done() -> bool:
        msgs = fake.bot_messages(channel_id)
        return bool(msgs and msgs[-1]["components"])

    await fake.wait_until(done, timeout)
    return fake.bot_messages(channel_id)[-1]
