"""A Telegram bot wired end to end for tests: fake Bot API + real PTB + engine + a backend."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import msgspec

from chatbridge.adapters.telegram import TelegramAdapter, TelegramOptions
from chatbridge.core.access import AccessGate
from chatbridge.core.engine import Engine
from chatbridge.core.html import parse_reply_html
from chatbridge.core.protocols import Backend, Journal
from chatbridge.core.store.memory import MemoryStore
from chatbridge.core.types import (
    Button,
    ConversationKey,
    Event,
    Final,
    Inbound,
    ReplyMessage,
    Token,
)
from tests.fakes.telegram_api import Call, FakeTelegram
from tests.fakes.telegram_updates import FakeBot

TOKEN = "777001:AAH-secret-test-token-0123456789abcdef"
BOT_USERNAME = "seller_bot"
ADMIN = 9001


class ScriptBackend:
    """A backend whose answers a test scripts: ``reply(inbound) -> events``."""

    name = "script"

    def __init__(
        self,
        reply: Callable[[Inbound], Sequence[Event]] | None = None,
        *,
        token_delay: float = 0.0,
        turn_delay: float = 0.0,
    ) -> None:
        self.reply = reply or echo
        self.token_delay = token_delay
        self.turn_delay = turn_delay
        self.inbounds: list[Inbound] = []
        self.opened: list[ConversationKey] = []
        self.first_token_at: dict[str, float] = {}
        self._refs = itertools.count(1)

    async def open(self, key: ConversationKey, language: str | None) -> str:
        self.opened.append(key)
        return f"s{next(self._refs)}"

    async def turn(self, session_ref: str, inbound: Inbound) -> AsyncIterator[Event]:
        self.inbounds.append(inbound)
        if self.turn_delay:
            await asyncio.sleep(self.turn_delay)
        for event in self.reply(inbound):
            if isinstance(event, Token):
                if self.token_delay:
                    await asyncio.sleep(self.token_delay)
                self.first_token_at.setdefault(
                    inbound.key.chat_id, asyncio.get_running_loop().time()
                )
            yield event

    async def close(self, session_ref: str) -> None:
        return None

    async def aclose(self) -> None:
        return None


def echo(inbound: Inbound) -> list[Event]:
    text = f"You said: {inbound.effective_text}"
    if inbound.images:
        text += f" (+{len(inbound.images)} photo)"
    words = text.split(" ")
    return [*(Token(w + " ") for w in words), Final((ReplyMessage(text),))]


def answer(
    text: str, buttons: Sequence[str] = (), html: str | None = None, tokens: int = 10
) -> Callable[[Inbound], list[Event]]:
    """Streams ``text`` in ``tokens`` pieces, then a Final with payload buttons."""

    def reply(inbound: Inbound) -> list[Event]:
        step = max(1, len(text) // tokens)
        pieces = [text[i : i + step] for i in range(0, len(text), step)]
        final = parse_reply_html(html, text) if html else ReplyMessage(text)
        final = dataclasses.replace(
            final, buttons=tuple(Button(b, payload=b.lower()) for b in buttons)
        )
        return [*(Token(p) for p in pieces), Final((final,))]

    return reply


class Harness:
    """Everything of one test bot; ``async with Harness(...) as h``."""

    def __init__(
        self,
        backend: Backend | None = None,
        *,
        fast: bool = True,
        fake_interval: float | None = None,
        fake_limits: dict[str, Any] | None = None,
        journal: Journal | None = None,
        access: AccessGate | None = None,
        **options: Any,
    ) -> None:
        self.journal = journal
        self.access = access
        self.backend = backend or ScriptBackend()
        interval = 0.25 if fast else 1.0
        self.fake = FakeTelegram(
            interval=interval if fake_interval is None else fake_interval, **(fake_limits or {})
        )
        self.interval = interval
        self.options_kw = options
        self.fb: FakeBot
        self.engine: Engine
        self.adapter: TelegramAdapter

    async def __aenter__(self) -> Harness:
        await self.fake.start()
        self.fb = self.fake.add_bot(TOKEN, BOT_USERNAME)
        store = await MemoryStore.open()
        self.store = store
        self.engine = Engine(
            bot="sellers",
            backend=self.backend,
            backend_name="test",
            store=store,
            journal=self.journal,
        )
        values: dict[str, Any] = {
            "api_base_url": f"{self.fake.url}/bot",
            "poll_timeout": 2,
            "album_wait": 0.3,
            **self.options_kw,
        }
        options = TelegramOptions.from_dict(values)
        if self.interval < 1.0:  # tests only: the model insists on >= 1 s for real chats
            # the bot paces each chat as the fake limits it: one message per ``interval``
            update: dict[str, Any] = {"stream_interval": self.interval}
            if "chat_rate" not in self.options_kw:
                update["chat_rate"] = 1 / self.interval
            options = msgspec.structs.replace(options, **update)
        self.adapter = TelegramAdapter(
            name="sellers",
            token=TOKEN,
            engine=self.engine,
            options=options,
            admins=frozenset({ADMIN}),
            access=self.access,
        )
        await self.adapter.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.adapter.stop()
        await self.engine.aclose(grace=1.0)
        await self.store.close()
        await self.fake.stop()

    def user(self, user_id: int = 100, name: str = "Ana") -> dict[str, Any]:
        return self.fb.make_user(user_id, name)

    async def reply_in(
        self,
        chat_id: int,
        *,
        since: int = 0,
        keyboard: bool | None = None,
        contains: str = "",
        timeout: float = 8.0,
    ) -> Call:
        """The next successful sendMessage in ``chat_id`` (optionally with a keyboard)."""

        def match(c: Call) -> bool:
            return (
                c.method == "sendMessage"
                and c.ok
                and c.chat_id == chat_id
                and contains in str(c.params.get("text", ""))
                and (keyboard is None or ("reply_markup" in c.params) == keyboard)
            )

        return await self.fake.wait_for(match, timeout=timeout, since=since)

    async def settled(self, turns: int = 0, timeout: float = 8.0) -> None:
        """Until ``turns`` turns have started and no turn runs or waits."""
        async with asyncio.timeout(timeout):
            while self.adapter.turns_started < turns:
                await asyncio.sleep(0.02)
            while self.engine.active_turns or self.engine.queued_turns or self.adapter._pending:
                await asyncio.sleep(0.02)


def callback_data(call: Call) -> list[str]:
    markup = call.params.get("reply_markup") or {}
    return [
        b["callback_data"]
        for row in markup.get("inline_keyboard", [])
        for b in row
        if "callback_data" in b
    ]


def labels(call: Call) -> list[str]:
    markup = call.params.get("reply_markup") or {}
    return [b["text"] for row in markup.get("inline_keyboard", []) for b in row]
